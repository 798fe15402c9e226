"""Exact BatchNorm recalibration for subnets that inherit supernet weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate_bn(
    module: nn.Module,
    batches: Iterable,
    num_samples: int,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Reset every BN layer's statistics and re-estimate them as the exact average over
    ``num_samples`` training images (cumulative average, ``momentum=None``) on ``device``;
    the module is returned in eval mode, on ``device`` (with or without BN layers).
    Weights are untouched."""
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return module.eval().to(device)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train().to(device)
    seen = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x[: num_samples - seen].to(device)
        module(x)
        seen += x.shape[0]
        if seen >= num_samples:
            break
    if seen == 0:
        raise ValueError("BN recalibration got no samples: check the calibration loader")
    for bn, m in zip(bns, saved):
        bn.momentum = m
    return module.eval()


def inherited_label(module: nn.Module) -> str:
    """How inherited weights were scored: ``inherited supernet weights`` (+ ``, BN
    recalibrated`` when ``module`` has BatchNorm layers, as they then were)."""
    has_bn = any(isinstance(m, _BatchNorm) for m in module.modules())
    return "inherited supernet weights" + (", BN recalibrated" if has_bn else "")
