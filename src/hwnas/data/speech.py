"""Shared machinery of the speech data modules: vocabularies, log-mel features, seeded
SpecAugment, length-bucketed batches, and the base :class:`SpeechDataModule`.

Labels are characters (:class:`CharVocabulary`, the default) or SentencePiece subwords
(:class:`SentencePieceVocabulary`, trained on the training transcripts; needs the
``sentencepiece`` package to train and encode, not to decode). Both normalise text the
same way, so WER and CER references do not depend on the vocabulary.

Audio is 16 kHz mono float. Features are 80 (``n_mels``) log-mel bins every 10 ms
(25 ms windows), each bin normalised over the utterance, so an utterance of ``N``
samples gives ``1 + N // 160`` frames. Every random choice (subsets, epoch orders,
SpecAugment masks) comes from a seed, never from a global RNG.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hwnas import atomic
from hwnas.data.base import SeededLoaders, check_options, derive_seed, seeded_generator

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms
WIN_LENGTH = 400  # 25 ms
CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"
# SpecAugment's defaults (see :func:`spec_augment`); read-only, copied where used
SPEC_AUGMENT = MappingProxyType(
    {"freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 0.05}
)


SENTENCEPIECE_FIX = "pip install sentencepiece (or pip install hwnas[speech])"
VOCABULARIES = ("chars", "sentencepiece")
# blank, SentencePiece's unknown piece and every character (a word boundary is the space)
MIN_SENTENCEPIECE_LABELS = len(CHARACTERS) + 2
SENTENCEPIECE_FORMAT = 1  # bump when the training settings change, so old caches are not reused
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁", a space before a word


class MissingPackageError(ImportError, ValueError):
    """An optional package is not installed; the message is one line naming the fix (a
    ``ValueError`` too, so ``python -m hwnas`` reports it as one ``error:`` line)."""


def normalize_transcript(text: str, chars: str = CHARACTERS) -> str:
    """Lower case, characters outside ``chars`` dropped, whitespace collapsed."""
    kept = "".join(c for c in text.lower() if c in chars or c.isspace())
    return " ".join(kept.split())


def import_sentencepiece() -> Any:
    """The ``sentencepiece`` module; :class:`MissingPackageError` naming the fix when it
    is not installed."""
    try:
        import sentencepiece
    except ImportError as err:
        raise MissingPackageError(
            f"data.vocab=sentencepiece needs the sentencepiece package: {SENTENCEPIECE_FIX}"
        ) from err
    return sentencepiece


class CharVocabulary:
    """Characters as labels: id 0 is the transducer's blank, ``chars[i]`` is id ``i + 1``."""

    def __init__(self, chars: str = CHARACTERS) -> None:
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError(f"vocabulary characters must be distinct and not empty: {chars!r}")
        self.chars = chars
        self._ids = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def normalize(self, text: str) -> str:
        """Lower case, characters outside the vocabulary dropped, whitespace collapsed."""
        return normalize_transcript(text, self.chars)

    def encode(self, text: str) -> list[int]:
        """Label ids (1..len - 1) of the normalised ``text``."""
        return [self._ids[c] for c in self.normalize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of label ids; blank and ids outside the vocabulary are skipped."""
        n = len(self.chars)
        return "".join(self.chars[i - 1] for i in ids if 1 <= int(i) <= n)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (saved beside a model); :meth:`from_dict` reads it."""
        return {"type": "characters", "blank": 0, "chars": self.chars}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> CharVocabulary:
        return cls(str(spec["chars"]))


class SentencePieceVocabulary:
    """SentencePiece subwords as labels: id 0 is the transducer's blank and ``pieces[i]``
    (SentencePiece's id ``i``) is id ``i + 1``; ``pieces[0]`` is SentencePiece's unknown
    piece (id 1), which :meth:`encode` never produces (every character is a piece).

    Text is normalised as :class:`CharVocabulary` does. :meth:`train` (or
    :meth:`from_model_proto`) and :meth:`encode` need the ``sentencepiece`` package;
    :meth:`decode` only needs ``pieces``, so saved models decode anywhere."""

    def __init__(
        self,
        pieces: Sequence[str],
        model_proto: bytes | None = None,
        model_type: str = "unigram",
        chars: str = CHARACTERS,
    ) -> None:
        if len(pieces) < 2:
            raise ValueError(f"a SentencePiece vocabulary needs pieces, got {list(pieces)}")
        self.pieces, self.model_proto = [str(p) for p in pieces], model_proto
        self.model_type, self.chars = str(model_type), chars
        self.unk = 1
        self._processor: Any = None

    # -- building ---------------------------------------------------------------
    @classmethod
    def from_model_proto(
        cls, model_proto: bytes, model_type: str = "unigram", chars: str = CHARACTERS
    ) -> SentencePieceVocabulary:
        """The vocabulary of a serialised SentencePiece model (needs the package)."""
        spm = import_sentencepiece()
        processor = spm.SentencePieceProcessor(model_proto=model_proto)
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        vocab = cls(pieces, model_proto, model_type, chars)
        vocab._processor = processor
        return vocab

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        vocab_size: int,
        model_type: str = "unigram",
        cache_dir: str | Path | None = None,
        chars: str = CHARACTERS,
    ) -> SentencePieceVocabulary:
        """A vocabulary of ``vocab_size`` labels (blank included) trained on the normalised
        ``texts`` (training transcripts only), deterministically: one thread, every
        sentence, full character coverage, every character of ``chars`` a piece.

        With ``cache_dir``, the model is read from (or written atomically to)
        ``<cache_dir>/sentencepiece_<key>.model``, ``key`` hashing the texts, the settings
        and the sentencepiece version, so a rerun reuses it."""
        spm = import_sentencepiece()
        vocab_size = int(vocab_size)
        if vocab_size < len(chars) + 2:
            raise ValueError(
                f"data.vocab_size={vocab_size} is too small for data.vocab=sentencepiece: it "
                f"needs >= {len(chars) + 2} (blank, unknown and the {len(chars)} characters)"
            )
        lines = [t for t in (normalize_transcript(x, chars) for x in texts) if t]
        if not lines:
            raise ValueError("data.vocab=sentencepiece: the training transcripts are empty")
        digest = hashlib.blake2b("\n".join(lines).encode(), digest_size=16).hexdigest()
        settings = {"texts": digest, "vocab_size": vocab_size, "model_type": model_type,
                    "chars": chars, "format": SENTENCEPIECE_FORMAT,
                    "sentencepiece": getattr(spm, "__version__", "")}  # fmt: skip
        key = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=6)
        name = f"sentencepiece_{key.hexdigest()}.model"
        path = None if cache_dir is None else Path(cache_dir) / name
        if path is not None and path.is_file():
            try:
                vocab = cls.from_model_proto(path.read_bytes(), model_type, chars)
                if len(vocab) == vocab_size:
                    log.info("sentencepiece vocabulary (%d labels) read from %s", vocab_size, path)
                    return vocab
            except (RuntimeError, OSError, ValueError) as err:  # a damaged cache is retrained
                log.warning("unreadable sentencepiece model %s (%s); retraining", path, err)
        proto = _train_sentencepiece(spm, lines, vocab_size - 1, model_type, chars)
        if path is not None:
            try:
                atomic.write_bytes(path, proto)
            except OSError as err:  # a read-only data folder: train again next time
                log.warning("cannot cache the sentencepiece model in %s (%s)", path, err)
        log.info("sentencepiece vocabulary (%d labels, %s) trained on %d transcripts",
                 vocab_size, model_type, len(lines))  # fmt: skip
        return cls.from_model_proto(proto, model_type, chars)

    # -- the vocabulary interface ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.pieces) + 1

    def normalize(self, text: str) -> str:
        """Lower case, characters outside the vocabulary dropped, whitespace collapsed."""
        return normalize_transcript(text, self.chars)

    def encode(self, text: str) -> list[int]:
        """Label ids (2..len - 1) of the normalised ``text`` (needs the package)."""
        if self._processor is None:
            if self.model_proto is None:
                raise ValueError(
                    "this SentencePiece vocabulary has no model (saved without one): it can "
                    "decode, not encode"
                )
            spm = import_sentencepiece()
            self._processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        return [i + 1 for i in self._processor.encode(self.normalize(text), out_type=int)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of label ids (no package needed): the pieces joined, word boundaries as
        spaces, whitespace collapsed; blank, unknown and ids outside the vocabulary are
        skipped."""
        n = len(self.pieces)
        text = "".join(self.pieces[i - 1] for i in map(int, ids) if self.unk < i <= n)
        return " ".join(text.replace(WORD_BOUNDARY, " ").split())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (saved beside a model); :meth:`from_dict` reads it.
        ``pieces[i]`` is label ``i + 1``; ``model_proto`` is the serialised SentencePiece
        model (base64), for encoding."""
        proto = None if self.model_proto is None else base64.b64encode(self.model_proto)
        return {
            "type": "sentencepiece", "blank": 0, "unk": self.unk, "pieces": list(self.pieces),
            "model_type": self.model_type, "chars": self.chars,
            "model_proto": None if proto is None else proto.decode("ascii"),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SentencePieceVocabulary:
        if spec.get("type") != "sentencepiece":
            raise ValueError(f"not a SentencePiece vocabulary: type {spec.get('type')!r}")
        proto = spec.get("model_proto")
        return cls(
            list(spec["pieces"]), None if proto is None else base64.b64decode(proto),
            str(spec.get("model_type", "unigram")), str(spec.get("chars", CHARACTERS)),
        )  # fmt: skip


def _train_sentencepiece(
    spm: Any, lines: Sequence[str], pieces: int, model_type: str, chars: str
) -> bytes:
    """A serialised SentencePiece model of ``pieces`` pieces (its unknown piece is id 0,
    no bos/eos) trained on ``lines``; ValueError naming data.vocab_size when the text
    cannot give that many."""
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buffer, vocab_size=pieces,
            model_type=model_type, character_coverage=1.0, num_threads=1,
            required_chars="".join(c for c in chars if not c.isspace()),
            normalization_rule_name="identity", unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            input_sentence_size=0, hard_vocab_limit=True, minloglevel=2,
        )  # fmt: skip
    except RuntimeError as err:
        text = " ".join(str(err).split())
        most = re.search(r"<= (\d+)", text)
        if "too high" in text and most:
            raise ValueError(
                f"data.vocab_size={pieces + 1} is too large for {len(lines)} training "
                f"transcripts: sentencepiece makes at most {int(most.group(1)) + 1} labels "
                "(blank included) from them; lower data.vocab_size"
            ) from None
        raise ValueError(f"data.vocab=sentencepiece: training failed: {text[:300]}") from None
    return buffer.getvalue()


def vocabulary_from_dict(spec: Mapping[str, Any]) -> CharVocabulary | SentencePieceVocabulary:
    """The vocabulary a :meth:`to_dict` spec describes (``type``: characters or
    sentencepiece), e.g. the ``vocabulary`` of a saved model's task spec."""
    kind = spec.get("type")
    if kind == "characters":
        return CharVocabulary.from_dict(spec)
    if kind == "sentencepiece":
        return SentencePieceVocabulary.from_dict(spec)
    raise ValueError(f"unknown vocabulary type {kind!r}: expected characters or sentencepiece")


@lru_cache(maxsize=4)
def _mel(n_mels: int) -> torch.nn.Module:
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=WIN_LENGTH, win_length=WIN_LENGTH,
        hop_length=HOP_LENGTH, n_mels=n_mels, power=2.0,
    )  # fmt: skip


def log_mel(waveform: Tensor, n_mels: int = 80) -> Tensor:
    """(N,) 16 kHz samples -> (1 + N // 160, n_mels) normalised log-mel features."""
    with torch.no_grad():
        spec = _mel(int(n_mels))(waveform.float())  # (n_mels, T)
    feats = torch.log(spec + 1e-6).T  # (T, n_mels)
    mean, std = feats.mean(0, keepdim=True), feats.std(0, keepdim=True, unbiased=False)
    return ((feats - mean) / std.clamp_min(1e-5)).contiguous()


def spec_augment(
    feats: Tensor,
    seed: int,
    freq_masks: int = 2,
    freq_width: int = 15,
    time_masks: int = 2,
    time_width: float = 0.05,
) -> Tensor:
    """A copy of ``feats`` (T, F) with SpecAugment's frequency and time masks (set to 0,
    the normalised mean) drawn from ``random.Random(seed)``: each frequency mask spans
    up to ``freq_width`` bins, each time mask up to ``time_width`` of the frames."""
    rng = random.Random(seed)
    out = feats.clone()
    t, f = out.shape
    for _ in range(int(freq_masks)):
        width = rng.randint(0, min(int(freq_width), f))
        start = rng.randint(0, f - width)
        out[:, start : start + width] = 0.0
    most = max(1, int(time_width * t)) if time_width > 0 and t > 1 else 0
    for _ in range(int(time_masks)):
        width = rng.randint(0, most)
        start = rng.randint(0, t - width)
        out[start : start + width] = 0.0
    return out


class SpeechDataset(Dataset):
    """Utterances as features (T_i, F) float32 and label ids.

    Keys are an index, or ``(index, aug_seed)`` (what :class:`BucketBatchSampler` yields):
    with a seed and ``augment`` (keyword arguments of :func:`spec_augment`) set, the
    features get SpecAugment from that seed. ``features`` may be a list, or a sequence
    that computes them on access (then give ``lengths``, the frames T_i, so bucketing
    needs no features). ``durations_s`` are the utterances' audio seconds (default: from
    the frames, ``(T_i - 1) * 10 ms``)."""

    def __init__(
        self,
        features: Sequence[Tensor],
        tokens: Sequence[Sequence[int]],
        augment: Mapping[str, Any] | None = None,
        durations_s: Sequence[float] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> None:
        # frames per utterance (what batches are bucketed by), without computing features
        self.lengths = (
            [int(f.shape[0]) for f in features] if lengths is None else [int(n) for n in lengths]
        )
        if durations_s is None:
            durations_s = [(n - 1) * HOP_LENGTH / SAMPLE_RATE for n in self.lengths]
        if not len(features) == len(tokens) == len(durations_s) == len(self.lengths):
            raise ValueError(
                "SpeechDataset needs one token list, duration and length per utterance"
            )
        self.features, self.tokens = features, [list(t) for t in tokens]
        self.durations_s = [float(d) for d in durations_s]
        self.augment = dict(augment) if augment else None

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[dict[str, Any]]:
        items = []
        for key in keys:
            i, seed = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
            feats = self.features[i]
            if seed is not None and self.augment:
                feats = spec_augment(feats, seed, **self.augment)
            items.append({"features": feats, "tokens": self.tokens[i], "index": i})
        return items

    def subset(self, idx: Sequence[int], augment: bool = True) -> SpeechDataset:
        """The utterances ``idx`` (in that order), with SpecAugment only if ``augment``."""
        feats = self.features
        picked = feats.subset(idx) if hasattr(feats, "subset") else [feats[i] for i in idx]
        return SpeechDataset(
            picked, [self.tokens[i] for i in idx], self.augment if augment else None,
            [self.durations_s[i] for i in idx], [self.lengths[i] for i in idx],
        )  # fmt: skip


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Per-utterance dicts -> ``features`` (B, T_max, F) float32 zero-padded,
    ``feature_lengths`` (B,) int64 frames, ``tokens`` (B, U_max) int64 padded with blank 0
    (U_max >= 1), ``token_lengths`` (B,) int64 and ``index`` (B,) int64, each utterance's
    index in its split."""
    b = len(items)
    lengths = torch.tensor([int(it["features"].shape[0]) for it in items], dtype=torch.long)
    n_feats = int(items[0]["features"].shape[1])
    feats = torch.zeros(b, int(lengths.max()), n_feats)
    token_lengths = torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long)
    tokens = torch.zeros(b, max(1, int(token_lengths.max())), dtype=torch.long)
    for j, it in enumerate(items):
        feats[j, : lengths[j]] = it["features"]
        tokens[j, : token_lengths[j]] = torch.as_tensor(it["tokens"], dtype=torch.long)
    return {
        "features": feats,
        "feature_lengths": lengths,
        "tokens": tokens,
        "token_lengths": token_lengths,
        "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
    }


class BucketBatchSampler(Sampler):
    """Batches of similar lengths; epoch ``e``'s batches depend only on (seed, e).

    With ``shuffle``, the indices are shuffled, cut into chunks of ``chunk_batches``
    batches, each chunk sorted by length and batched, and the batch order shuffled;
    every index appears once per epoch with its own SpecAugment seed: batches are lists
    of ``(index, aug_seed)``. Without ``shuffle``: sorted by length, plain indices.
    Lightning calls :meth:`set_epoch` before each epoch (a resumed run sees the same
    batches); without it each pass moves on to the next epoch."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        chunk_batches: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size = list(lengths), int(batch_size)
        self.seed, self.shuffle, self.chunk = int(seed), bool(shuffle), int(chunk_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def batches(self, epoch: int) -> list[list]:
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: (self.lengths[i], i))
            return [order[k : k + size] for k in range(0, n, size)]
        gen = seeded_generator(self.seed, "bucket", epoch)
        order = torch.randperm(n, generator=gen).tolist()
        seeds = torch.randint(0, 2**62, (n,), generator=gen).tolist()
        out: list[list] = []
        step = size * self.chunk
        for k in range(0, n, step):
            chunk = sorted(order[k : k + step], key=lambda i: (self.lengths[i], i))
            for j in range(0, len(chunk), size):
                out.append([(i, seeds[i]) for i in chunk[j : j + size]])
        perm = torch.randperm(len(out), generator=gen).tolist()
        return [out[p] for p in perm]

    def __iter__(self) -> Iterator[list]:
        epoch = self.epoch
        self.epoch += 1
        yield from self.batches(epoch)


def check_spec_augment(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` over :data:`SPEC_AUGMENT`'s defaults, checked (ValueError naming the key)."""
    bad = set(options) - set(SPEC_AUGMENT)
    if bad:
        raise ValueError(
            f"data.spec_augment: unknown key(s) {sorted(bad)}; use {sorted(SPEC_AUGMENT)} "
            "(or null for none)"
        )
    out = {**SPEC_AUGMENT, **options}
    for key in ("freq_masks", "freq_width", "time_masks"):
        if int(out[key]) < 0:
            raise ValueError(f"data.spec_augment.{key} must be >= 0, got {out[key]}")
        out[key] = int(out[key])
    if not 0.0 <= float(out["time_width"]) <= 1.0:
        raise ValueError(
            f"data.spec_augment.time_width is a fraction of the frames, in [0, 1]: "
            f"got {out['time_width']}"
        )
    out["time_width"] = float(out["time_width"])
    return out


def check_vocabulary(vocab: str, vocab_size: int) -> None:
    """``data.vocab`` and ``data.vocab_size`` checked (one-line ValueError naming the key;
    :class:`MissingPackageError` when sentencepiece is asked for and not installed)."""
    if vocab not in VOCABULARIES:
        raise ValueError(f"data.vocab={vocab!r}: use one of {list(VOCABULARIES)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
        raise ValueError(
            f"data.vocab_size={vocab_size!r} must be an integer >= 3 (labels, blank included)"
        )
    if vocab == "sentencepiece":
        if vocab_size < MIN_SENTENCEPIECE_LABELS:
            raise ValueError(
                f"data.vocab_size={vocab_size} must be >= {MIN_SENTENCEPIECE_LABELS} with "
                f"data.vocab=sentencepiece (blank, unknown and the {len(CHARACTERS)} characters)"
            )
        import_sentencepiece()


class SpeechDataModule(SeededLoaders, L.LightningDataModule):
    """Utterances as log-mel features and character or subword labels, in length-bucketed
    batches.

    Batches are dicts (see :func:`collate`): ``n_mels`` log-mel bins every ``hop_length``
    samples at ``sample_rate`` (10 ms frames at 16 kHz), labels from ``vocab`` (blank 0).
    ``vocab`` is ``chars`` (:class:`CharVocabulary`) or ``sentencepiece``: a
    :class:`SentencePieceVocabulary` of ``vocab_size`` labels (blank included; that is
    ``num_classes`` before :meth:`setup` trains it on the training transcripts, after
    ``train_limit``, and caches it in :meth:`vocab_cache_dir`).
    Subclasses implement :meth:`split_features` (features held in memory, e.g. from
    :meth:`cached_features`, or computed on access). ``*_limit`` keep seeded subsets;
    ``spec_augment`` (keyword arguments of :func:`spec_augment` over its defaults,
    ``None`` = off) applies to train batches only. Train batches are bucketed by length
    and reshuffled each epoch from (seed, epoch); val, test and calibration batches are
    sorted by length, in a fixed order."""

    name = "speech"

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        n_mels: int = 80,
        spec_augment: Mapping[str, Any] | None = SPEC_AUGMENT,
        train_limit: int | None = None,
        val_limit: int | None = None,
        test_limit: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        vocab: str = "chars",
        vocab_size: int = 256,
        **unknown: Any,
    ) -> None:
        super().__init__()
        positive = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, n_mels=n_mels)
        limits = dict(train_limit=train_limit, val_limit=val_limit, test_limit=test_limit)
        check_options(self.name, unknown, positive, limits)
        if int(num_workers) < 0:
            raise ValueError("data.num_workers must be >= 0")
        if spec_augment is not None:
            spec_augment = check_spec_augment(spec_augment)
        check_vocabulary(vocab, vocab_size)
        self.data_dir = str(data_dir)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.n_mels, self.seed = int(num_workers), int(n_mels), int(seed)
        self.pin_memory, self.spec_augment = bool(pin_memory), spec_augment
        self.limits = {"train": train_limit, "val": val_limit, "test": test_limit}
        self.vocab_kind, self.vocab_size = str(vocab), int(vocab_size)
        # a SentencePiece vocabulary is trained in setup; its size is known from the config
        self.vocab: CharVocabulary | SentencePieceVocabulary | None = (
            CharVocabulary() if self.vocab_kind == "chars" else None
        )
        self.num_classes = len(self.vocab) if self.vocab is not None else self.vocab_size
        self.input_shape = (self.n_mels,)
        self.sample_rate, self.hop_length = SAMPLE_RATE, HOP_LENGTH
        self.data_train: SpeechDataset | None = None
        self.data_val: SpeechDataset | None = None
        self.data_test: SpeechDataset | None = None

    # -- what a corpus supplies ---------------------------------------------------
    def split_features(self, split: str) -> tuple[Sequence[Tensor], list[str], list[float]]:
        """Features (T_i, n_mels), transcripts and audio seconds of ``train``, ``val`` or
        ``test``. The features are a list, or any sequence that computes them on access
        (and then has ``lengths``, the frames per utterance). Subclasses implement it."""
        raise NotImplementedError

    def cached_features(
        self, path: Path, waveforms: Callable[[], Sequence[Tensor]]
    ) -> list[Tensor]:
        """Features read from ``path``, or computed from ``waveforms()`` and saved there
        (atomically); a corrupt cache is recomputed."""
        if path.is_file():
            try:
                return list(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as err:  # any unreadable cache is recomputed
                log.warning("%s: unreadable cache %s (%s); recomputing", self.name, path, err)
        feats = [log_mel(w, self.n_mels) for w in waveforms()]
        atomic.torch_save(feats, path)
        return feats

    def vocab_cache_dir(self) -> Path:
        """Where a trained SentencePiece model is cached: ``<data_dir>/<name>_vocab``
        (corpora with a cache folder of their own keep it there)."""
        return Path(self.data_dir) / f"{self.name}_vocab"

    def train_vocabulary(self, texts: Sequence[str]) -> SentencePieceVocabulary:
        """A SentencePiece vocabulary of ``vocab_size`` labels trained on the training
        transcripts ``texts`` (or read from :meth:`vocab_cache_dir`)."""
        return SentencePieceVocabulary.train(texts, self.vocab_size,
                                             cache_dir=self.vocab_cache_dir())  # fmt: skip

    # -- Lightning hooks ----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load the corpus and its features (computed or read from a cache) once; a
        SentencePiece vocabulary is trained on the (kept) training transcripts first."""
        if self.data_train is not None:
            return
        loaded, keep = {}, {}
        for split in ("train", "val", "test"):
            loaded[split] = self.split_features(split)
            n = len(loaded[split][1])
            if not n:
                raise ValueError(f"data {self.name}: the {split} split is empty")
            keep[split] = self._limit(torch.arange(n), self.limits[split], f"{split}_limit")
        if self.vocab is None:
            texts = loaded["train"][1]
            self.vocab = self.train_vocabulary([texts[i] for i in keep["train"].tolist()])
        vocab = self.vocab
        splits = {}
        for split, (feats, texts, seconds) in loaded.items():
            tokens = [vocab.encode(t) for t in texts]
            lengths = getattr(feats, "lengths", None)
            data = SpeechDataset(feats, tokens, self.spec_augment, seconds, lengths)
            splits[split] = data.subset(keep[split].tolist(), augment=split == "train")
        self.data_train, self.data_val, self.data_test = (
            splits["train"], splits["val"], splits["test"],
        )  # fmt: skip
        log.info(
            "%s: %d train / %d val / %d test utterances (%.2f h of training audio)",
            self.name, len(self.data_train), len(self.data_val), len(self.data_test),
            sum(self.data_train.durations_s) / 3600,
        )  # fmt: skip

    # -- loaders --------------------------------------------------------------------
    def _speech_loader(self, data: SpeechDataset, sampler: BucketBatchSampler) -> DataLoader:
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        data = self._require("data_train")
        seed = derive_seed(self.seed, "train_order")
        return self._speech_loader(data, BucketBatchSampler(data.lengths, self.batch_size, seed))

    def _eval_loader(self, data: SpeechDataset, batch_size: int | None = None) -> DataLoader:
        size = batch_size or self.eval_batch_size
        sampler = BucketBatchSampler(data.lengths, size, shuffle=False)
        return self._speech_loader(data, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require("data_val"))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require("data_test"))

    def calibration_loader(self, num_samples: int, batch_size: int | None = None) -> DataLoader:
        """A fixed seeded subset of ``num_samples`` train utterances, without SpecAugment."""
        data = self._require("data_train")
        pick = self._calibration_pick(num_samples, len(data)).tolist()
        return self._eval_loader(data.subset(pick, augment=False), batch_size or self.batch_size)

    def audio_seconds(self, split: str) -> float:
        """Total audio seconds of ``train``, ``val`` or ``test`` (after its limit)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"audio_seconds: split {split!r} must be train, val or test")
        return float(sum(self._require(f"data_{split}").durations_s))

    def task(self, label_smoothing: float = 0.0) -> Any:
        """Transducer ASR over this data's vocabulary and features (a SentencePiece
        vocabulary is trained first, by :meth:`setup`, if it was not yet)."""
        from hwnas.tasks.asr import TransducerASR

        if self.vocab is None:
            self.setup()
        return TransducerASR(
            vocab=self.vocab, n_mels=self.n_mels, sample_rate=self.sample_rate,
            hop_length=self.hop_length, label_smoothing=label_smoothing,
        )  # fmt: skip

    def proxy_batch(self, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        """Not available: proxies score the encoder on gaussian features instead."""
        raise ValueError(
            f"data {self.name}: zero_shot.inputs=data is not supported for speech; use "
            "zero_shot.inputs=gaussian (proxies run after the front end)"
        )
