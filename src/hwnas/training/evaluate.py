"""Accuracy of subnets that inherit supernet weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hwnas.elastic.base import ElasticModel
from hwnas.search.objectives import accuracy
from hwnas.spaces.base import Arch
from hwnas.training.bn import recalibrate_bn


def first_samples(loader: Iterable, n: int) -> list:
    """The first ``n`` samples of ``loader`` as a list of (x, y) batches."""
    out: list = []
    seen = 0
    for x, y in loader:
        out.append((x[: n - seen], y[: n - seen]))
        seen += len(out[-1][1])
        if seen >= n:
            break
    return out


class SubnetEvaluator:
    """Validation accuracy of a subnet with inherited weights after exact BN
    re-estimation on fixed calibration images (the same for every arch)."""

    def __init__(
        self,
        model: ElasticModel,
        calibration: Iterable,
        validation: Iterable,
        calib_samples: int,
        device: str | torch.device = "cpu",
    ):
        self.model, self.calib_samples, self.device = model, calib_samples, device
        self.calib = list(calibration)
        self.val = list(validation)

    def subnet(self, arch: Arch) -> torch.nn.Module:
        """The exported subnet of ``arch`` with recalibrated BN (eval mode)."""
        net = self.model.export(arch)
        return recalibrate_bn(net, self.calib, self.calib_samples, self.device)

    def __call__(self, arch: Arch) -> float:
        return accuracy(self.subnet(arch), self.val, self.device)
