"""The interface every elastic (weight-sharing) network implements."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hwnas.core.types import Network
from hwnas.spaces.base import Arch, SearchSpace

# loss-based scores of a module's units (heads, hidden units), keyed by the module
Saliency = Mapping[nn.Module, torch.Tensor]


class ElasticModel(Network):
    """A supernet: parameters allocated at the largest size, sliced per active arch.

    Subclasses set ``self.space`` and ``self.input_shape`` (C, H, W without batch) and
    implement the abstract methods. ``active_params``/``active_flops`` report the cost
    of the active arch from per-op formulas, without building the subnet.
    """

    space: SearchSpace
    input_shape: tuple[int, ...]
    # elastic groups whose opening (in progressive shrinking) calls
    # reorganize_by_importance first, so the kept channels/heads are the important ones
    reorder_groups: frozenset[str] = frozenset()
    # seconds of audio in one example input (speech models; None for the others)
    example_seconds: float | None = None

    # -- hooks with defaults (the model side of the domain contract) ---------------
    def importance_units(self) -> list[nn.Module]:
        """The units loss-based importance ranks (a transformer's attention and MLP
        modules, each with ``importance_weights()`` and ``importance_saliency(grads)``);
        ``[]``: the model has none and ranks by weight magnitude only."""
        return []

    def peak_activation_elements(self, arch: Mapping[str, Any]) -> int | None:
        """Peak live activation elements of one sample through subnet ``arch``, computed
        from the layer shapes; ``None``: the cost model traces the exported subnet."""
        return None

    def describe(self) -> dict[str, Any] | None:
        """A space derived from the model (``model=bootstrap``), written as the run's
        ``space.json``; ``None`` for a space declared in config."""
        return None

    @abstractmethod
    def set_active(self, arch: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def get_active(self) -> Arch: ...

    @abstractmethod
    def export(self, arch: Mapping[str, Any]) -> nn.Module:
        """A standalone module with copied weights and the same outputs as the
        supernet with ``arch`` active."""

    @abstractmethod
    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Permute channels so the most important come first (before width shrinks):
        by weight magnitude, or, for the units ``saliency`` scores (a transformer's
        attention and MLP modules, :mod:`hwnas.training.importance`), by those scores."""

    @abstractmethod
    def active_params(self) -> int: ...

    @abstractmethod
    def active_flops(self, batch_size: int = 1) -> int:
        """Floating-point operations (2 per multiply-add) of one forward pass."""

    @abstractmethod
    def latency_units(self, arch: Mapping[str, Any]) -> list[tuple[str, nn.Module, tuple]]:
        """The arch cut into independently measurable pieces: (key, module, input shape
        without batch). Equal keys mean equal pieces; a latency table is keyed by them."""

    def latency_unit_keys(self, arch: Mapping[str, Any]) -> list[str]:
        """The keys of :meth:`latency_units` (a latency table looks them up for every
        searched arch). Override to compute them from the arch alone, without building
        the subnet."""
        return [key for key, _, _ in self.latency_units(arch)]

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple:
        """Positional inputs of a random batch (latency, memory tracing): a float
        Gaussian ``(batch_size, *input_shape)`` unless a model takes other inputs."""
        return (torch.randn((batch_size, *self.input_shape), generator=generator),)

    # The continuous input its train-free proxies see (``None``: ``input_shape``), and
    # the module they score for an exported subnet (models whose input is not
    # continuous, e.g. token ids, cut after their embedding; see docs/proxies.md).
    proxy_shape: tuple[int, ...] | None = None

    def proxy_module(self, sub: nn.Module) -> nn.Module:
        """What train-free proxies score for the exported subnet ``sub``."""
        return sub

    def search_module(self, sub: nn.Module) -> nn.Module:
        """The exported subnet ``sub`` as the search with inherited weights scores it
        (e.g. with a faster decoding than the reported test figures use)."""
        return sub

    @contextmanager
    def active(self, arch: Mapping[str, Any]) -> Iterator[ElasticModel]:
        """Activate ``arch`` for the block, then restore the previous one."""
        prev = self.get_active()
        self.set_active(arch)
        try:
            yield self
        finally:
            self.set_active(prev)

    def cost_of(self, arch: Mapping[str, Any], batch_size: int = 1) -> dict[str, float]:
        with self.active(arch):
            return {
                "params_m": self.active_params() / 1e6,
                "flops_m": self.active_flops(batch_size) / 1e6,
            }
