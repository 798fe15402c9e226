"""The RNN-T front end: log-mel frames subsampled 4x by two strided convolutions and
projected to the encoder width (elastic and static), with its length helpers."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.elastic.transformer.linear import ElasticLinear

FRAMES_PER_SECOND = 100  # 10 ms hop (hwnas.domains.asr.data.speech)


FRAMES_PER_SECOND = 100  # 10 ms hop (hwnas.domains.asr.data.speech)


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the front end: two stride-2 convolutions with padding 1 and kernel 3,
    so ``ceil(ceil(T / 2) / 2)``."""
    return torch.div(torch.div(lengths + 1, 2, rounding_mode="floor") + 1, 2, rounding_mode="floor")


def length_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) bool, True at padding frames (``t >= lengths[b]``)."""
    return torch.arange(frames, device=lengths.device)[None, :] >= lengths[:, None]


def sinusoid(frames: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(frames, dim) sinusoidal positions (Vaswani et al.): sin on even, cos on odd
    channels, wavelengths from 2π to 10000·2π."""
    pos = torch.arange(frames, device=device, dtype=torch.float32)[:, None]
    idx = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    angle = pos * torch.exp(idx * (-math.log(10000.0) / dim))[None, :]  # (frames, ceil(dim/2))
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(frames, -1)
    return pe[:, :dim]


class _FrontEnd(nn.Module):
    """Shared forward of the elastic and static front ends (needs ``conv1``, ``conv2``,
    ``proj``, ``drop``, ``pe_channels`` (the supernet's max embed dim, which sets the
    sinusoid's wavelengths) and the buffer ``pe_index``: the sinusoid channels in use,
    in order)."""

    pe_channels: int

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (B, T, F), (B,) -> (B, T', E), (B,)
        x = features.masked_fill(length_mask(lengths, features.shape[1])[:, :, None], 0.0)
        x = x.transpose(1, 2)  # (B, F, T)
        len1 = torch.div(lengths + 1, 2, rounding_mode="floor")
        x = F.gelu(self.conv1(x))
        x = x.masked_fill(length_mask(len1, x.shape[-1])[:, None, :], 0.0)
        len2 = torch.div(len1 + 1, 2, rounding_mode="floor")
        x = F.gelu(self.conv2(x))
        x = x.masked_fill(length_mask(len2, x.shape[-1])[:, None, :], 0.0)
        x = self.proj(x.transpose(1, 2))  # (B, T', E)
        pe = sinusoid(x.shape[1], self.pe_channels, x.device)
        pe = pe.index_select(1, self.pe_index)[:, : x.shape[-1]]
        return self.drop(x + pe[None]), len2


def _convs(n_mels: int, channels: int) -> tuple[nn.Conv1d, nn.Conv1d]:
    return (
        nn.Conv1d(n_mels, channels, 3, stride=2, padding=1),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
    )


class ElasticFrontEnd(_FrontEnd):
    """Convolutional 4x subsampling (fixed width ``channels``) and an elastic projection
    to the active embed dim; positions are the first ``E`` of ``pe_index``'s sinusoid
    channels (a permutation of ``0..max_embed-1``, reordered with the embed channels)."""

    def __init__(self, n_mels: int, channels: int, max_embed: int, dropout: float):
        super().__init__()
        self.conv1, self.conv2 = _convs(n_mels, channels)
        self.proj = ElasticLinear(channels, max_embed)
        self.drop = nn.Dropout(dropout)
        self.pe_channels = max_embed
        self.register_buffer("pe_index", torch.arange(max_embed))

    def set_active(self, embed: int) -> None:
        self.proj.active_out = embed

    def params(self) -> int:
        convs = sum(p.numel() for m in (self.conv1, self.conv2) for p in m.parameters())
        return convs + self.proj.params()

    def flops(self, frames: int, batch: int = 1) -> int:
        """Both convolutions and the projection for ``frames`` input frames."""
        t1 = (frames + 1) // 2
        t2 = (t1 + 1) // 2
        c, f = self.conv1.out_channels, self.conv1.in_channels
        conv = 2 * batch * 3 * c * (f * t1 + c * t2)
        return conv + self.proj.flops(t2, batch)

    def permute_(self, perm: torch.Tensor) -> None:
        with torch.no_grad():
            self.proj.weight.copy_(self.proj.weight[perm])
            self.proj.bias.copy_(self.proj.bias[perm])
            self.pe_index.copy_(self.pe_index[perm])

    def to_static(self) -> StaticFrontEnd:
        e = self.proj.active_out
        return StaticFrontEnd(
            copy.deepcopy(self.conv1), copy.deepcopy(self.conv2), self.proj.to_static(),
            self.pe_index[:e].clone(), self.pe_channels, self.drop.p,
        )  # fmt: skip


class StaticFrontEnd(_FrontEnd):
    """Plain front end produced by :meth:`ElasticFrontEnd.to_static`."""

    def __init__(
        self, conv1: nn.Conv1d, conv2: nn.Conv1d, proj: nn.Linear, pe_index: torch.Tensor,
        pe_channels: int, dropout: float,
    ):  # fmt: skip
        super().__init__()
        self.conv1, self.conv2, self.proj = conv1, conv2, proj
        self.drop = nn.Dropout(dropout)
        self.pe_channels = int(pe_channels)
        self.register_buffer("pe_index", pe_index.clone())
