"""Speech data: vocabulary, features, SpecAugment, bucketing, the espeak-ng corpus and the
LibriSpeech loader on five real LibriVox utterances."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from hwnas.data import build_datamodule
from hwnas.domains.asr.data.dataset import BucketBatchSampler, SpeechDataset, collate
from hwnas.domains.asr.data.features import SPEC_AUGMENT, log_mel, spec_augment
from hwnas.domains.asr.data.spoken_synth import SpokenSynthDataModule, plan_corpus
from hwnas.domains.asr.data.vocab import CharVocabulary

LIBRI = Path(__file__).parent / "fixtures" / "librispeech"
CHAPTER = LIBRI / "LibriSpeech" / "test-clean" / "9001" / "1"
KEYS = {"features", "feature_lengths", "tokens", "token_lengths", "index"}
TINY = dict(train_size=12, val_size=4, test_size=4, batch_size=4, eval_batch_size=4, n_mels=16)


def test_vocabulary_round_trip_and_normalisation():
    vocab = CharVocabulary()
    assert len(vocab) == 29  # 28 characters + blank
    assert vocab.normalize("  Hello,  WORLD's 42!\n") == "hello world's"
    assert vocab.normalize("a\t-\tb") == "a b"
    ids = vocab.encode("it's a cat")
    assert 0 not in ids and vocab.decode(ids) == "it's a cat"
    assert vocab.decode([0, *ids, 0, 99]) == "it's a cat"  # blank and unknown ids skipped
    assert CharVocabulary.from_dict(vocab.to_dict()).chars == vocab.chars


def test_log_mel_shape_and_normalisation():
    for n in (16000, 16159, 480):
        assert log_mel(torch.randn(n)).shape == (1 + n // 160, 80)
    wave = torch.randn(16000)
    feats = log_mel(wave, n_mels=40)
    assert feats.shape == (1 + 16000 // 160, 40) and feats.dtype == torch.float32
    assert feats.mean(0).abs().max() < 1e-4
    assert torch.allclose(feats.std(0, unbiased=False), torch.ones(40), atol=1e-3)


def test_spec_augment_is_seeded_and_masks():
    feats = torch.randn(200, 80)
    a, b = spec_augment(feats, 7), spec_augment(feats, 7)
    assert torch.equal(a, b)
    assert (a == 0).sum() > 0 and not torch.equal(a, feats)
    assert not torch.equal(a, spec_augment(feats, 8))
    assert torch.equal(feats, feats.clone())  # the input is not modified
    masked_rows = (a == 0).all(1).sum()  # time masks: at most 2 x 5% of 200 frames
    assert masked_rows <= 20


def test_bucket_sampler_is_seeded_per_epoch_and_covers_every_index():
    lengths = torch.randint(10, 500, (103,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = BucketBatchSampler(lengths, 8, seed=3, chunk_batches=4)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # same (seed, epoch), same batches
    assert list(sampler) != first  # the next pass is the next epoch
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(i for b in second for i, _ in b) == list(range(103))
    idx = [i for batch in first for i, _ in batch]
    assert sorted(idx) == list(range(103)) and len(first) == len(sampler)
    # within a batch, lengths are close (bucketed): on average far tighter than a random
    # batch of 8 from lengths spread over 10..500 (about 380)
    spreads = [max(lengths[i] for i, _ in b) - min(lengths[i] for i, _ in b) for b in first]
    assert sum(spreads) / len(spreads) < 200
    plain = list(BucketBatchSampler(lengths, 8, shuffle=False))
    assert [lengths[i] for b in plain for i in b] == sorted(lengths)


def test_dataset_collates_padded_batches():
    feats = [torch.randn(5, 3), torch.randn(2, 3)]
    data = SpeechDataset(feats, [[1, 2, 3], []], augment=SPEC_AUGMENT)
    assert data.lengths == [5, 2] and data.durations_s == [0.04, 0.01]
    clean = collate(data.__getitems__([0, 1]))
    assert set(clean) == KEYS and clean["features"].shape == (2, 5, 3)
    assert torch.equal(clean["features"][1, :2], feats[1]) and (clean["features"][1, 2:] == 0).all()
    assert clean["tokens"].tolist() == [[1, 2, 3], [0, 0, 0]]
    assert clean["token_lengths"].tolist() == [3, 0] and clean["index"].tolist() == [0, 1]
    assert all(clean[k].dtype == torch.long for k in KEYS - {"features"})
    augmented = collate(data.__getitems__([(0, 5)]))["features"][0]
    assert torch.equal(augmented, spec_augment(feats[0], 5, **SPEC_AUGMENT))


def test_corpus_plan_splits_sentences_and_voices():
    plan = plan_corpus(0, {"train": 60, "val": 10, "test": 10}, None, 3, 7, {"val": 3, "test": 4})
    by = {s: [u for u in plan if u["split"] == s] for s in ("train", "val", "test")}
    texts = {s: {u["text"] for u in us} for s, us in by.items()}
    voices = {s: {(u["voice"], u["variant"]) for u in us} for s, us in by.items()}
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
    voices = {s: {(u["voice"], u["variant"]) for u in dm.utterances(s)} for s in texts}
    assert not voices["train"] & (voices["val"] | voices["test"])
    assert not voices["val"] & voices["test"]
    utt = dm.utterances("test")[0]
    assert set(utt) == {"id", "split", "text", "voice", "variant", "speed", "pitch", "file",
                        "seconds"}  # fmt: skip
    assert 140 <= utt["speed"] <= 190 and 30 <= utt["pitch"] <= 70
    # the files are 16 kHz
    info = sf.info(dm.cache_dir() / utt["file"])
    assert info.samplerate == 16000 and info.frames / 16000 == utt["seconds"]


def test_spoken_synth_batches(synth):
    _, dm = synth
    assert dm.num_classes == 29 and dm.input_shape == (16,) and dm.hop_length == 160
    assert dm.data_train.augment == dict(SPEC_AUGMENT) and dm.data_val.augment is None
    batch = next(iter(dm.train_dataloader()))
    b, t, f = batch["features"].shape
    assert set(batch) == KEYS and b == 4
    assert f == 16 and batch["features"].dtype == torch.float32
    assert batch["feature_lengths"].max() == t and batch["tokens"].dtype == torch.long
    for row, n, i in zip(batch["tokens"], batch["token_lengths"], batch["index"]):
        assert dm.vocab.decode(row[:n].tolist()) == dm.utterances("train")[int(i)]["text"]
        assert (row[n:] == 0).all()
    assert 0.5 < dm.audio_seconds("test") / 4 < 5  # seconds per utterance
    seen = [int(i) for b in dm.val_dataloader() for i in b["index"]]
    assert sorted(seen) == list(range(4))
    calib = list(dm.calibration_loader(5, batch_size=2))
    assert [len(b["index"]) for b in calib] == [2, 2, 1]
    assert [b["index"].tolist() for b in dm.calibration_loader(5, 2)] == [
        b["index"].tolist() for b in calib
    ]
    with pytest.raises(ValueError, match="gaussian"):
        dm.proxy_batch(4, 0)


def test_spoken_synth_reads_its_cache_without_espeak(synth, monkeypatch):
    root, dm = synth
    data = "hwnas.domains.asr.data"
    monkeypatch.setattr(f"{data}.spoken_synth.speak", lambda *a: pytest.fail("spoke again"))
    monkeypatch.setattr(f"{data}.speech.log_mel", lambda *a: pytest.fail("features again"))
    again = SpokenSynthDataModule(str(root / "a"), **TINY)
    again.setup()
    assert len(again.data_train) == 12
    assert all(torch.equal(a, b) for a, b in zip(again.data_train.features,
                                                  dm.data_train.features))  # fmt: skip
    # a finished corpus is used where espeak-ng is missing (e.g. copied to a GPU box)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    copied = SpokenSynthDataModule(str(root / "a"), **TINY)
    copied.setup()
    assert copied.cache_dir() == dm.cache_dir() and len(copied.data_test) == 4


def test_spoken_synth_errors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="unknown option"):
        SpokenSynthDataModule(str(tmp_path), bogus=1)
    with pytest.raises(ValueError, match="max_words"):
        SpokenSynthDataModule(str(tmp_path), min_words=5, max_words=2)
    with pytest.raises(ValueError, match="time_width"):
        SpokenSynthDataModule(str(tmp_path), spec_augment={"time_width": 2})
    with pytest.raises(ValueError, match="spec_augment"):
        SpokenSynthDataModule(str(tmp_path), spec_augment={"masks": 2})
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="espeak-ng not found: install it"):
        SpokenSynthDataModule(str(tmp_path), **TINY).setup()


def librispeech(**kw):
    return build_datamodule({
        "name": "librispeech", "data_dir": str(LIBRI), "train_split": "test-clean",
        "val_split": "test-clean", "test_split": "test-clean", "n_mels": 16, **kw,
    })  # fmt: skip


def test_librispeech_loader_on_real_utterances():
    dm = librispeech(eval_batch_size=5)
    dm.setup()
    assert len(dm.data_test) == 5 and len(dm.data_train) == 5
    lines = (CHAPTER / "9001-1.trans.txt").read_text().splitlines()
    expected = {k: t.lower() for k, t in (line.split(" ", 1) for line in lines)}
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == KEYS
    assert batch["features"].shape[0] == 5 and batch["features"].shape[2] == 16
    assert batch["feature_lengths"].max() == batch["features"].shape[1]
    # LibriSpeech's listing is sorted by utterance id: index i is the file 9001-1-000i
    for row, n, i, frames in zip(batch["tokens"], batch["token_lengths"], batch["index"],
                                 batch["feature_lengths"]):  # fmt: skip
        key = f"9001-1-{int(i):04d}"
        assert dm.vocab.decode(row[:n].tolist()) == expected[key]
        samples = sf.info(CHAPTER / f"{key}.flac").frames
        assert frames == 1 + samples // 160
        assert dm.data_test.durations_s[int(i)] == samples / 16000
    assert 24.0 < dm.audio_seconds("test") < 25.0  # 7.1 + 2.99 + 5.3 + 6.05 + 3.29 s
    short = librispeech(max_seconds=6.0)  # drops the 7.1 s and 6.05 s ones from train only
    short.setup()
    assert len(short.data_train) == 3 and len(short.data_test) == 5


def test_librispeech_missing_folder_names_it(tmp_path):
    dm = build_datamodule({"name": "librispeech", "data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="train-clean-100.*openslr"):
        dm.setup()
    with pytest.raises(ValueError, match="max_seconds"):
        librispeech(max_seconds=0)
