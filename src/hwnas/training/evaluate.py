"""Accuracy of subnets that inherit supernet weights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from hwnas.elastic.base import ElasticModel
from hwnas.spaces.base import Arch
from hwnas.tasks.base import Task
from hwnas.training.bn import recalibrate_bn


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor (tuples, lists, dicts)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    first = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return batch_size_of(first)


def take(batch: Any, n: int) -> Any:
    """The first ``n`` samples of a batch of tensors (tuples, lists, dicts kept)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, Mapping):
        return {k: take(v, n) for k, v in batch.items()}
    return type(batch)(take(v, n) for v in batch)


def first_samples(loader: Iterable, n: int) -> list:
    """The first ``n`` samples of ``loader`` as a list of batches."""
    out: list = []
    seen = 0
    for batch in loader:
        out.append(take(batch, n - seen))
        seen += batch_size_of(out[-1])
        if seen >= n:
            break
    return out


class SubnetEvaluator:
    """The task's validation metrics of a subnet with inherited weights after exact BN
    re-estimation on fixed calibration samples (the same for every arch), both on
    ``device`` (the samples stay on the CPU and move batch by batch)."""

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
        """The exported subnet of ``arch`` with recalibrated BN (eval mode, on the
        evaluator's device)."""
        net = self.model.export(arch)
        return recalibrate_bn(net, self.calib, self.calib_samples, self.device)

    def __call__(self, arch: Arch) -> dict[str, float]:
        """Validation metrics of ``arch`` as the search scores it (the model's
        :meth:`~hwnas.elastic.base.ElasticModel.search_module`)."""
        net = self.model.search_module(self.subnet(arch))
        return self.task.evaluate(net, self.val, self.device)
