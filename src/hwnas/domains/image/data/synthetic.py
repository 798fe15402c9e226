"""A small, learnable, fully deterministic image data set for fast pipeline tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hwnas.core.seeding import seeded_generator
from hwnas.domains.image.data.base import HwnasDataModule


class SyntheticDataModule(HwnasDataModule):
    """Class prototypes plus Gaussian noise, all drawn from ``seed``.

    Each class has a smooth random prototype (noise drawn at a quarter of the resolution
    and upsampled bilinearly, then standardised); a sample is its class prototype plus
    ``noise`` times standard normal noise, scaled to unit variance. The "official" train
    split holds ``train_size + val_size`` samples (``val_size`` are then held out as
    usual) and the test split ``test_size``. Smaller ``noise`` makes it easier; the
    default is learnt by a linear model in a few dozen steps. ``data_dir``, ``download``
    and ``augment`` are accepted for interface parity and unused (nothing is read, and
    no augmentation is defined).
    """

    name = "synthetic"
    mean = ()
    std = ()

    def __init__(
        self,
        data_dir: str = "",
        shape: Sequence[int] = (1, 16, 16),
        num_classes: int = 10,
        train_size: int = 512,
        val_size: int = 128,
        test_size: int = 128,
        noise: float = 1.0,
        **kwargs: Any,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"data.shape must be [C, H, W] with positive sizes, got {list(shape)}")
        if int(num_classes) < 2 or int(train_size) < 1 or int(test_size) < 1:
            raise ValueError("data.num_classes must be >= 2 and data.train_size/test_size >= 1")
        if float(noise) < 0:
            raise ValueError(f"data.noise must be >= 0, got {noise}")
        self.input_shape = shape  # type: ignore[assignment]
        self.num_classes = int(num_classes)
        self.mean = (0.0,) * shape[0]
        self.std = (1.0,) * shape[0]
        super().__init__(data_dir, val_size=val_size, **kwargs)
        self.train_size, self.test_size, self.noise = int(train_size), int(test_size), float(noise)

    def prototypes(self) -> Tensor:
        """The (num_classes, C, H, W) class prototypes, unit variance each."""
        c, h, w = self.input_shape
        gen = seeded_generator(self.seed, "synthetic", "prototypes")
        low = torch.randn(self.num_classes, c, max(1, h // 4), max(1, w // 4), generator=gen)
        protos = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        protos = protos - protos.mean(dim=(1, 2, 3), keepdim=True)
        return protos / protos.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        n = self.train_size + self.val_size if train else self.test_size
        gen = seeded_generator(self.seed, "synthetic", "train" if train else "test")
        labels = torch.randint(0, self.num_classes, (n,), generator=gen)
        noise = torch.randn(n, *self.input_shape, generator=gen)
        images = (self.prototypes()[labels] + self.noise * noise) / (1.0 + self.noise**2) ** 0.5
        return images, labels  # (N, C, H, W) float32, (N,) int64
