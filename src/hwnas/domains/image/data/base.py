"""Shared machinery of the image data modules: seeded splits, augmentation and the
image data module base (:class:`HwnasDataModule`).

Every random choice (the validation hold-out, the ``*_limit`` subsets, the epoch order,
each sample's crop and flip, the calibration and proxy subsets) is drawn from a
``torch.Generator`` or ``random.Random`` seeded from ``seed``, never from a global RNG,
so the same seed gives the same batches whatever ``num_workers`` is.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from hwnas.core.seeding import seeded_generator
from hwnas.data.base import DataModule, check_options
from hwnas.domains.image.task import ImageClassification

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augment:
    """Train-time augmentation: zero-padded random crop back to full size, optional flip."""

    pad: int = 0
    hflip: bool = False

    def __call__(self, x: Tensor, seeds: Sequence[int | None]) -> Tensor:
        """Augment a batch (B, C, H, W) of pixel-scale images, sample ``b`` from ``seeds[b]``.

        A ``None`` seed leaves its sample as it is.
        """
        out = x.clone()
        padded = TF.pad(x, [self.pad]) if self.pad > 0 else x  # (B, C, H + 2p, W + 2p)
        h, w = x.shape[-2:]
        for b, seed in enumerate(seeds):
            if seed is None:
                continue
            rng = random.Random(seed)
            if self.pad > 0:
                top, left = rng.randint(0, 2 * self.pad), rng.randint(0, 2 * self.pad)
                out[b] = padded[b, :, top : top + h, left : left + w]
            if self.hflip and rng.random() < 0.5:
                out[b] = TF.horizontal_flip(out[b])
        return out


class ImageTensorDataset(Dataset):
    """A view (``indices``) of shared image/label tensors, normalised on the fly.

    ``images`` is (N, C, H, W) uint8 (scaled to [0, 1]) or float (used as is); ``labels``
    is (N,) int64. Indexed with an ``int`` it returns the clean sample; indexed with
    ``(i, aug_seed)`` (what :class:`EpochSampler` yields) it applies ``augment`` drawing
    from ``random.Random(aug_seed)``, so a sample's crop and flip do not depend on which
    batch or worker fetches it.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        indices: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augment | None = None,
    ) -> None:
        self.images, self.labels, self.indices = images, labels, indices.to(torch.long)
        self.mean, self.std = list(mean), list(std)
        self.augment = augment

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[tuple[Tensor, Tensor]]:
        # batched fetch (the DataLoader calls this once per batch): gather, scale, augment,
        # normalise whole batches instead of one image at a time
        pos = [k[0] if isinstance(k, tuple) else k for k in keys]
        seeds = [k[1] if isinstance(k, tuple) else None for k in keys]
        j = self.indices[torch.tensor(pos, dtype=torch.long)]
        x = self.images[j]  # (B, C, H, W)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if self.augment is not None and any(s is not None for s in seeds):
            x = self.augment(x, seeds)
        x = TF.normalize(x, self.mean, self.std)
        return list(zip(x.unbind(0), self.labels[j].unbind(0), strict=True))

    def without_augment(self) -> ImageTensorDataset:
        """The same view with augmentation off."""
        return ImageTensorDataset(self.images, self.labels, self.indices, self.mean, self.std)


class HwnasDataModule(DataModule):
    """Base image data module: seeded train/val/test splits and deterministic loaders.

    Subclasses set ``name``, ``input_shape`` (C, H, W), ``num_classes``, ``mean``,
    ``std`` and ``augmentation`` and implement :meth:`load_split`. ``val_size``
    images are held out from the official train split (seeded), ``train_limit`` /
    ``test_limit`` keep a seeded random subset of that size (``None`` = all). The train
    loader drops a ragged last batch unless it is the only one; val and test keep order.
    """

    name: str = ""
    input_shape: tuple[int, int, int] = (0, 0, 0)
    num_classes: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augmentation: Augment | None = None

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        val_size: int = 5000,
        train_limit: int | None = None,
        test_limit: int | None = None,
        augment: bool = True,
        seed: int = 0,
        download: bool = False,
        pin_memory: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_options(
            self.name,
            kwargs,
            {"batch_size": batch_size, "eval_batch_size": eval_batch_size},
            {"train_limit": train_limit, "test_limit": test_limit},
        )
        if int(val_size) < 0 or int(num_workers) < 0:
            raise ValueError("data.val_size and data.num_workers must be >= 0")
        self.data_dir = str(data_dir)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.val_size = int(num_workers), int(val_size)
        self.train_limit = None if train_limit is None else int(train_limit)
        self.test_limit = None if test_limit is None else int(test_limit)
        self.augment, self.seed, self.download = bool(augment), int(seed), bool(download)
        self.pin_memory = bool(pin_memory)
        self.data_train: ImageTensorDataset | None = None
        self.data_val: ImageTensorDataset | None = None
        self.data_test: ImageTensorDataset | None = None

    # -- to implement -------------------------------------------------------------
    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Return the official split as (images (N, C, H, W) uint8 or float, labels (N,))."""
        raise NotImplementedError

    # -- Lightning hooks ----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the three splits once (later calls are no-ops)."""
        if self.data_train is not None:
            return
        images, labels = self._checked(*self.load_split(train=True), "train")
        n = labels.numel()
        if self.val_size >= n:
            raise ValueError(
                f"data.val_size={self.val_size} leaves no training images out of the {n} "
                f"in the {self.name} train split: lower data.val_size"
            )
        perm = torch.randperm(n, generator=seeded_generator(self.seed, "val_split"))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        train_idx = self._limit(train_idx, self.train_limit, "train_limit")
        aug = self.augmentation if self.augment else None
        self.data_train = ImageTensorDataset(images, labels, train_idx, self.mean, self.std, aug)
        self.data_val = ImageTensorDataset(images, labels, val_idx, self.mean, self.std)
        t_images, t_labels = self._checked(*self.load_split(train=False), "test")
        test_idx = self._limit(torch.arange(t_labels.numel()), self.test_limit, "test_limit")
        self.data_test = ImageTensorDataset(t_images, t_labels, test_idx, self.mean, self.std)
        log.info(
            "%s: %d train / %d val / %d test images",
            self.name,
            len(self.data_train),
            len(self.data_val),
            len(self.data_test),
        )

    # -- search-time helpers ------------------------------------------------------
    def calibration_loader(self, num_samples: int, batch_size: int | None = None) -> DataLoader:
        """A fixed seeded subset of ``num_samples`` train images, unaugmented, in fixed order.

        Meant for exact BatchNorm recalibration; asks beyond the train split use all of it.
        """
        data = self._require("data_train")
        pick = self._calibration_pick(num_samples, len(data))
        subset = ImageTensorDataset(
            data.images, data.labels, data.indices[pick], data.mean, data.std
        )
        return self._loader(subset, batch_size or self.batch_size)

    def task(self, label_smoothing: float = 0.0) -> ImageClassification:
        """The task this data feeds (image classification on its shape and classes)."""
        return ImageClassification(
            self.input_shape, self.num_classes, self.mean, self.std, label_smoothing
        )

    def proxy_batch(self, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        """One seeded batch ``(x (B, C, H, W) float, y (B,) int64)`` of unaugmented train data."""
        data = self._require("data_train")
        if not 1 <= batch_size <= len(data):
            raise ValueError(
                f"proxy batch_size={batch_size} must be in 1..{len(data)} (the train split size)"
            )
        pick = torch.randperm(len(data), generator=seeded_generator(seed, "proxy_batch"))
        xs, ys = zip(*data.__getitems__(pick[:batch_size].tolist()), strict=True)
        return torch.stack(xs), torch.stack(ys)

    # -- internals ----------------------------------------------------------------
    def _checked(self, images: Tensor, labels: Tensor, split: str) -> tuple[Tensor, Tensor]:
        if images.shape[1:] != torch.Size(self.input_shape) or images.shape[0] != labels.numel():
            raise ValueError(
                f"{self.name} {split} split has images {tuple(images.shape)} and "
                f"{labels.numel()} labels; expected (N, {', '.join(map(str, self.input_shape))})"
            )
        return images, labels.to(torch.long)
