"""Elastic LayerNorm: normalises the active (leading) embed channels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ElasticLayerNorm(nn.Module):
    """LayerNorm over the last dim, with ``weight``/``bias`` sliced to ``active_dim``."""

    def __init__(self, max_dim: int, eps: float = 1e-6):
        super().__init__()
        self.max_dim, self.eps = max_dim, eps
        self.weight = nn.Parameter(torch.ones(max_dim))
        self.bias = nn.Parameter(torch.zeros(max_dim))
        self.active_dim = max_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        d = self.active_dim
        if d == self.max_dim:
            return F.layer_norm(x, (d,), self.weight, self.bias, self.eps)
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    def params(self) -> int:
        return 2 * self.active_dim

    def flops(self, tokens: int, batch: int = 1) -> int:
        """0: normalisation is not a matrix product (``FlopCounterMode`` counts none)."""
        return 0

    def to_static(self) -> nn.LayerNorm:
        ln = nn.LayerNorm(self.active_dim, eps=self.eps)
        with torch.no_grad():
            ln.weight.copy_(self.weight[: self.active_dim])
            ln.bias.copy_(self.bias[: self.active_dim])
        return ln

    def permute_(self, perm: torch.Tensor) -> None:
        """Reorder the channels in place (all ``max_dim`` of them)."""
        with torch.no_grad():
            self.weight.copy_(self.weight[perm])
            self.bias.copy_(self.bias[perm])

    def extra_repr(self) -> str:
        return f"max_dim={self.max_dim}, eps={self.eps}"
