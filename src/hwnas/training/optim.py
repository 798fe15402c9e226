"""Optimizers from config, and small helpers for task outputs of any structure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

OPTIMIZERS = ("sgd", "adamw")


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r}: choose one of {list(OPTIMIZERS)}")
    return name


def warmup_cosine(done: float, warmup: float, step: float) -> float:
    """Learning-rate factor at ``done`` (the fraction of the schedule gone): linear
    warm-up over its first ``warmup`` (``step``: one step's fraction, so the first step
    already trains), then cosine decay to 0 over the rest."""
    if done < warmup:
        return min(1.0, (done + step) / warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (done - warmup) / (1.0 - warmup))))


def make_optimizer(
    name: str,
    decay: Sequence[torch.nn.Parameter],
    no_decay: Sequence[torch.nn.Parameter],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """SGD (Nesterov when ``momentum > 0``) or AdamW (``momentum`` is beta1); weight
    decay only on ``decay``."""
    groups = [
        {"params": list(decay), "weight_decay": weight_decay},
        {"params": list(no_decay), "weight_decay": 0.0},
    ]
    if check_optimizer(name) == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def detach(outputs: Any) -> Any:
    """``outputs`` (a tensor, or a tuple/list/dict of them) without grad."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, Mapping):
        return {k: detach(v) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(detach(v) for v in outputs)
    return outputs


def batch_size(inputs: Sequence[Any]) -> int:
    """The batch size of a task's model inputs (the first tensor's leading dim)."""
    first = inputs[0]
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else len(first)
