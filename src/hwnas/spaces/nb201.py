"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR'20).

A cell is a DAG of 4 nodes; each of its 6 edges ``j -> i`` (``j < i``) carries one of
5 operations, giving 5**6 = 15,625 architectures. The macro skeleton is fixed: a
3x3 stem conv + BN, three stages of ``N`` cells with ``C``, ``2C`` and ``4C``
channels separated by ResNet reduction blocks (stride 2), then BN + ReLU, global
average pooling and a linear classifier.

The standard arch string lists the edges into node 1, 2 and 3 in turn:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` where ``op~j`` is the op on edge ``j -> i``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hwnas.core.types import Network
from hwnas.spaces.base import Arch, Gene, SearchSpace
from hwnas.spaces.parsing import register_arch_parser

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
# (to, from) for every edge, in arch-string order.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NUM_NODES) for j in range(i))
GENE_NAMES: tuple[str, ...] = tuple(f"edge_{i}_{j}" for i, j in EDGES)
INPUT_SHAPE: tuple[int, int, int] = (3, 32, 32)


def nb201_space() -> SearchSpace:
    """The 6-gene NAS-Bench-201 space; each gene's choices are the 5 op names."""
    genes = [Gene(name, OPS, group="op") for name in GENE_NAMES]
    return SearchSpace("nb201", genes, meta={"num_nodes": NUM_NODES, "ops": list(OPS)})


# ------------------------------------------------------------------- arch strings
def arch_to_str(arch: Mapping[str, Any]) -> str:
    """The standard NAS-Bench-201 string of ``arch``."""
    nodes = []
    for i in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{_op(arch, i, j)}~{j}" for j in range(i)) + "|")
    return "+".join(nodes)


def str_to_arch(text: str) -> Arch:
    """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` into an :class:`Arch`."""
    text = str(text).strip()
    nodes = text.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(
            f"NAS-Bench-201 string {text!r} has {len(nodes)} nodes, expected "
            f"{NUM_NODES - 1} joined by '+', like '|nor_conv_3x3~0|+|none~0|skip_connect~1|+...'"
        )
    values: dict[str, str] = {}
    for i, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"node {i} of {text!r} must start and end with '|': {node!r}")
        parts = node[1:-1].split("|")
        if len(parts) != i:
            raise ValueError(f"node {i} of {text!r} needs {i} inputs, got {len(parts)}")
        for j, part in enumerate(parts):
            op, sep, src = part.partition("~")
            if not sep or src != str(j):
                raise ValueError(f"edge {part!r} in node {i} of {text!r} should read 'op~{j}'")
            if op not in OPS:
                raise ValueError(f"unknown op {op!r} in {text!r}; choose from {list(OPS)}")
            values[f"edge_{i}_{j}"] = op
    return Arch([(name, values[name]) for name in GENE_NAMES])


def _op(arch: Mapping[str, Any], i: int, j: int) -> str:
    op = arch[f"edge_{i}_{j}"]
    if op not in OPS:
        raise ValueError(f"unknown op {op!r} on edge {j}->{i}; choose from {list(OPS)}")
    return op


# ------------------------------------------------------------------------ modules
class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BN, the NAS-Bench-201 ``nor_conv`` op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the input's shape (keeps the graph connected)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """One stride-1 cell op with ``channels`` in and out."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}; choose from {list(OPS)}")


class NB201Cell(nn.Module):
    """A searched cell: node i = sum over j < i of op_{i,j}(node j); output node 3."""

    def __init__(self, arch: Mapping[str, Any], channels: int):
        super().__init__()
        self.edges = nn.ModuleDict(
            {f"edge_{i}_{j}": make_op(_op(arch, i, j), channels) for i, j in EDGES}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]  # each (B, C, H, W)
        for i in range(1, NUM_NODES):
            nodes.append(sum(self.edges[f"edge_{i}_{j}"](nodes[j]) for j in range(i)))
        return nodes[-1]


class ResNetReduction(nn.Module):
    """Stride-2 residual block between stages: two ReLU-Conv-BN plus avgpool+1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, stride=1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))  # (B, c_out, H/2, W/2)


class NB201Network(Network):
    """The NAS-Bench-201 macro skeleton around one cell arch."""

    def __init__(self, arch: Mapping[str, Any], num_classes: int = 10, C: int = 16, N: int = 5):
        super().__init__()
        if C < 1 or N < 1 or num_classes < 1:
            raise ValueError(f"need C, N, num_classes >= 1, got C={C}, N={N}, {num_classes=}")
        # Kept as a string: Arch cannot be deep-copied/pickled yet, and proxies score copies.
        self.arch_str = arch_to_str(arch)
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        cells: list[nn.Module] = []
        c_prev = C
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                cells.append(ResNetReduction(c_prev, width))
            cells.extend(NB201Cell(arch, width) for _ in range(N))
            c_prev = width
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    @property
    def arch(self) -> Arch:
        return str_to_arch(self.arch_str)

    def probe_kinds(self) -> frozenset[str]:
        """Convolutions only: no attention, token mixer or FFN to report."""
        return frozenset()

    def proxy_blocks(self) -> list[nn.Module]:
        """The cells and reduction blocks, in order (the blocks AZ-NAS's proxies read)."""
        return list(self.cells)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-pooling features (B, 4C, H/4, W/4)."""
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.lastact(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.forward_features(x)).flatten(1))  # (B, classes)


def init_default_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw conv/linear weights with PyTorch's default init from ``generator`` (in
    module order, so the draws equal a default construction under the same seed) and
    reset BatchNorm parameters and statistics."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    return model


def build_nb201(
    arch: Mapping[str, Any],
    num_classes: int = 10,
    C: int = 16,
    N: int = 5,
    seed: int | None = None,
) -> NB201Network:
    """Build the network for ``arch`` (an :class:`Arch` or an NB-201 string).

    With ``seed`` the network is built on the meta device and its weights are drawn
    (PyTorch's default init) from a ``torch.Generator`` seeded with it: the same seed
    gives the same network and the global RNG is not touched. Without ``seed`` the
    modules' own init draws from the global RNG, as plain PyTorch does.
    """
    if isinstance(arch, str):
        arch = str_to_arch(arch)
    if seed is None:
        return NB201Network(arch, num_classes=num_classes, C=C, N=N)
    with torch.device("meta"):
        model = NB201Network(arch, num_classes=num_classes, C=C, N=N)
    model.to_empty(device="cpu")
    return init_default_(model, torch.Generator().manual_seed(int(seed)))


register_arch_parser("nb201", str_to_arch, build_nb201, INPUT_SHAPE, overwrite=True)
