"""SentencePiece label vocabulary: training, encoding and decoding, saving and reloading
(decoding without the package), the cache, and the speech data modules' ``vocab`` option."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from hwnas.data import build_datamodule
from hwnas.domains.asr.data.spoken_synth import WORDS, SpokenSynthDataModule
from hwnas.domains.asr.data.vocab import (
    CHARACTERS,
    CharVocabulary,
    MissingPackageError,
    SentencePieceVocabulary,
    vocabulary_from_dict,
)
from tests.conftest import compose_config

pytest.importorskip("sentencepiece")

LIBRI = Path(__file__).parent / "fixtures" / "librispeech"
CHAPTER = LIBRI / "LibriSpeech" / "test-clean" / "9001" / "1"
SENTENCES = [
    "Hello,  WORLD's 42 cats!",
    "the quick brown fox jumps over the lazy dog",
    "Quixotic zebras VEX jaunty wizards",  # words and letters the training text lacks
    "a",
    "it's   nine o'clock\tin the morning",
]


def corpus(n: int = 60, seed: int = 0) -> list[str]:
    """``n`` seeded sentences of 3..7 of the spoken corpus's words (mixed case, spacing)."""
    rng = random.Random(seed)
    return ["  ".join(rng.choice(WORDS).upper() if rng.random() < 0.2 else rng.choice(WORDS)
                      for _ in range(rng.randint(3, 7))) for _ in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def vocab() -> SentencePieceVocabulary:
    return SentencePieceVocabulary.train(corpus(), 40)


def test_round_trip_blank_and_size(vocab):
    assert len(vocab) == 40 and len(vocab.pieces) == 39 and vocab.pieces[0] == "<unk>"
    char = CharVocabulary()
    for text in SENTENCES + corpus(10, seed=1):
        ids = vocab.encode(text)
        assert ids and 0 not in ids and vocab.unk not in ids  # no blank, no unknown piece
        assert all(2 <= i < 40 for i in ids)
        # the same normalisation (and so the same WER/CER references) as characters
        assert vocab.normalize(text) == char.normalize(text)
        assert vocab.decode(ids) == vocab.normalize(text) == char.decode(char.encode(text))
    # subwords: pieces longer than one character, so fewer labels than characters
    assert any(len(p.lstrip("\u2581")) > 1 for p in vocab.pieces)
    train = corpus()
    assert sum(map(len, map(vocab.encode, train))) < sum(map(len, map(char.encode, train)))
    # every character is a piece of its own
    assert set(CHARACTERS) - {" "} <= set(vocab.pieces)


def test_decode_skips_blank_unknown_and_out_of_range_ids(vocab):
    ids = vocab.encode("the dog")
    assert vocab.decode([0, *ids, 0, 1, 40, 99, -3]) == "the dog"
    assert vocab.decode([]) == "" and vocab.decode([0, 1]) == ""


def test_to_dict_round_trip_decodes_without_the_package(vocab, monkeypatch):
    spec = json.loads(json.dumps(vocab.to_dict()))  # JSON-able, as saved beside a model
    assert spec["type"] == "sentencepiece" and spec["blank"] == 0
    assert spec["pieces"] == vocab.pieces and spec["model_proto"]
    ids = [vocab.encode(t) for t in SENTENCES]
    for again in (SentencePieceVocabulary.from_dict(spec), vocabulary_from_dict(spec)):
        assert isinstance(again, SentencePieceVocabulary) and len(again) == len(vocab)
        assert [again.decode(i) for i in ids] == [vocab.decode(i) for i in ids]
        assert [again.encode(t) for t in SENTENCES] == ids  # the stored model encodes
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # the package is missing
    bare = vocabulary_from_dict(spec)
    assert [bare.decode(i) for i in ids] == [vocab.normalize(t) for t in SENTENCES]
    with pytest.raises(MissingPackageError, match="pip install sentencepiece") as err:
        bare.encode("the dog")
    assert "\n" not in str(err.value)
    # characters still load through the same function; unknown types are refused
    chars = vocabulary_from_dict(CharVocabulary().to_dict())
    assert isinstance(chars, CharVocabulary) and chars.chars == CHARACTERS
    with pytest.raises(ValueError, match="unknown vocabulary type 'words'"):
        vocabulary_from_dict({"type": "words"})


def test_training_is_deterministic_and_cached(vocab, tmp_path, monkeypatch):
    again = SentencePieceVocabulary.train(corpus(), 40)
    assert again.pieces == vocab.pieces and again.model_proto == vocab.model_proto
    assert SentencePieceVocabulary.train(corpus(), 45).pieces != vocab.pieces
    cached = SentencePieceVocabulary.train(corpus(), 40, cache_dir=tmp_path)
    (path,) = tmp_path.glob("sentencepiece_*.model")
    assert cached.pieces == vocab.pieces and path.read_bytes() == vocab.model_proto
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    # a rerun reads the cache instead of training
    monkeypatch.setattr("hwnas.domains.asr.data.vocab._train_sentencepiece",
                        lambda *a: pytest.fail("trained again"))  # fmt: skip
    assert SentencePieceVocabulary.train(corpus(), 40, cache_dir=tmp_path).pieces == vocab.pieces
    monkeypatch.undo()
    # other transcripts, another model beside it; a damaged cache is retrained
    SentencePieceVocabulary.train(corpus(seed=3), 40, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("sentencepiece_*.model"))) == 2
    path.write_bytes(b"not a model")
    assert SentencePieceVocabulary.train(corpus(), 40, cache_dir=tmp_path).pieces == vocab.pieces
    assert path.read_bytes() == vocab.model_proto


def test_vocab_size_errors_name_the_key():
    with pytest.raises(ValueError, match=r"data\.vocab_size=500 is too large .*lower") as err:
        SentencePieceVocabulary.train(corpus(5), 500)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"data\.vocab_size=20 is too small"):
        SentencePieceVocabulary.train(corpus(5), 20)
    with pytest.raises(ValueError, match="transcripts are empty"):
        SentencePieceVocabulary.train(["", "42 !"], 40)


@pytest.fixture
def libri(tmp_path) -> Path:
    """A copy of the five-utterance LibriSpeech fixture (the vocabulary is cached beside
    it, not in the repository)."""
    shutil.copytree(LIBRI / "LibriSpeech", tmp_path / "LibriSpeech")
    return tmp_path


def librispeech(data_dir: Path, **kw):
    return build_datamodule({
        "name": "librispeech", "data_dir": str(data_dir), "train_split": "test-clean",
        "val_split": "test-clean", "test_split": "test-clean", "n_mels": 16,
        "vocab": "sentencepiece", "vocab_size": 40, **kw,
    })  # fmt: skip


def test_librispeech_with_sentencepiece_labels(libri, monkeypatch):
    seen: list[list[str]] = []
    train = SentencePieceVocabulary.train.__func__  # type: ignore[attr-defined]

    def spy(cls, texts, *args, **kwargs):
        seen.append(list(texts))
        return train(cls, texts, *args, **kwargs)

    monkeypatch.setattr(SentencePieceVocabulary, "train", classmethod(spy))
    dm = librispeech(libri, train_limit=3, eval_batch_size=5)
    assert dm.num_classes == 40 and dm.vocab is None  # known before setup, for the model
    dm.setup()
    assert isinstance(dm.vocab, SentencePieceVocabulary) and len(dm.vocab) == dm.num_classes
    # trained once, on the kept training transcripts only
    assert len(seen) == 1 and len(seen[0]) == 3
    assert seen[0] == [dm.vocab.decode(t) for t in dm.data_train.tokens]
    assert list((libri / "librispeech_vocab").glob("sentencepiece_*.model"))
    lines = (CHAPTER / "9001-1.trans.txt").read_text().splitlines()
    expected = {k: t.lower() for k, t in (line.split(" ", 1) for line in lines)}
    batch = next(iter(dm.test_dataloader()))
    assert 0 < int(batch["tokens"].max()) < 40
    for row, n, i in zip(batch["tokens"], batch["token_lengths"], batch["index"]):
        assert (row[:n] > 1).all() and (row[n:] == 0).all()
        assert dm.vocab.decode(row[:n].tolist()) == expected[f"9001-1-{int(i):04d}"]
    # the task decodes with it and saves it in the model's spec
    task = dm.task()
    assert task.vocab is dm.vocab and task.spec()["vocabulary"]["type"] == "sentencepiece"
    # a second data module reads the cached model: the same labels
    other = librispeech(libri, train_limit=3)
    other.setup()
    assert len(seen) == 2 and other.vocab.pieces == dm.vocab.pieces
    assert other.data_test.tokens == dm.data_test.tokens


def test_task_trains_the_vocabulary_when_not_set_up(libri):
    dm = librispeech(libri)
    task = dm.task()
    assert task.vocab is dm.vocab and len(task.vocab) == 40 and dm.data_train is not None


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_spoken_synth_with_sentencepiece_labels(tmp_path):
    sizes = dict(train_size=8, val_size=2, test_size=2, val_voices=2, test_voices=2)
    dm = SpokenSynthDataModule(str(tmp_path), **sizes, n_mels=16, batch_size=4,
                               vocab="sentencepiece", vocab_size=40)  # fmt: skip
    assert dm.num_classes == 40
    dm.setup()
    assert len(dm.vocab) == 40 and dm.vocab_cache_dir() == dm.cache_dir()
    assert list(dm.cache_dir().glob("sentencepiece_*.model"))  # beside the features
    for split in ("train", "val", "test"):
        data, utts = getattr(dm, f"data_{split}"), dm.utterances(split)
        assert all(0 < i < 40 for t in data.tokens for i in t)
        assert [dm.vocab.decode(t) for t in data.tokens] == [u["text"] for u in utts]
    batch = next(iter(dm.train_dataloader()))
    assert int(batch["tokens"].max()) < dm.num_classes


def test_missing_package_is_one_line_error(libri, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(MissingPackageError) as err:
        librispeech(libri)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert "data.vocab=sentencepiece" in message and "pip install sentencepiece" in message
    assert "hwnas[speech]" in message
    assert librispeech(libri, vocab="chars").num_classes == 29  # characters need nothing


def test_config_errors_name_the_key(libri):
    with pytest.raises(ValueError, match=r"data\.vocab='bpe': use one of"):
        librispeech(libri, vocab="bpe")
    with pytest.raises(ValueError, match=r"data\.vocab_size=2 must be an integer >= 3"):
        librispeech(libri, vocab="chars", vocab_size=2)
    with pytest.raises(ValueError, match=r"data\.vocab_size=20 must be >= 30"):
        librispeech(libri, vocab_size=20)


@pytest.mark.parametrize("data", ["librispeech", "spoken_synth"])
def test_config_defaults_and_override(data, tmp_path):
    cfg = compose_config([f"data={data}", f"paths.data_dir={tmp_path}"])
    assert cfg.data.vocab == "chars" and cfg.data.vocab_size == 256
    assert build_datamodule(cfg.data).num_classes == 29
    cfg = compose_config([f"data={data}", f"paths.data_dir={tmp_path}",
                          "data.vocab=sentencepiece", "data.vocab_size=64"])  # fmt: skip
    dm = build_datamodule(cfg.data)
    assert dm.vocab_kind == "sentencepiece" and dm.num_classes == 64


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_pipeline_saves_a_vocabulary_that_decodes_without_the_package(
    tmp_path, one_thread, monkeypatch
):
    from hwnas.app.pipeline import run
    from hwnas.app.subnet_io import load_subnet

    out = tmp_path / "run"
    overrides = ["experiment=asr_tiny", f"paths.output_dir={out}",
                 f"paths.cache_dir={tmp_path / 'cache'}", f"data.data_dir={tmp_path / 'data'}",
                 "data.vocab=sentencepiece", "data.vocab_size=40"]  # fmt: skip
    cfg = compose_config(overrides)
    run(cfg)
    spec = json.loads((out / "final/arch.json").read_text())
    assert spec["vocabulary"]["type"] == "sentencepiece"
    assert len(spec["vocabulary"]["pieces"]) + 1 == 40
    dm = build_datamodule(cfg.data)
    dm.setup()  # the cached model: the same labels as the run's
    assert spec["vocabulary"]["pieces"] == dm.vocab.pieces
    net = load_subnet(out / "final").eval()
    batch = next(iter(dm.test_dataloader()))
    hyps = net.transcribe(batch["features"], batch["feature_lengths"])
    assert all(0 < i < 40 for h in hyps for i in h)  # the model's outputs are the labels
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    saved = vocabulary_from_dict(spec["vocabulary"])
    assert [saved.decode(h) for h in hyps] == [dm.vocab.decode(h) for h in hyps]
    refs = [saved.decode(row[:n].tolist())
            for row, n in zip(batch["tokens"], batch["token_lengths"])]  # fmt: skip
    texts = {u["text"] for u in dm.utterances("test")}
    assert refs and set(refs) <= texts
