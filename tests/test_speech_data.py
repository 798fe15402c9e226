"""Speech data: vocabulary, features, SpecAugment, bucketing, the espeak-ng corpus and the
LibriSpeech loader on five real LibriVox utterances."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hwnas.data import build_datamodule
from hwnas.data.speech import BucketBatchSampler, CharVocabulary, log_mel, spec_augment
from hwnas.data.spoken_synth import SpokenSynthDataModule, plan_corpus

LIBRI = Path(__file__).parent / "fixtures" / "librispeech"
TINY = dict(train_size=12, val_size=4, test_size=4, batch_size=4, eval_batch_size=4, n_mels=16)


def test_vocabulary_round_trip_and_normalisation():
    vocab = CharVocabulary()
    assert len(vocab) == 29  # 28 characters + blank
    assert vocab.normalize("  Hello,  WORLD's 42!\n") == "hello world's"
    ids = vocab.encode("it's a cat")
    assert 0 not in ids and vocab.decode(ids) == "it's a cat"
    assert vocab.decode([0, *ids, 0, 99]) == "it's a cat"  # blank and unknown ids skipped
    assert CharVocabulary.from_dict(vocab.to_dict()).chars == vocab.chars


def test_log_mel_shape_and_normalisation():
    wave = torch.randn(16000)
    feats = log_mel(wave, n_mels=40)
    assert feats.shape == (1 + 16000 // 160, 40)
    assert feats.mean(0).abs().max() < 1e-4
    assert torch.allclose(feats.std(0, unbiased=False), torch.ones(40), atol=1e-3)


def test_spec_augment_is_seeded_and_masks():
    feats = torch.randn(200, 80)
    a, b = spec_augment(feats, 7), spec_augment(feats, 7)
    assert torch.equal(a, b)
    assert (a == 0).sum() > 0 and not torch.equal(a, feats)
    assert not torch.equal(a, spec_augment(feats, 8))
    assert torch.equal(feats, feats.clone())  # the input is not modified


def test_bucket_sampler_is_seeded_per_epoch_and_covers_every_index():
    lengths = torch.randint(10, 500, (103,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = BucketBatchSampler(lengths, 8, seed=3, chunk_batches=4)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # same (seed, epoch), same batches
    assert list(sampler) != first  # the next pass is the next epoch
    idx = [i for batch in first for i, _ in batch]
    assert sorted(idx) == list(range(103)) and len(first) == len(sampler)
    # within a batch, lengths are close (bucketed): on average far tighter than a random
    # batch of 8 from lengths spread over 10..500 (about 380)
    spreads = [max(lengths[i] for i, _ in b) - min(lengths[i] for i, _ in b) for b in first]
    assert sum(spreads) / len(spreads) < 200
    plain = list(BucketBatchSampler(lengths, 8, shuffle=False))
    assert [lengths[i] for b in plain for i in b] == sorted(lengths)


def test_corpus_plan_splits_sentences_and_voices():
    plan = plan_corpus(0, {"train": 60, "val": 10, "test": 10}, None, 3, 7, {"val": 3, "test": 4})
    by = {s: [u for u in plan if u["split"] == s] for s in ("train", "val", "test")}
    texts = {s: {u["text"] for u in us} for s, us in by.items()}
    voices = {s: {u["voice"] for u in us} for s, us in by.items()}
    assert not texts["train"] & (texts["val"] | texts["test"])
    assert not voices["train"] & (voices["val"] | voices["test"])
    assert not voices["val"] & voices["test"]
    assert plan == plan_corpus(0, {"train": 60, "val": 10, "test": 10}, None, 3, 7,
                               {"val": 3, "test": 4})  # fmt: skip
    assert plan != plan_corpus(1, {"train": 60, "val": 10, "test": 10}, None, 3, 7,
                               {"val": 3, "test": 4})  # fmt: skip


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    dm = SpokenSynthDataModule(str(root / "a"), **TINY)
    dm.setup()
    return root, dm


def test_spoken_synth_is_identical_for_the_same_seed(synth):
    root, dm = synth
    again = SpokenSynthDataModule(str(root / "b"), **TINY)
    again.setup()
    for split in ("train", "val", "test"):
        assert again.utterances(split) == dm.utterances(split)
        one, two = getattr(dm, f"data_{split}"), getattr(again, f"data_{split}")
        assert all(torch.equal(a, b) for a, b in zip(one.features, two.features, strict=True))
    texts = {s: {u["text"] for u in dm.utterances(s)} for s in ("train", "val", "test")}
    assert not texts["train"] & (texts["val"] | texts["test"])


def test_spoken_synth_batches(synth):
    _, dm = synth
    batch = next(iter(dm.train_dataloader()))
    b, t, f = batch["features"].shape
    assert f == 16 and batch["features"].dtype == torch.float32
    assert batch["feature_lengths"].max() == t and batch["tokens"].dtype == torch.long
    for row, n, i in zip(batch["tokens"], batch["token_lengths"], batch["index"]):
        assert dm.vocab.decode(row[:n].tolist()) == dm.utterances("train")[int(i)]["text"]
        assert (row[n:] == 0).all()
    assert 0.5 < dm.audio_seconds("test") / 4 < 5  # seconds per utterance
    with pytest.raises(ValueError, match="gaussian"):
        dm.proxy_batch(4, 0)


def test_spoken_synth_reads_its_cache_without_espeak(synth, monkeypatch):
    root, dm = synth
    monkeypatch.setattr("hwnas.data.spoken_synth.speak", lambda *a: pytest.fail("spoke again"))
    again = SpokenSynthDataModule(str(root / "a"), **TINY)
    again.setup()
    assert len(again.data_train) == 12


def test_spoken_synth_errors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="unknown option"):
        SpokenSynthDataModule(str(tmp_path), bogus=1)
    with pytest.raises(ValueError, match="max_words"):
        SpokenSynthDataModule(str(tmp_path), min_words=5, max_words=2)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="espeak-ng"):
        SpokenSynthDataModule(str(tmp_path), **TINY).setup()


def librispeech(**kw):
    return build_datamodule({
        "name": "librispeech", "data_dir": str(LIBRI), "train_split": "test-clean",
        "val_split": "test-clean", "test_split": "test-clean", "n_mels": 16, **kw,
    })  # fmt: skip


def test_librispeech_loader_on_real_utterances():
    dm = librispeech(eval_batch_size=5)
    dm.setup()
    assert len(dm.data_test) == 5
    texts = sorted(
        dm.vocab.decode(r[:n].tolist())
        for b in dm.test_dataloader()
        for r, n in zip(b["tokens"], b["token_lengths"])
    )
    assert "he was not an ill disposed young man" in texts
    assert all(t == t.lower() for t in texts)
    durations = dm.data_test.durations
    assert all(2.0 < d < 10.0 for d in durations)
    batch = next(iter(dm.test_dataloader()))
    assert batch["features"].shape[0] == 5 and batch["features"].shape[2] == 16
    assert batch["feature_lengths"].max() == batch["features"].shape[1]


def test_librispeech_missing_folder_names_it(tmp_path):
    dm = build_datamodule({"name": "librispeech", "data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="train-clean-100.*openslr"):
        dm.setup()
    with pytest.raises(ValueError, match="max_seconds"):
        librispeech(max_seconds=0)
