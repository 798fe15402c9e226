"""Elastic residual CNN for small images (CIFAR-10, FashionMNIST).

Stem conv -> stages of inverted-residual blocks (1x1 expand, depthwise kxk, 1x1
project, identity shortcut when shapes allow) -> global pool -> linear head.
Elastic per block: kernel (depthwise k in ``kernel_choices``), width (expand ratio in
``expand_choices``); elastic per stage: depth (the first ``d`` blocks run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import Network
from hwnas.elastic.base import ElasticModel, Saliency
from hwnas.elastic.ops import (
    DynamicBatchNorm2d,
    DynamicDepthwiseConv2d,
    DynamicPointwiseConv2d,
    permute_bn_,
)
from hwnas.spaces.base import Arch, Gene, SearchSpace


def conv_out_size(size: int, stride: int, kernel: int = 3) -> int:
    """Output size of a 'same'-padded (``kernel // 2``) convolution of ``size`` pixels."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class ElasticBlock(nn.Module):
    """Inverted-residual block with elastic kernel and expand ratio."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        kernel_choices: Sequence[int],
        expand_choices: Sequence[int],
    ):
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.max_mid = in_ch * max(expand_choices)
        self.expand = DynamicPointwiseConv2d(in_ch, self.max_mid)
        self.bn1 = DynamicBatchNorm2d(self.max_mid)
        self.dw = DynamicDepthwiseConv2d(self.max_mid, tuple(kernel_choices), stride)
        self.bn2 = DynamicBatchNorm2d(self.max_mid)
        self.project = DynamicPointwiseConv2d(self.max_mid, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.set_active(max(kernel_choices), max(expand_choices))

    def set_active(self, kernel: int, expand: int) -> None:
        mid = self.in_ch * expand
        self.active_kernel, self.active_mid = kernel, mid
        self.expand.active_out = mid
        self.dw.active_channels, self.dw.active_kernel = mid, kernel
        self.project.active_in = mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, H/s, W/s)
        h = F.relu(self.bn1(self.expand(x)))
        h = F.relu(self.bn2(self.dw(h)))
        h = self.bn3(self.project(h))
        return h + x if self.residual else h

    def params(self) -> int:
        mid = self.active_mid
        bn = 2 * (mid + mid + self.out_ch)
        return self.expand.params() + self.dw.params() + self.project.params() + bn

    def flops(self, in_hw: int, batch: int = 1) -> int:
        out_hw = conv_out_size(in_hw, self.stride)
        return (
            self.expand.flops((in_hw, in_hw), batch)
            + self.dw.flops((out_hw, out_hw), batch)
            + self.project.flops((out_hw, out_hw), batch)
        )

    def importance_order(self) -> torch.Tensor:
        """Mid channels by L1 norm of the consuming (project) weights, largest first."""
        return self.project.weight.detach().abs().sum(dim=(0, 2, 3)).argsort(descending=True)

    def reorganize(self) -> None:
        perm = self.importance_order()
        with torch.no_grad():
            self.expand.weight.copy_(self.expand.weight[perm])
            self.dw.weight.copy_(self.dw.weight[perm])
            self.project.weight.copy_(self.project.weight[:, perm])
        permute_bn_(self.bn1, perm)
        permute_bn_(self.bn2, perm)

    def to_static(self) -> StaticBlock:
        mid = self.active_mid
        bn3 = nn.BatchNorm2d(self.out_ch, self.bn3.eps, self.bn3.momentum)
        bn3.load_state_dict(self.bn3.state_dict())
        return StaticBlock(
            self.expand.to_static(),
            self.bn1.to_static(mid),
            self.dw.to_static(),
            self.bn2.to_static(mid),
            self.project.to_static(),
            bn3,
            self.residual,
        )


class StaticBlock(nn.Module):
    """Plain-layer inverted-residual block produced by :meth:`ElasticBlock.to_static`."""

    def __init__(self, expand, bn1, dw, bn2, project, bn3, residual: bool):
        super().__init__()
        self.expand, self.bn1, self.dw, self.bn2 = expand, bn1, dw, bn2
        self.project, self.bn3, self.residual = project, bn3, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.expand(x)))
        h = F.relu(self.bn2(self.dw(h)))
        h = self.bn3(self.project(h))
        return h + x if self.residual else h


class StaticCNN(Network):
    """A standalone subnet: stem, the chosen blocks, pool, head. Plain layers only."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Linear):
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.Sequential(*blocks), head

    def probe_kinds(self) -> frozenset[str]:
        """Convolutions only: no attention, token mixer or FFN to report."""
        return frozenset()

    def proxy_blocks(self) -> list[nn.Module]:
        """The inverted-residual blocks, in order (the blocks AZ-NAS's proxies read)."""
        return list(self.blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C',h,w)
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B, classes)
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


class ElasticCNN(ElasticModel):
    """The elastic CNN supernet and its search space (genes ``d{s}``, ``k{s}_{b}``,
    ``e{s}_{b}``: depth of stage s, kernel and expand ratio of block b of stage s)."""

    reorder_groups = frozenset({"width"})

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        stem_channels: int = 16,
        stem_stride: int = 1,
        stage_channels: Sequence[int] = (24, 40, 80),
        stage_strides: Sequence[int] = (2, 2, 2),
        max_depth: Sequence[int] = (3, 3, 3),
        depth_choices: Sequence[int] = (1, 2, 3),
        kernel_choices: Sequence[int] = (3, 5, 7),
        expand_choices: Sequence[int] = (2, 4, 6),
    ):
        super().__init__()
        if not (len(stage_channels) == len(stage_strides) == len(max_depth)):
            raise ValueError("stage_channels, stage_strides and max_depth need equal lengths")
        if max(depth_choices) > min(max_depth) or min(depth_choices) < 1:
            raise ValueError(f"depth_choices {list(depth_choices)} must lie in 1..min(max_depth)")
        self.input_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        self.depth_choices = tuple(depth_choices)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList()
        genes: list[Gene] = []
        in_ch = stem_channels
        for s, (out_ch, stride, depth) in enumerate(zip(stage_channels, stage_strides, max_depth)):
            blocks = [
                ElasticBlock(
                    in_ch if b == 0 else out_ch,
                    out_ch,
                    stride if b == 0 else 1,
                    kernel_choices,
                    expand_choices,
                )
                for b in range(depth)
            ]
            self.stages.append(nn.ModuleList(blocks))
            genes.append(Gene(f"d{s}", tuple(d for d in depth_choices if d <= depth), "depth"))
            for b in range(depth):
                cond = None if b == 0 else (f"d{s}", b)
                genes.append(Gene(f"k{s}_{b}", tuple(kernel_choices), "kernel", cond))
                genes.append(Gene(f"e{s}_{b}", tuple(expand_choices), "width", cond))
            in_ch = out_ch
        self.head = nn.Linear(in_ch, num_classes)
        self.space = SearchSpace(
            "elastic_cnn",
            genes,
            {  # everything that shapes the network, so the space id tells supernets apart
                "input_shape": list(self.input_shape),
                "num_classes": num_classes,
                "stem": [stem_channels, stem_stride],
                "stages": [list(stage_channels), list(stage_strides), list(max_depth)],
            },
        )
        self._active = self.space.max_arch()
        self.set_active(self._active)

    def peak_activation_elements(self, arch: Mapping[str, Any]) -> int:
        """Computed from the layer shapes, without building the subnet."""
        return cnn_peak_elements(self, arch)

    # ------------------------------------------------------------------ activation

    def set_active(self, arch: Mapping[str, Any]) -> None:
        arch = self.space.validate(arch)
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                block.set_active(arch[f"k{s}_{b}"], arch[f"e{s}_{b}"])
        self._active = arch

    def get_active(self) -> Arch:
        return self._active

    def _active_blocks(self) -> list[ElasticBlock]:
        return [blk for s, st in enumerate(self.stages) for blk in st[: self._active[f"d{s}"]]]

    # --------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C',h,w)
        x = self.stem(x)
        for block in self._active_blocks():
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B, classes)
        return self.head(self.forward_features(x).mean(dim=(2, 3)))

    # ----------------------------------------------------------------------- costs
    def active_params(self) -> int:
        stem = sum(p.numel() for p in self.stem.parameters())
        head = sum(p.numel() for p in self.head.parameters())
        return stem + head + sum(b.params() for b in self._active_blocks())

    def active_flops(self, batch_size: int = 1) -> int:
        conv = self.stem[0]
        size = conv_out_size(self.input_shape[1], conv.stride[0])
        total = 2 * batch_size * size * size * conv.in_channels * conv.out_channels * 9
        for block in self._active_blocks():
            total += block.flops(size, batch_size)
            size = conv_out_size(size, block.stride)
        return total + 2 * batch_size * self.head.in_features * self.head.out_features

    def latency_units(self, arch: Mapping[str, Any]) -> list[tuple[str, nn.Module, tuple]]:
        sub = self.export(arch)
        c, size = self.input_shape[0], self.input_shape[1]
        units: list[tuple[str, nn.Module, tuple]] = [
            (f"stem:{c}x{size}", sub.stem, (c, size, size))
        ]
        c, size = self.stem[0].out_channels, conv_out_size(size, self.stem[0].stride[0])
        arch = self.space.canonical(arch)
        for s, stage in enumerate(self.stages):
            for b in range(arch[f"d{s}"]):
                blk = stage[b]
                key = f"s{s}b{min(b, 1)}:k{arch[f'k{s}_{b}']}e{arch[f'e{s}_{b}']}"
                units.append((key, sub.blocks[len(units) - 1], (c, size, size)))
                c, size = blk.out_ch, conv_out_size(size, blk.stride)
        units.append((f"head:{c}x{size}", _Head(sub.head), (c, size, size)))
        return units

    # ---------------------------------------------------------------------- export
    def latency_unit_keys(self, arch: Mapping[str, Any]) -> list[str]:
        """The keys of :meth:`latency_units`, from the arch alone (no export)."""
        arch = self.space.canonical(arch)
        c, size = self.input_shape[0], self.input_shape[1]
        keys = [f"stem:{c}x{size}"]
        size = conv_out_size(size, self.stem[0].stride[0])
        for s, stage in enumerate(self.stages):
            for b in range(arch[f"d{s}"]):
                keys.append(f"s{s}b{min(b, 1)}:k{arch[f'k{s}_{b}']}e{arch[f'e{s}_{b}']}")
                size = conv_out_size(size, stage[b].stride)
        return keys + [f"head:{self.head.in_features}x{size}"]

    def export(self, arch: Mapping[str, Any]) -> StaticCNN:
        with self.active(arch):
            stem = nn.Sequential(
                nn.Conv2d(
                    self.stem[0].in_channels,
                    self.stem[0].out_channels,
                    3,
                    self.stem[0].stride,
                    1,
                    bias=False,
                ),
                nn.BatchNorm2d(self.stem[1].num_features, self.stem[1].eps, self.stem[1].momentum),
                nn.ReLU(inplace=True),
            )
            stem.load_state_dict(self.stem.state_dict())
            blocks = [b.to_static() for b in self._active_blocks()]
            head = nn.Linear(self.head.in_features, self.head.out_features)
            head.load_state_dict(self.head.state_dict())
        sub = StaticCNN(stem, blocks, head)
        return sub.train(self.training)

    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Each block's channels by weight magnitude (``saliency`` is for transformer
        units; the CNN has none and ignores it)."""
        for stage in self.stages:
            for block in stage:
                block.reorganize()


class _Head(nn.Module):
    """Pool + linear, as a measurable latency unit."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


def cnn_peak_elements(model: ElasticCNN, arch: Mapping[str, Any]) -> int:
    """Peak live activation elements of one image through ``model``'s subnet ``arch``."""
    arch = model.space.canonical(arch)
    c_in, size = model.input_shape[0], model.input_shape[1]
    image = c_in * size * size
    conv = model.stem[0]
    size = conv_out_size(size, conv.stride[0])
    stem_out = conv.out_channels * size * size
    # stem conv (image -> x), then BN (x -> x'), ReLU in place
    peak = max(image + stem_out, image + 2 * stem_out)
    x = stem_out
    for s, stage in enumerate(model.stages):
        for b in range(arch[f"d{s}"]):
            block = stage[b]
            mid = block.in_ch * arch[f"e{s}_{b}"]
            out_size = conv_out_size(size, block.stride)
            mid_in, mid_out = mid * size * size, mid * out_size * out_size
            out = block.out_ch * out_size * out_size
            layer = max(
                2 * mid_in,  # expand output -> BN1 -> ReLU
                mid_in + mid_out,  # depthwise conv
                2 * mid_out,  # BN2 -> ReLU
                mid_out + out,  # project conv
                2 * out,  # BN3, shortcut add
            )
            peak = max(peak, image + x + layer)
            x, size = out, out_size
    pooled = model.head.in_features
    return max(peak, image + x + pooled, image + pooled + model.head.out_features)
