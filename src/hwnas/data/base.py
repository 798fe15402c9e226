"""The data side of the domain contract: :class:`DataModule`, the base every data module
the pipeline runs on derives from, and the seeded loader helpers they share.

Every random choice (the epoch order, the calibration and proxy subsets) is drawn from a
``torch.Generator`` seeded from ``seed``, never from a global RNG, so the same seed gives
the same batches whatever ``num_workers`` is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hwnas.core.seeding import derive_seed, seeded_generator

log = logging.getLogger(__name__)

__all__ = ["DataModule", "EpochSampler", "SeededLoaders", "check_options", "derive_seed",
           "seeded_generator"]  # fmt: skip


class EpochSampler(Sampler):
    """Yields ``(index, aug_seed)`` pairs; epoch ``e``'s order depends only on (seed, e).

    Lightning calls :meth:`set_epoch` before each epoch, so a resumed run sees the same
    order as an uninterrupted one; without it each pass moves on to the next epoch.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = seeded_generator(self.seed, "epoch", self.epoch)
        self.epoch += 1
        order = torch.randperm(self.n, generator=gen) if self.shuffle else torch.arange(self.n)
        aug_seeds = torch.randint(0, 2**62, (self.n,), generator=gen)
        yield from zip(order.tolist(), aug_seeds.tolist(), strict=True)


def check_options(
    name: str,
    unknown: Mapping[str, Any],
    positive: Mapping[str, Any],
    limits: Mapping[str, Any],
) -> None:
    """A data module's constructor checks: no ``unknown`` options (TypeError), every
    ``positive`` value >= 1 and every ``limits`` value null or >= 1 (ValueError)."""
    if unknown:
        raise TypeError(
            f"data module {name!r} got unknown option(s) {sorted(unknown)}: "
            f"remove them from the data config or fix their spelling"
        )
    for key, value in positive.items():
        if int(value) < 1:
            raise ValueError(f"data.{key} must be >= 1, got {value}")
    for key, value in limits.items():
        if value is not None and int(value) < 1:
            raise ValueError(f"data.{key} must be null or >= 1, got {value}")


class SeededLoaders:
    """Loader helpers shared by the data modules (they set ``seed``, ``num_workers``
    and ``pin_memory``): deterministic loaders, lazy setup, seeded subsets."""

    seed: int
    num_workers: int
    pin_memory: bool
    batch_size: int
    eval_batch_size: int

    def train_dataloader(self) -> DataLoader:
        data = self._require("data_train")
        sampler = EpochSampler(len(data), derive_seed(self.seed, "train_order"), shuffle=True)
        # drop a ragged last batch (BatchNorm dislikes a batch of one) unless it is the only one
        return self._loader(data, self.batch_size, sampler, drop_last=len(data) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require("data_val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require("data_test"), self.eval_batch_size)

    def _calibration_pick(self, num_samples: int, available: int) -> Tensor:
        """Seeded indices of ``num_samples`` of the ``available`` train samples (all of
        them when more are asked, with a warning)."""
        if num_samples < 1:
            raise ValueError(f"calibration num_samples must be >= 1, got {num_samples}")
        if num_samples > available:
            log.warning("calibration: %d samples asked, train has %d", num_samples, available)
        gen = seeded_generator(self.seed, "calibration")
        return torch.randperm(available, generator=gen)[:num_samples]

    def _loader(
        self,
        data: Dataset,
        batch_size: int,
        sampler: Sampler | None = None,
        drop_last: bool = False,
    ) -> DataLoader:
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            generator=seeded_generator(self.seed, "loader"),
        )

    def _require(self, attr: str) -> Any:
        """The split ``attr`` (``data_train``, ...), running ``setup`` first if needed."""
        if getattr(self, attr) is None:
            self.setup()
        return getattr(self, attr)

    def _limit(self, idx: Tensor, limit: int | None, what: str) -> Tensor:
        """A seeded subset of ``limit`` of the indices ``idx`` (all when ``None``), sorted."""
        if limit is None or limit >= idx.numel():
            return idx
        keep = torch.randperm(idx.numel(), generator=seeded_generator(self.seed, what))[:limit]
        return idx[keep.sort().values]




class DataModule(SeededLoaders, L.LightningDataModule):
    """What the pipeline needs of a data module (the data side of the domain contract).

    A subclass sets ``name``, ``input_shape`` (one sample's shape as the model sees it)
    and ``num_classes`` and implements ``setup`` (filling ``data_train``, ``data_val``,
    ``data_test``), :meth:`task`, :meth:`proxy_batch` and :meth:`calibration_loader`.
    """

    name: str = ""
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    # whether ``data_dir`` names data to read (a folder that must exist when a user names
    # it) rather than a folder the module writes to or ignores
    reads_data_dir: bool = False
    data_train: Any = None
    data_val: Any = None
    data_test: Any = None

    def task(self, label_smoothing: float = 0.0) -> Any:
        """The :class:`~hwnas.tasks.base.Task` this data feeds."""
        raise NotImplementedError(f"{type(self).__name__} must implement task()")

    def proxy_batch(self, batch_size: int, seed: int) -> tuple[Any, Any]:
        """One seeded batch ``(x, y)`` of unaugmented train data for the proxies."""
        raise NotImplementedError(f"{type(self).__name__} must implement proxy_batch()")

    def calibration_loader(self, num_samples: int, batch_size: int | None = None) -> DataLoader:
        """A fixed seeded subset of ``num_samples`` train samples, in fixed order."""
        raise NotImplementedError(f"{type(self).__name__} must implement calibration_loader()")
