"""Batch statistics synchronised across processes, for the elastic batch norms.

``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (Lightning's ``sync_batchnorm``)
replaces every ``BatchNorm`` with a plain ``SyncBatchNorm`` and so breaks the elastic
ones (their channels are sliced per subnet). The elastic batch norms call
:func:`batch_norm` instead: with :func:`synchronised` on and a process group of more
than one process, a training forward normalises with the mean and variance of the whole
global batch (two exact passes, each one all-reduce with autograd, so gradients flow
through the statistics as in one process with the global batch); otherwise it is
``F.batch_norm``. Running statistics are updated from the global statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F

_STATE = {"sync": False}


@contextmanager
def synchronised(enabled: bool = True) -> Iterator[None]:
    """Within the block, training-mode elastic batch norms use global batch statistics
    when a process group of more than one process is initialised."""
    before = _STATE["sync"]
    _STATE["sync"] = bool(enabled)
    try:
        yield
    finally:
        _STATE["sync"] = before


def active() -> bool:
    return (
        _STATE["sync"]
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def step_factor(bn: torch.nn.modules.batchnorm._BatchNorm) -> float:
    """The running-statistics momentum of this forward of ``bn``, as ``nn.BatchNorm``
    uses it; a training forward with running statistics counts the batch."""
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average
            return 1.0 / float(bn.num_batches_tracked)
    return 0.0 if bn.momentum is None else bn.momentum


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """``F.batch_norm`` with the same arguments; global batch statistics when
    :func:`active` and ``training`` (running statistics then updated in place)."""
    if not (training and active()):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    dims = [0, *range(2, x.ndim)]
    shape = [1, -1] + [1] * (x.ndim - 2)
    local_n = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
    sums = _all_reduce(torch.cat([x.sum(dims), local_n]))
    n = sums[-1]
    mean = sums[:-1] / n
    centred = x - mean.view(shape)
    var = _all_reduce((centred * centred).sum(dims)) / n  # biased, as normalisation uses
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = var.detach() * (n / (n - 1)).clamp(min=1.0)
            running_mean.mul_(1.0 - momentum).add_(momentum * mean.detach())
            running_var.mul_(1.0 - momentum).add_(momentum * unbiased)
    return out


class _SyncedBatchNorm:
    """Mixin: a plain ``BatchNorm`` whose training forward goes through
    :func:`batch_norm` (global statistics under :func:`synchronised`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        self._check_input_dim(x)
        return batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            True, step_factor(self), self.eps,
        )  # fmt: skip


_SYNCED: dict[type, type] = {}


@contextmanager
def plain_batch_norms_synced(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, the plain ``nn.BatchNorm{1,2,3}d`` layers of ``module`` (an
    exported subnet) train with :func:`batch_norm` too; their classes are restored
    afterwards (state dicts are unchanged throughout). ``torch.nn.SyncBatchNorm`` is
    not used: it runs on GPUs only."""
    swapped = []
    for m in module.modules():
        cls = type(m)
        if cls in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d):
            if cls not in _SYNCED:
                _SYNCED[cls] = type(f"Synced{cls.__name__}", (_SyncedBatchNorm, cls), {})
            m.__class__ = _SYNCED[cls]
            swapped.append((m, cls))
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls
