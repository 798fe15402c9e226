"""CIFAR-10 through torchvision's loader (the official python pickles)."""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import torch
from torch import Tensor
from torchvision import datasets

from hwnas.domains.image.data.base import Augment, HwnasDataModule

log = logging.getLogger(__name__)

BASE_FOLDER = datasets.CIFAR10.base_folder  # "cifar-10-batches-py"
FILES = [n for n, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list] + [
    datasets.CIFAR10.meta["filename"]
]


def missing_files(root: str) -> list[str]:
    """The CIFAR-10 python files absent from ``<root>/cifar-10-batches-py``."""
    return [n for n in FILES if not os.path.isfile(os.path.join(root, BASE_FOLDER, n))]


class _PresenceCheckedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10 that checks the files exist instead of their md5 sums.

    Used only with ``verify=False``: for a hand-built copy in the official format (such
    as the test fixture), whose checksums necessarily differ from the official ones.
    """

    def _check_integrity(self) -> bool:
        return not missing_files(str(self.root))

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class CIFAR10DataModule(HwnasDataModule):
    """CIFAR-10 (3, 32, 32), 10 classes; train augmentation: pad-4 random crop + flip.

    Needs ``<data_dir>/cifar-10-batches-py/`` (torchvision's layout) or ``download=True``
    with internet access. ``verify=False`` skips torchvision's md5 check (hand-built
    copies only); the files must still be present.
    """

    reads_data_dir = True

    name = "cifar10"
    input_shape = (3, 32, 32)
    num_classes = 10
    # per-channel mean and std of the 50,000 training images, pixel values in [0, 1]
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    augmentation = Augment(pad=4, hflip=True)

    def __init__(self, data_dir: str, verify: bool = True, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.verify = bool(verify)

    def prepare_data(self) -> None:
        if self.download and missing_files(self.data_dir):
            datasets.CIFAR10(self.data_dir, train=True, download=True)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        missing = missing_files(self.data_dir)
        if missing and self.download:
            self.prepare_data()
        elif missing:
            what = "not found" if len(missing) == len(FILES) else f"incomplete (no {missing[0]})"
            raise FileNotFoundError(
                f"CIFAR-10 {what} under {os.path.abspath(self.data_dir)}: pass "
                f"data.download=true with internet access, or put {BASE_FOLDER}/ there"
            )
        cls = datasets.CIFAR10 if self.verify else _PresenceCheckedCIFAR10
        try:
            ds = cls(self.data_dir, train=train, download=False)
        except RuntimeError as err:  # torchvision's md5 check failed
            raise RuntimeError(
                f"CIFAR-10 under {os.path.abspath(self.data_dir)} fails torchvision's md5 check: "
                f"re-download it with data.download=true, or pass data.verify=false "
                f"for a hand-built copy"
            ) from err
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return images, torch.tensor(ds.targets, dtype=torch.long)
