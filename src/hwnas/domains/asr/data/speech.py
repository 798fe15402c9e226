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

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from hwnas.core import atomic
from hwnas.core.seeding import derive_seed
from hwnas.data.base import DataModule, check_options
from hwnas.domains.asr.data.dataset import BucketBatchSampler, SpeechDataset, collate
from hwnas.domains.asr.data.features import (
    HOP_LENGTH,
    SAMPLE_RATE,
    SPEC_AUGMENT,
    check_spec_augment,
    log_mel,
)
from hwnas.domains.asr.data.vocab import CharVocabulary, SentencePieceVocabulary, check_vocabulary

log = logging.getLogger(__name__)


class SpeechDataModule(DataModule):
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
        from hwnas.domains.asr.task import TransducerASR

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
