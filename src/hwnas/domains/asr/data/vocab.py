"""TODO docstring"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hwnas.core import atomic

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms
WIN_LENGTH = 400  # 25 ms
CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"
# SpecAugment's defaults (see :func:`spec_augment`); read-only, copied where used
SPEC_AUGMENT = MappingProxyType(
    {"freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 0.05}
)


CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"


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
