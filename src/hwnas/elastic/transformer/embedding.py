"""Token and learned position embeddings with an elastic embedding dim."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ElasticEmbedding(nn.Module):
    """Lookup table ``(num_embeddings, max_dim)``; ids -> the first ``active_dim``
    channels of their rows (token or segment embeddings)."""

    def __init__(
        self, num_embeddings: int, max_dim: int, padding_idx: int | None = None,
        init_std: float = 0.02,
    ):  # fmt: skip
        super().__init__()
        self.num_embeddings, self.max_dim, self.padding_idx = num_embeddings, max_dim, padding_idx
        self.weight = nn.Parameter(torch.empty(num_embeddings, max_dim))
        nn.init.trunc_normal_(self.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()
        self.active_dim = max_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) int -> (B, T, D)
        return F.embedding(ids, self.weight[:, : self.active_dim], self.padding_idx)

    def params(self) -> int:
        return self.num_embeddings * self.active_dim

    def flops(self, tokens: int, batch: int = 1) -> int:
        """0: a lookup, no arithmetic."""
        return 0

    def permute_(self, perm: torch.Tensor) -> None:
        """Reorder the embedding channels in place."""
        with torch.no_grad():
            self.weight.copy_(self.weight[:, perm])

    def to_static(self) -> nn.Embedding:
        emb = nn.Embedding(self.num_embeddings, self.active_dim, self.padding_idx)
        with torch.no_grad():
            emb.weight.copy_(self.weight[:, : self.active_dim])
        return emb


class ElasticPositionEmbedding(nn.Module):
    """Learned absolute positions ``(max_len, max_dim)`` added to a (B, T, D) input:
    ``x + P[:T, :D]`` with ``D = active_dim``."""

    def __init__(self, max_len: int, max_dim: int, init_std: float = 0.02):
        super().__init__()
        self.max_len, self.max_dim = max_len, max_dim
        self.weight = nn.Parameter(torch.empty(max_len, max_dim))
        nn.init.trunc_normal_(self.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        self.active_dim = max_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return x + self.weight[: x.shape[1], : self.active_dim]

    def params(self) -> int:
        return self.max_len * self.active_dim

    def flops(self, tokens: int, batch: int = 1) -> int:
        """0: an addition, not a matrix product."""
        return 0

    def permute_(self, perm: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(self.weight[:, perm])

    def to_static(self) -> StaticPositionEmbedding:
        return StaticPositionEmbedding(self.weight[:, : self.active_dim].detach().clone())


class StaticPositionEmbedding(nn.Module):
    """Plain learned position embedding (``x + P[:T]``) with a copied table."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return x + self.weight[: x.shape[1]]
