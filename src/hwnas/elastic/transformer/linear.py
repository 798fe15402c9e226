"""Elastic linear layer: weight allocated at (max_out, max_in), sliced to the active size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ElasticLinear(nn.Module):
    """``y = x W[:out, :in]ᵀ + b[:out]`` with elastic input and output features.

    ``active_in``/``active_out`` are set by the owning layer; the leading slices of the
    allocated weight are used, so the most important units must come first (see the
    ``reorganize`` methods of the layers that own one).
    """

    def __init__(self, max_in: int, max_out: int, bias: bool = True, init_std: float = 0.02):
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.trunc_normal_(self.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        self.active_in, self.active_out = max_in, max_out

    def active_weight(self) -> torch.Tensor:
        if (self.active_out, self.active_in) == (self.max_out, self.max_in):
            return self.weight  # no slice node: the largest net trains as fast as a plain one
        return self.weight[: self.active_out, : self.active_in]

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.active_out == self.max_out:
            return self.bias
        return self.bias[: self.active_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return F.linear(x, self.active_weight(), self.active_bias())

    def params(self) -> int:
        return self.active_out * self.active_in + (self.active_out if self.bias is not None else 0)

    def flops(self, tokens: int, batch: int = 1) -> int:
        """2 per multiply-add over ``batch * tokens`` rows (the bias add is not counted,
        as ``FlopCounterMode`` counts ``addmm`` as its matrix product)."""
        return 2 * batch * tokens * self.active_in * self.active_out

    def to_static(self) -> nn.Linear:
        lin = nn.Linear(self.active_in, self.active_out, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.active_weight())
            if self.bias is not None:
                lin.bias.copy_(self.active_bias())
        return lin

    def extra_repr(self) -> str:
        return f"max_in={self.max_in}, max_out={self.max_out}, bias={self.bias is not None}"
