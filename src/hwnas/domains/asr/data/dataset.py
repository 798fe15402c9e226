"""TODO docstring"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from hwnas.core.seeding import seeded_generator
from hwnas.domains.asr.data.features import (
    HOP_LENGTH,
    SAMPLE_RATE,
    spec_augment,
)

log = logging.getLogger(__name__)


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
