"""Fashion-MNIST from its idx files: ``data_dir``, torchvision's layout, or Debian's package."""

from __future__ import annotations

import gzip
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets

from hwnas.domains.image.data.base import Augment, HwnasDataModule

log = logging.getLogger(__name__)

# where `apt-get install dataset-fashion-mnist` puts the four .gz files
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_STEMS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> Tensor:
    """Parse an idx file (optionally gzipped) into a tensor of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an idx file (bad magic number): re-install or re-download it"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape))
    if len(raw) != 4 + 4 * ndim + count * dtype.itemsize:
        raise ValueError(f"{path} is truncated or corrupt: re-install or re-download it")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True).reshape(shape))


def _find(directory: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


class FashionMNISTDataModule(HwnasDataModule):
    """Fashion-MNIST (1, 28, 28), 10 classes, 60,000 train / 10,000 test images.

    The idx files (``.gz`` or not) are looked for in ``data_dir``, then in
    ``data_dir/FashionMNIST/raw`` (what torchvision downloads), then in ``system_dir``
    (Debian's ``dataset-fashion-mnist``; ``None`` turns that off). Train augmentation is a
    pad-2 random crop only: no flip, since the footwear classes all face one way and a
    mirrored shoe is an image the test set never shows.

    ``image_size`` > 28 pads every image with background (black) pixels to that square
    size, centred: e.g. 32 for networks whose five stride-2 stages want a multiple of 32
    (MobileNetV2 and other ImageNet models in ``model=bootstrap``).
    """

    reads_data_dir = True

    name = "fashion_mnist"
    input_shape = (1, 28, 28)
    num_classes = 10
    # mean and std of the 60,000 training images, pixel values in [0, 1]
    mean = (0.2860,)
    std = (0.3530,)
    augmentation = Augment(pad=2, hflip=False)

    def __init__(
        self,
        data_dir: str,
        system_dir: str | None = DEBIAN_DIR,
        image_size: int = 28,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.system_dir = system_dir
        if int(image_size) < 28:
            raise ValueError(
                f"data.image_size={image_size} is below Fashion-MNIST's 28 pixels: images "
                "are padded, never cropped; use 28 or more"
            )
        self.image_size = int(image_size)
        self.input_shape = (1, self.image_size, self.image_size)

    def candidate_dirs(self) -> list[str]:
        """The folders searched for the idx files, in order."""
        dirs = [self.data_dir, os.path.join(self.data_dir, "FashionMNIST", "raw")]
        return dirs + ([self.system_dir] if self.system_dir else [])

    def find_files(self) -> dict[bool, tuple[str, str]] | None:
        """The first folder holding all four files, as {train: (images, labels)}."""
        for directory in self.candidate_dirs():
            found = {
                split: tuple(_find(directory, s) for s in stems) for split, stems in _STEMS.items()
            }
            if all(p is not None for pair in found.values() for p in pair):
                return found  # type: ignore[return-value]
        return None

    def prepare_data(self) -> None:
        if self.download and self.find_files() is None:
            datasets.FashionMNIST(self.data_dir, train=True, download=True)
            datasets.FashionMNIST(self.data_dir, train=False, download=True)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        files = self.find_files()
        if files is None and self.download:
            self.prepare_data()
            files = self.find_files()
        if files is None:
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {', '.join(self.candidate_dirs())}: run "
                f"`apt-get install dataset-fashion-mnist`, or pass data.download=true with "
                f"internet access"
            )
        image_path, label_path = files[train]
        log.info("fashion_mnist: reading %s", os.path.dirname(image_path))
        images, labels = read_idx(image_path), read_idx(label_path)
        images = images.unsqueeze(1)  # (N, 1, 28, 28)
        extra = self.image_size - images.shape[-1]
        if extra > 0:  # centred, background (0) pixels
            lo = extra // 2
            images = torch.nn.functional.pad(images, (lo, extra - lo, lo, extra - lo))
        return images, labels.long()  # (N, 1, image_size, image_size), (N,)
