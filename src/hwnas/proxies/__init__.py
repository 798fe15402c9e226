"""Train-free proxies (zen, ntk, nuclear_diversity, synflow and classic ones) and the DE-Score.

Importing this package registers every built-in proxy; list them with
:func:`list_proxies` and score with :func:`score_proxy` (always on a deep copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from hwnas.core.types import ProxyInputs
from hwnas.proxies import (  # noqa: F401  (register)
    aznas,
    classic,
    gradient,
    ntk,
    recent,
    transformer,
    zen,
)
from hwnas.proxies.base import (
    NotApplicable,
    ScoreReport,
    get_proxy,
    list_proxies,
    register_proxy,
    register_proxy_group,
    score_proxies,
    score_proxies_report,
    score_proxy,
)
from hwnas.proxies.descore import DEScore


def gaussian_inputs(
    shape: tuple[int, ...] | list[int],
    batch_size: int,
    num_classes: int,
    seed: int,
    device: str | torch.device = "cpu",
) -> ProxyInputs:
    """Data-free proxy inputs: ``x ~ N(0, 1)`` of shape ``(batch_size, *shape)`` and no
    labels (proxies that need labels draw them from their own generator).

    ``shape`` is one sample's shape, without the batch dimension: (C, H, W) for images,
    (T, D) for float sequences. The batch is drawn on the CPU from ``seed`` and then
    moved, so it is the same on every device.
    """
    shape = tuple(int(s) for s in shape)
    if batch_size < 1 or not shape or min(shape) < 1:
        raise ValueError(
            f"gaussian_inputs needs batch_size >= 1 and a per-sample shape of positive "
            f"sizes, got batch_size={batch_size}, shape={shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn((batch_size, *shape), generator=gen).to(device)
    return ProxyInputs(x=x, y=None, num_classes=int(num_classes))


def datamodule_inputs(
    data: Mapping[str, Any] | Any,
    batch_size: int,
    seed: int,
    device: str | torch.device = "cpu",
) -> ProxyInputs:
    """Proxy inputs from real data: ``proxy_batch(batch_size, seed)`` of a datamodule.

    ``data`` is a built datamodule (anything with ``proxy_batch`` and ``num_classes``)
    or its config (the Hydra ``data`` node), which :func:`hwnas.data.build_datamodule`
    turns into one. The labels come with the batch.
    """
    if not hasattr(data, "proxy_batch"):
        from hwnas.data import build_datamodule

        data = build_datamodule(data)
    x, y = data.proxy_batch(int(batch_size), int(seed))
    return ProxyInputs(x=x.to(device), y=y.to(device), num_classes=int(data.num_classes))


__all__ = [
    "DEScore",
    "ProxyInputs",
    "datamodule_inputs",
    "gaussian_inputs",
    "get_proxy",
    "list_proxies",
    "NotApplicable",
    "ScoreReport",
    "register_proxy",
    "register_proxy_group",
    "score_proxies",
    "score_proxies_report",
    "score_proxy",
]
