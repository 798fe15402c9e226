"""The elastic transformer encoder: domain-free, (B, T, E) embeddings in and out.

Elastic depth (the first ``depth`` layers run), one embed dim shared by every layer
(AutoFormer style), heads and MLP hidden dim per layer. Pre-norm (``norm_first=True``,
ViT: ``x + f(LN(x))``, final LayerNorm) or post-norm (BERT: ``LN(x + f(x))``, no final
norm). Domain adapters (ViT, BERT, RNN-T) put their own embedding and head around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hwnas.elastic.base import Saliency
from hwnas.elastic.transformer.attention import ElasticMultiheadAttention, StaticMultiheadAttention
from hwnas.elastic.transformer.layernorm import ElasticLayerNorm
from hwnas.elastic.transformer.mlp import ElasticMLP, StaticMLP


class _Layer(nn.Module):
    """The residual wiring shared by the elastic and the static layer (needs ``norm1``,
    ``attn``, ``norm2``, ``mlp``, ``drop`` and ``norm_first``)."""

    norm_first: bool

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), padding_mask))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, padding_mask)))
        return self.norm2(x + self.drop(self.mlp(x)))


class ElasticTransformerLayer(_Layer):
    """One encoder layer: self-attention and MLP blocks, each with a residual."""

    def __init__(
        self,
        max_embed: int,
        max_heads: int,
        head_dim: int,
        max_hidden: int,
        norm_first: bool = True,
        activation: str = "gelu",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        eps: float = 1e-6,
        mlp_dropout: float | None = None,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = ElasticLayerNorm(max_embed, eps)
        self.attn = ElasticMultiheadAttention(max_embed, max_heads, head_dim, attn_dropout)
        self.norm2 = ElasticLayerNorm(max_embed, eps)
        inner = dropout if mlp_dropout is None else mlp_dropout
        self.mlp = ElasticMLP(max_embed, max_hidden, activation, inner)
        self.drop = nn.Dropout(dropout)

    def set_active(self, embed: int, heads: int, hidden: int) -> None:
        self.norm1.active_dim = self.norm2.active_dim = embed
        self.attn.set_active(embed, heads)
        self.mlp.set_active(embed, hidden)

    def params(self) -> int:
        return self.norm1.params() + self.attn.params() + self.norm2.params() + self.mlp.params()

    def flops(self, tokens: int, batch: int = 1) -> int:
        return self.attn.flops(tokens, batch) + self.mlp.flops(tokens, batch)

    def reorganize(self, saliency: Saliency | None = None) -> None:
        """Heads and hidden units by importance, largest first (function unchanged):
        ``saliency``'s scores for this layer's attention / MLP where it has them, else
        their weight magnitude."""
        saliency = saliency or {}
        heads = saliency.get(self.attn)
        heads = self.attn.head_importance() if heads is None else heads
        units = saliency.get(self.mlp)
        units = self.mlp.neuron_importance() if units is None else units
        self.attn.permute_heads_(heads.argsort(descending=True, stable=True))
        self.mlp.permute_hidden_(units.argsort(descending=True, stable=True))

    def embed_importance(self) -> torch.Tensor:
        """(max_embed,) L1 norm of the weights reading each embed channel (q/k/v, fc1)."""
        qkv, fc1 = self.attn.qkv.weight.detach(), self.mlp.fc1.weight.detach()
        return qkv.abs().sum(dim=0) + fc1.abs().sum(dim=0)

    def permute_embed_(self, perm: torch.Tensor) -> None:
        self.norm1.permute_(perm)
        self.norm2.permute_(perm)
        self.attn.permute_embed_(perm)
        self.mlp.permute_embed_(perm)

    def to_static(self) -> StaticTransformerLayer:
        return StaticTransformerLayer(
            self.norm1.to_static(), self.attn.to_static(), self.norm2.to_static(),
            self.mlp.to_static(), self.norm_first, self.drop.p,
        )  # fmt: skip


class StaticTransformerLayer(_Layer):
    """Plain encoder layer produced by :meth:`ElasticTransformerLayer.to_static`."""

    def __init__(
        self,
        norm1: nn.LayerNorm,
        attn: StaticMultiheadAttention,
        norm2: nn.LayerNorm,
        mlp: StaticMLP,
        norm_first: bool,
        dropout: float,
    ):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp
        self.norm_first, self.drop = norm_first, nn.Dropout(dropout)


class ElasticTransformerEncoder(nn.Module):
    """``max_depth`` elastic layers (+ a final LayerNorm when ``norm_first``).

    ``dropout`` acts on each block's output before its residual and, unless
    ``mlp_dropout`` sets another rate, inside the MLP after its activation (ViT's
    timm MLP); BERT has none inside (``mlp_dropout=0``).

    ``forward(x, padding_mask)``: ``x`` (B, T, E) with ``E`` the active embed dim,
    ``padding_mask`` (B, T) bool with True at padding tokens (or ``None``).
    """

    def __init__(
        self,
        max_embed: int,
        max_depth: int,
        max_heads: int,
        head_dim: int,
        max_hidden: int,
        norm_first: bool = True,
        activation: str = "gelu",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        eps: float = 1e-6,
        mlp_dropout: float | None = None,
    ):
        super().__init__()
        self.max_embed, self.max_depth, self.max_heads = max_embed, max_depth, max_heads
        self.head_dim, self.max_hidden, self.norm_first = head_dim, max_hidden, norm_first
        self.layers = nn.ModuleList(
            ElasticTransformerLayer(
                max_embed,
                max_heads,
                head_dim,
                max_hidden,
                norm_first,
                activation,
                dropout,
                attn_dropout,
                eps,
                mlp_dropout,
            )
            for _ in range(max_depth)
        )
        self.norm = ElasticLayerNorm(max_embed, eps) if norm_first else None
        self.set_active(max_depth, max_embed, [max_heads] * max_depth, [max_hidden] * max_depth)

    def importance_units(self) -> list[nn.Module]:
        """Every layer's attention and MLP module, in order (loss-based importance)."""
        return [unit for layer in self.layers for unit in (layer.attn, layer.mlp)]

    def set_active(
        self, depth: int, embed: int, heads: Sequence[int], hidden: Sequence[int]
    ) -> None:
        """Run the first ``depth`` layers at embed dim ``embed``; layer ``i`` gets
        ``heads[i]`` heads and MLP hidden dim ``hidden[i]`` (``i < depth``)."""
        if not 1 <= depth <= self.max_depth:
            raise ValueError(f"encoder depth {depth} outside 1..{self.max_depth}")
        if len(heads) < depth or len(hidden) < depth:
            raise ValueError(f"need heads and hidden dims for {depth} layers")
        self.active_depth, self.active_embed = depth, embed
        for i in range(depth):
            self.layers[i].set_active(embed, heads[i], hidden[i])
        if self.norm is not None:
            self.norm.active_dim = embed

    def active_layers(self) -> list[ElasticTransformerLayer]:
        return list(self.layers[: self.active_depth])

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        for layer in self.active_layers():
            x = layer(x, padding_mask)
        return x if self.norm is None else self.norm(x)

    def params(self) -> int:
        norm = self.norm.params() if self.norm is not None else 0
        return norm + sum(layer.params() for layer in self.active_layers())

    def flops(self, tokens: int, batch: int = 1) -> int:
        return sum(layer.flops(tokens, batch) for layer in self.active_layers())

    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Sort every layer's heads and MLP units, by ``saliency`` where given (embed
        channels: see :meth:`embed_importance` / :meth:`permute_embed_`, which the owning
        model must apply to its own embed-dim tensors too)."""
        for layer in self.layers:
            layer.reorganize(saliency)

    def embed_importance(self) -> torch.Tensor:
        return sum(layer.embed_importance() for layer in self.layers)

    def permute_embed_(self, perm: torch.Tensor) -> None:
        """Reorder the embed channels of every layer and the final norm in place."""
        for layer in self.layers:
            layer.permute_embed_(perm)
        if self.norm is not None:
            self.norm.permute_(perm)

    def to_static(self) -> StaticTransformerEncoder:
        norm = self.norm.to_static() if self.norm is not None else None
        return StaticTransformerEncoder([layer.to_static() for layer in self.active_layers()], norm)


class StaticTransformerEncoder(nn.Module):
    """Plain encoder produced by :meth:`ElasticTransformerEncoder.to_static`."""

    def __init__(self, layers: Sequence[StaticTransformerLayer], norm: nn.LayerNorm | None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        for layer in self.layers:
            x = layer(x, padding_mask)
        return x if self.norm is None else self.norm(x)


class EncoderHooks:
    """The domain-contract hooks of a model built around one transformer ``encoder``
    (elastic or static): its layers are the hidden layers distillation compares and, for
    an elastic encoder, its attention and MLP modules the units importance ranks."""

    encoder: nn.Module

    def hidden_layers(self) -> list[nn.Module]:
        return list(self.encoder.layers)

    def importance_units(self) -> list[nn.Module]:
        return self.encoder.importance_units()
