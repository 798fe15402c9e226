"""Elastic Vision Transformer: patch embedding + class token + the elastic encoder.

Image (C, H, W) -> non-overlapping ``p x p`` patches projected to the active embed dim
(a stride-``p`` convolution) -> [class token; patches] + learned positions -> the
pre-norm :class:`~hwnas.elastic.transformer.ElasticTransformerEncoder` (GELU by
default, final LayerNorm) -> linear head on the class token.

Genes: ``depth`` (group ``depth``), ``embed`` (group ``embed``, shared by all layers),
and per layer ``heads{i}`` (group ``heads``) and ``mlp{i}`` (MLP ratio: hidden =
round(ratio * embed), group ``mlp``), active only when ``depth > i``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import Network
from hwnas.elastic.base import ElasticModel, Saliency
from hwnas.elastic.transformer.embedding import ElasticPositionEmbedding
from hwnas.elastic.transformer.encoder import (
    ElasticTransformerEncoder,
    EncoderHooks,
    StaticTransformerEncoder,
)
from hwnas.elastic.transformer.linear import ElasticLinear
from hwnas.elastic.transformer.mlp import ACTIVATIONS
from hwnas.spaces.base import Arch, Gene, SearchSpace


class ElasticPatchEmbed(nn.Module):
    """Stride-``p`` ``p x p`` convolution with elastic output channels (embed dim):
    (B, C, H, W) -> (B, N, E) with ``N = (H/p)(W/p)`` patches."""

    def __init__(self, in_channels: int, max_dim: int, patch_size: int):
        super().__init__()
        self.in_channels, self.max_dim, self.patch_size = in_channels, max_dim, patch_size
        p = patch_size
        self.weight = nn.Parameter(torch.empty(max_dim, in_channels, p, p))
        self.bias = nn.Parameter(torch.empty(max_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default
        bound = 1.0 / math.sqrt(in_channels * p * p)
        nn.init.uniform_(self.bias, -bound, bound)
        self.active_dim = max_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, E)
        e = self.active_dim
        y = F.conv2d(x, self.weight[:e], self.bias[:e], stride=self.patch_size)
        return y.flatten(2).transpose(1, 2)

    def params(self) -> int:
        return self.active_dim * (self.in_channels * self.patch_size**2 + 1)

    def flops(self, tokens: int, batch: int = 1) -> int:
        """2 per multiply-add of the convolution (bias not counted), ``tokens`` patches."""
        return 2 * batch * tokens * self.in_channels * self.patch_size**2 * self.active_dim

    def permute_(self, perm: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(self.weight[perm])
            self.bias.copy_(self.bias[perm])

    def to_static(self) -> StaticPatchEmbed:
        e, p = self.active_dim, self.patch_size
        conv = nn.Conv2d(self.in_channels, e, p, stride=p)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:e])
            conv.bias.copy_(self.bias[:e])
        return StaticPatchEmbed(conv)


class StaticPatchEmbed(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, E)
        return self.conv(x).flatten(2).transpose(1, 2)


class StaticViTEmbed(nn.Module):
    """Patches + class token + positions (+ dropout): (B, C, H, W) -> (B, 1 + N, E)."""

    def __init__(self, patch: nn.Module, cls: torch.Tensor, pos: nn.Module, dropout: float):
        super().__init__()
        self.patch, self.pos, self.drop = patch, pos, nn.Dropout(dropout)
        self.cls = nn.Parameter(cls)  # (1, 1, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _embed(self.patch, self.cls, self.pos, self.drop, x)


def _embed(patch, cls: torch.Tensor, pos, drop, x: torch.Tensor) -> torch.Tensor:
    tokens = patch(x)  # (B, N, E)
    cls = cls.expand(tokens.shape[0], -1, -1)  # (B, 1, E)
    return drop(pos(torch.cat([cls, tokens], dim=1)))  # (B, 1 + N, E)


class StaticViT(EncoderHooks, Network):
    """A standalone ViT subnet: embedding, encoder, head. Plain layers only."""

    def __init__(self, embed: StaticViTEmbed, encoder: StaticTransformerEncoder, head: nn.Linear):
        super().__init__()
        self.embed, self.encoder, self.head = embed, encoder, head

    def proxy_blocks(self) -> list[nn.Module]:
        """The encoder layers, in order (the blocks AZ-NAS's proxies read)."""
        return list(self.encoder.layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,1+N,E)
        return self.encoder(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B, classes)
        return self.head(self.forward_features(x)[:, 0])


class ViTHead(nn.Module):
    """Final norm + class-token head, as a measurable latency unit: (B, T, E) -> logits."""

    def __init__(self, norm: nn.Module | None, head: nn.Linear):
        super().__init__()
        self.norm, self.head = norm or nn.Identity(), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x)[:, 0])


class ElasticViT(EncoderHooks, ElasticModel):
    """The elastic ViT supernet and its search space (see the module docstring).

    Defaults are those of ``conf/model/elastic_vit.yaml``. ``forward_features`` returns
    every token after the final LayerNorm, (B, 1 + N, E); the head reads token 0.
    """

    reorder_groups = frozenset({"heads", "mlp", "embed"})

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        num_classes: int = 10,
        patch_size: int = 4,
        embed_choices: Sequence[int] = (64, 96, 128),
        depth_choices: Sequence[int] = (2, 3, 4),
        max_depth: int = 4,
        head_choices: Sequence[int] = (2, 3, 4),
        head_dim: int = 32,
        mlp_ratio_choices: Sequence[float] = (2, 3, 4),
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
    ):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if patch_size < 1 or h % patch_size or w % patch_size:
            raise ValueError(
                f"elastic_vit: image {h}x{w} is not divisible by patch_size {patch_size}; "
                f"pick a patch size dividing both (e.g. 4 for 28x28 and 32x32)"
            )
        if not depth_choices or min(depth_choices) < 1 or max(depth_choices) != max_depth:
            raise ValueError(
                f"elastic_vit: depth_choices {list(depth_choices)} must lie in 1..max_depth "
                f"and include max_depth={max_depth} (deeper layers would never run)"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if min(embed_choices) < 1 or min(head_choices) < 1 or min(mlp_ratio_choices) <= 0:
            raise ValueError("elastic_vit: embed, head and mlp-ratio choices must be positive")
        self.input_shape = (in_channels, h, w)
        self.num_classes, self.patch_size = num_classes, patch_size
        self.num_patches = (h // patch_size) * (w // patch_size)
        self.tokens = self.num_patches + 1  # with the class token
        self.max_embed = max(embed_choices)
        max_hidden = max(self.hidden_dim(e, r) for e in embed_choices for r in mlp_ratio_choices)
        self.patch = ElasticPatchEmbed(in_channels, self.max_embed, patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, self.max_embed))
        nn.init.trunc_normal_(self.cls, std=0.02, a=-0.04, b=0.04)
        self.pos = ElasticPositionEmbedding(self.tokens, self.max_embed)
        self.drop = nn.Dropout(dropout)
        self.encoder = ElasticTransformerEncoder(
            self.max_embed, max_depth, max(head_choices), head_dim, max_hidden,
            norm_first=True, activation=activation, dropout=dropout, attn_dropout=attn_dropout,
        )  # fmt: skip
        self.head = ElasticLinear(self.max_embed, num_classes)
        genes = [
            Gene("depth", tuple(depth_choices), "depth"),
            Gene("embed", tuple(embed_choices), "embed"),
        ]
        for i in range(max_depth):
            cond = None if i < min(depth_choices) else ("depth", i)
            genes.append(Gene(f"heads{i}", tuple(head_choices), "heads", cond))
            genes.append(Gene(f"mlp{i}", tuple(mlp_ratio_choices), "mlp", cond))
        self.space = SearchSpace(
            "elastic_vit",
            genes,
            {  # everything that shapes the network, so the space id tells supernets apart
                "input_shape": list(self.input_shape),
                "num_classes": num_classes,
                "patch_size": patch_size,
                "head_dim": head_dim,
                "activation": activation,
            },
        )
        self._active = self.space.max_arch()
        self.set_active(self._active)

    @staticmethod
    def hidden_dim(embed: int, ratio: float) -> int:
        """MLP hidden units of a layer at ``embed`` channels and MLP ratio ``ratio``."""
        return max(1, int(round(embed * ratio)))

    # ------------------------------------------------------------------ activation
    def set_active(self, arch: Mapping[str, Any]) -> None:
        arch = self.space.validate(arch)
        depth, e = arch["depth"], arch["embed"]
        heads = [arch[f"heads{i}"] for i in range(depth)]
        hidden = [self.hidden_dim(e, arch[f"mlp{i}"]) for i in range(depth)]
        self.patch.active_dim = self.pos.active_dim = e
        self.encoder.set_active(depth, e, heads, hidden)
        self.head.active_in = e
        self._active = arch

    def get_active(self) -> Arch:
        return self._active

    # --------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,1+N,E)
        cls = self.cls[:, :, : self.patch.active_dim]
        return self.encoder(_embed(self.patch, cls, self.pos, self.drop, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B, classes)
        return self.head(self.forward_features(x)[:, 0])

    # ----------------------------------------------------------------------- costs
    def active_params(self) -> int:
        cls = self.patch.active_dim
        return (
            self.patch.params() + cls + self.pos.params()
            + self.encoder.params() + self.head.params()
        )  # fmt: skip

    def active_flops(self, batch_size: int = 1) -> int:
        return (
            self.patch.flops(self.num_patches, batch_size)
            + self.encoder.flops(self.tokens, batch_size)
            + self.head.flops(1, batch_size)
        )

    def latency_unit_keys(self, arch: Mapping[str, Any]) -> list[str]:
        """The keys of :meth:`latency_units`, from the arch alone (no export)."""
        arch = self.space.canonical(arch)
        c, h, w = self.input_shape
        t, e = self.tokens, arch["embed"]
        layers = [
            f"layer:t{t}e{e}h{arch[f'heads{i}']}m{self.hidden_dim(e, arch[f'mlp{i}'])}"
            for i in range(arch["depth"])
        ]
        return [
            f"embed:{c}x{h}x{w}p{self.patch_size}e{e}",
            *layers,
            f"head:t{t}e{e}c{self.num_classes}",
        ]

    def latency_units(self, arch: Mapping[str, Any]) -> list[tuple[str, nn.Module, tuple]]:
        """Embedding at E, one unit per layer keyed by (tokens, E, heads, hidden) --
        equal layers share a key wherever they sit -- and norm + head at E."""
        arch = self.space.canonical(arch)
        sub = self.export(arch)
        c, h, w = self.input_shape
        t, e = self.tokens, arch["embed"]
        units: list[tuple[str, nn.Module, tuple]] = [
            (f"embed:{c}x{h}x{w}p{self.patch_size}e{e}", sub.embed, (c, h, w))
        ]
        for i, layer in enumerate(sub.encoder.layers):
            key = f"layer:t{t}e{e}h{arch[f'heads{i}']}m{self.hidden_dim(e, arch[f'mlp{i}'])}"
            units.append((key, layer, (t, e)))
        head = ViTHead(sub.encoder.norm, sub.head)
        units.append((f"head:t{t}e{e}c{self.num_classes}", head, (t, e)))
        return units

    # ---------------------------------------------------------------------- export
    def export(self, arch: Mapping[str, Any]) -> StaticViT:
        with self.active(arch):
            e = self.patch.active_dim
            embed = StaticViTEmbed(
                self.patch.to_static(),
                self.cls[:, :, :e].detach().clone(),
                self.pos.to_static(),
                self.drop.p,
            )
            encoder, head = self.encoder.to_static(), self.head.to_static()
        return StaticViT(embed, encoder, head).train(self.training)

    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Heads and MLP units per layer (by ``saliency`` when given), then embed
        channels (by the L1 norm of every weight reading them: q/k/v, fc1, head),
        permuted in every tensor that touches the embed dim; the largest network
        computes the same function."""
        self.encoder.reorganize_by_importance(saliency)
        importance = self.encoder.embed_importance() + self.head.weight.detach().abs().sum(0)
        perm = importance.argsort(descending=True)
        self.patch.permute_(perm)
        self.pos.permute_(perm)
        self.encoder.permute_embed_(perm)
        with torch.no_grad():
            self.cls.copy_(self.cls[:, :, perm])
            self.head.weight.copy_(self.head.weight[:, perm])
