"""LibriSpeech (read offline from a local copy) for transducer ASR.

``torchaudio.datasets.LIBRISPEECH`` lists each split's utterances and transcripts
(its ``get_metadata``, which reads no audio); the FLAC files are read with soundfile
and turned into log-mel features when a batch asks for them, so the 100 hours of
``train-clean-100`` never sit in memory. Transcripts are lower-cased to the characters of
:data:`~hwnas.domains.asr.data.speech.CHARACTERS` (whichever the vocabulary, characters or
SentencePiece subwords; a SentencePiece model is cached in ``<data_dir>/librispeech_vocab``).
Expects ``<data_dir>/LibriSpeech/<split>/<speaker>/<chapter>/`` as the
archives from openslr.org/12 extract.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hwnas.domains.asr.data.features import HOP_LENGTH, SAMPLE_RATE, log_mel
from hwnas.domains.asr.data.speech import SpeechDataModule
from hwnas.domains.asr.data.vocab import normalize_transcript

log = logging.getLogger(__name__)

FIX = "download it from https://www.openslr.org/12 and extract it into data.data_dir"


class LazyFeatures(Sequence):
    """Log-mel features of audio files, computed when indexed; ``lengths`` (frames per
    file) come from the files' headers without decoding them."""

    def __init__(self, files: Sequence[Path], frames: Sequence[int], n_mels: int) -> None:
        self.files, self.lengths, self.n_mels = list(files), [int(n) for n in frames], n_mels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:  # type: ignore[override]
        import soundfile as sf

        audio, rate = sf.read(self.files[i], dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{self.files[i]}: {rate} Hz, LibriSpeech is {SAMPLE_RATE} Hz")
        wave = torch.from_numpy(audio if audio.ndim == 1 else audio.mean(1))
        return log_mel(wave, self.n_mels)

    def subset(self, idx: Sequence[int]) -> LazyFeatures:
        return LazyFeatures([self.files[i] for i in idx], [self.lengths[i] for i in idx],
                            self.n_mels)  # fmt: skip


class LibriSpeechDataModule(SpeechDataModule):
    """LibriSpeech splits by name (``train_split``, ``val_split``, ``test_split``);
    training utterances longer than ``max_seconds`` are left out (null keeps all)."""

    reads_data_dir = True

    name = "librispeech"

    def __init__(
        self,
        data_dir: str,
        train_split: str = "train-clean-100",
        val_split: str = "dev-clean",
        test_split: str = "test-clean",
        max_seconds: float | None = 16.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)  # the options every speech corpus has
        if max_seconds is not None and float(max_seconds) <= 0:
            raise ValueError(f"data.max_seconds must be > 0 or null, got {max_seconds}")
        self.split_names = {"train": str(train_split), "val": str(val_split),
                            "test": str(test_split)}  # fmt: skip
        self.max_seconds = None if max_seconds is None else float(max_seconds)

    def check_folders(self) -> None:
        """One error naming every expected split folder that is missing."""
        root = Path(self.data_dir) / "LibriSpeech"
        missing = [str(root / s) for s in dict.fromkeys(self.split_names.values())
                   if not (root / s).is_dir()]  # fmt: skip
        if missing:
            raise FileNotFoundError(
                f"LibriSpeech not found: expected the folder(s) {', '.join(missing)}; {FIX}"
            )

    def split_features(self, split: str) -> tuple[LazyFeatures, list[str], list[float]]:
        """The split's features (computed per batch), transcripts and seconds; the file
        listing and transcripts come from torchaudio's ``LIBRISPEECH`` metadata."""
        import soundfile as sf
        from torchaudio.datasets import LIBRISPEECH

        self.check_folders()
        name = self.split_names[split]
        try:
            ds = LIBRISPEECH(self.data_dir, url=name, download=False)
        except ValueError as err:
            raise ValueError(f"data.{split}_split={name!r}: {err}") from err
        archive = Path(self.data_dir) / "LibriSpeech"
        files, frames, texts, seconds = [], [], [], []
        for n in range(len(ds)):
            rel, _, transcript, *_ = ds.get_metadata(n)
            path = archive / rel
            info = sf.info(path)
            if info.samplerate != SAMPLE_RATE:
                raise ValueError(f"{path}: {info.samplerate} Hz, LibriSpeech is {SAMPLE_RATE} Hz")
            if split == "train" and self.max_seconds and info.duration > self.max_seconds:
                continue
            files.append(path)
            frames.append(1 + info.frames // HOP_LENGTH)
            texts.append(normalize_transcript(transcript))
            seconds.append(info.frames / SAMPLE_RATE)
        dropped = len(ds) - len(files)
        log.info("librispeech: %s has %d utterances (%d longer than %s s left out)",
                 name, len(files), dropped, self.max_seconds)  # fmt: skip
        return LazyFeatures(files, frames, self.n_mels), texts, seconds
