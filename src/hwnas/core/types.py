"""Types shared by every floor: what a proxy or a timing looks at."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "Network", "ProxyInputs", "Timing", "hidden_layers_of", "probe_kinds", "proxy_blocks",
    "to_plain",
]  # fmt: skip


@dataclass
class ProxyInputs:
    """What a proxy may look at: an input batch, optional labels, the class count.

    ``x`` is a float batch shaped like the model's input (B, C, H, W) for CNNs or
    (B, T, D) for sequence models. ``y`` holds integer labels (B,) or ``None`` for the
    data-free case; proxies that need labels then draw them from their generator.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    num_classes: int = 10


class Network(nn.Module):
    """The hooks generic code may call on a network hwnas built (an elastic supernet, a
    subnet exported from one, a NAS-Bench-201 cell network), each with a default, so no
    layer above has to probe a model's class or attributes.

    Proxies and trainings also take plain ``nn.Module`` objects (a user's model): for
    those, the defaults below are what they get.
    """

    def proxy_blocks(self) -> list[nn.Module] | None:
        """The blocks the AZ-NAS proxies score, in the order they run (``None``: let the
        proxy find the longest run of parameterised children)."""
        return None

    def hidden_layers(self) -> list[nn.Module]:
        """The encoder layers whose outputs hidden-state distillation compares (``[]``:
        the network has none, e.g. a CNN)."""
        return []

    def probe_kinds(self) -> frozenset[str] | None:
        """The :mod:`hwnas.core.probe` record kinds this network's layers report
        (``None``: not declared, a proxy runs the network to see). A CNN declares
        ``frozenset()``, so the transformer proxies say "not applicable" without a pass."""
        return None


def proxy_blocks(model: nn.Module) -> list[nn.Module] | None:
    """``model.proxy_blocks()`` for a :class:`Network`, or for a user's own module that
    defines that method (the documented way to name its blocks); else ``None``."""
    if isinstance(model, Network):
        return model.proxy_blocks()
    own = getattr(model, "proxy_blocks", None)  # a user's module, not one of hwnas's
    return list(own()) if callable(own) else None


def probe_kinds(model: nn.Module) -> frozenset[str] | None:
    """``model.probe_kinds()`` for a :class:`Network` (or a user's module defining it),
    else ``None`` (not declared)."""
    if isinstance(model, Network):
        return model.probe_kinds()
    own = getattr(model, "probe_kinds", None)
    return frozenset(own()) if callable(own) and own() is not None else None


def hidden_layers_of(model: nn.Module) -> list[nn.Module]:
    """``model.hidden_layers()`` for a :class:`Network`, ``[]`` for any other module."""
    return model.hidden_layers() if isinstance(model, Network) else []


def to_plain(value: Any) -> Any:
    """A config node as plain data: mappings as dicts, sequences (not strings) as lists,
    recursively; reading an OmegaConf node's values resolves its interpolations, so a
    library gets what ``OmegaConf.to_container(node, resolve=True)`` would give without
    importing OmegaConf (only the app floor sees it)."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [to_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Timing:
    """How a latency is measured, the one home of these six settings and their
    defaults: the ``device``, the runtime ``backend`` (torch | onnxruntime | openvino), the CPU
    intra-op ``threads`` (None: leave PyTorch's setting), the ``batch_size`` of the
    timed batch, the untimed ``warmup`` runs and the timed ``repeats`` (whose median is
    reported). The hardware cost models, the final report and the quantize stage time
    with it."""

    device: str = "cpu"
    backend: str = "torch"
    threads: int | None = 1
    batch_size: int = 1
    warmup: int = 5
    repeats: int = 20

    def kwargs(self) -> dict[str, Any]:
        """The six settings as keyword arguments (``measure_latency(module, x, **...)``)."""
        return asdict(self)
