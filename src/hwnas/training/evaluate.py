"""Accuracy of subnets that inherit supernet weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hwnas.elastic.base import ElasticModel
from hwnas.spaces.base import Arch
from hwnas.tasks import Task
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
    """The task's validation metrics of a subnet with inherited weights after exact BN
    re-estimation on fixed calibration samples (the same for every arch)."""

    def __init__(
        self,
        model: ElasticModel,
        task: Task,
        calibration: Iterable,
        validation: Iterable,
        calib_samples: int,
        device: str | torch.device = "cpu",
    ):
        self.model, self.task = model, task
        self.calib_samples, self.device = calib_samples, device
        self.calib = list(calibration)
        self.val = list(validation)

    def subnet(self, arch: Arch) -> torch.nn.Module:
        """The exported subnet of ``arch`` with recalibrated BN (eval mode)."""
        net = self.model.export(arch)
        return recalibrate_bn(net, self.calib, self.calib_samples, self.device)

    def __call__(self, arch: Arch) -> dict[str, float]:
        return self.task.evaluate(self.subnet(arch), self.val, self.device)
