"""Width: the channel groups of a traced graph that can shrink together.

Every tensor with a channel dimension (dim 1) gets a *layout*: the segments its
channels are made of, each ``(group, channels, features_per_channel)``. A convolution
or linear layer starts a new group for its output; ops that must see the same channels
*unify* their operands' groups (union-find): residual/elementwise ops with broadcasting,
depthwise and grouped convolutions with equal input and output channels (a grouped one
sets the group's granularity to its group width), norms and channel-agnostic ops pass
the layout through, ``cat`` on dim 1 concatenates layouts, ``flatten`` multiplies the
features per channel. Anything not understood (an opaque leaf module, a ``view`` with
literal sizes, a read of the channel count, the network output) *fixes* the groups of
its inputs: they keep all their channels.

Operands whose segments differ (``cat([a, b], 1) + conv(x)``: ``[8, 12]`` against
``[20]``) are *aligned* first: a segment spanning several of the other's is split into
consecutive sub-groups (the conv's 20 output channels become a group of 8 and one of
12), each shrinking to its own first channels, so both sides stay elastic. A split group
is replaced by its parts wherever it appears. Segments that cannot be aligned (different
features per channel, or a cut through a grouped convolution's channel group) are fixed.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from hwnas.bootstrap.ops import BN_TYPES, CONV_TYPES
from hwnas.bootstrap.tracing import DEFAULT_LEAF_TYPES, target_name

Seg = tuple[int, int, int]  # (group id, channels, features per channel)
Layout = tuple[Seg, ...]

_AGNOSTIC_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
    *DEFAULT_LEAF_TYPES,
)  # fmt: skip
_ELEMENTWISE_FUNCS = {
    getattr(mod, name)
    for mod, names in (
        (operator, "add sub mul truediv neg pos"),
        (torch, "add sub mul div relu sigmoid tanh clamp clip exp abs neg sqrt rsqrt pow "
                "where maximum minimum square"),
        (F, "relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid "
            "hardtanh sigmoid tanh softplus dropout dropout1d dropout2d dropout3d "
            "alpha_dropout"),
    )
    for name in names.split()
    if hasattr(mod, name)
}  # fmt: skip
_ELEMENTWISE_METHODS = set(
    "add sub mul div truediv relu sigmoid tanh clamp clamp_min clamp_max clip exp abs neg "
    "sqrt rsqrt pow square contiguous clone detach float half double to type_as".split()
)
_POOL_FUNCS = {
    getattr(F, name)
    for name in "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d avg_pool1d "
    "avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d adaptive_max_pool2d "
    "interpolate".split()
}
_REDUCE = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"}
_FLATTEN = {torch.flatten, "flatten"}
_VIEW = {torch.reshape, "view", "reshape"}
_CAT = {torch.cat, torch.concat}


_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip


def is_pooling(n: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``n`` pools (a pooling module or function, or a spatial reduction)."""
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), _POOL_MODULES)
    return n.op in ("call_function", "call_method") and (
        n.target in _POOL_FUNCS or n.target in _REDUCE
    )


class Groups:
    """Union-find over channel groups: size, granularity (channels shrink in multiples
    of it) and whether the group is fixed (keeps all channels), with the reason. A root
    may be split into consecutive parts (:attr:`parts`), new groups that replace it."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.gran: list[int] = []
        self.why_fixed: dict[int, str] = {}
        self.origin: list[str] = []
        self.parts: dict[int, tuple[int, ...]] = {}

    def new(self, size: int, origin: str, fixed: str | None = None) -> int:
        gid = len(self.parent)
        self.parent.append(gid)
        self.size.append(size)
        self.gran.append(1)
        self.origin.append(origin)
        if fixed:
            self.why_fixed[gid] = fixed
        return gid

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def fixed(self, g: int) -> bool:
        return self.find(g) in self.why_fixed

    def fix(self, g: int, why: str) -> None:
        self.why_fixed.setdefault(self.find(g), why)

    def set_gran(self, g: int, gran: int) -> None:
        r = self.find(g)
        self.gran[r] = math.lcm(self.gran[r], gran)

    def union(self, a: int, b: int, why: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.fix(ra, why)
            self.fix(rb, why)
            return
        self.parent[rb] = ra
        self.gran[ra] = math.lcm(self.gran[ra], self.gran[rb])
        if rb in self.why_fixed:
            self.why_fixed.setdefault(ra, self.why_fixed.pop(rb))

    def split(self, g: int, sizes: Sequence[int]) -> str | None:
        """Split ``g``'s root into consecutive parts of ``sizes`` channels (they inherit
        its granularity and fixed reason); the reason when that would cut a channel group
        of a grouped convolution, else ``None``."""
        r = self.find(g)
        assert r not in self.parts and sum(sizes) == self.size[r]
        if any(c % self.gran[r] for c in sizes):
            return (
                f"channels {self.origin[r]} ({self.size[r]}) would split into {list(sizes)}, "
                f"cutting groups of {self.gran[r]} channels of a grouped convolution"
            )
        kids, offset = [], 0
        for c in sizes:
            kid = self.new(c, f"{self.origin[r]}[{offset}:{offset + c}]", self.why_fixed.get(r))
            self.gran[kid] = self.gran[r]
            kids.append(kid)
            offset += c
        self.parts[r] = tuple(kids)
        return None


@dataclass
class Layer:
    """A conv/linear/norm the supernet slices: its node, module path, kind (``conv``,
    ``tied`` for depthwise/grouped with equal in/out channels, ``linear``, ``bn``) and
    the layouts of its input and output."""

    node: str
    target: str
    kind: str
    inp: Layout
    out: Layout


class ChannelAnalysis:
    """Layouts of every node of ``gm``'s graph (needs ``node.meta["shape"]``) and the
    layers to slice. Group ids in :attr:`layers` and :attr:`layout` are union-find roots
    after :meth:`resolve`."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.groups = Groups()
        self.layout: dict[str, Layout | None] = {}
        self.layers: dict[str, Layer] = {}
        self._calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
        for n in gm.graph.nodes:
            self.layout[n.name] = self._visit(n)
        self.resolve()

    # ---------------------------------------------------------------- helpers
    def _lay(self, a: object) -> Layout | None:
        lay = self.layout.get(a.name) if isinstance(a, fx.Node) else None
        return None if lay is None else self._expand(lay)

    def _expand(self, lay: Layout) -> Layout:
        """``lay`` with every split group replaced by its parts (recursively)."""
        out: list[Seg] = []
        for g, c, inner in lay:
            r = self.groups.find(g)
            if r in self.groups.parts:
                kids = tuple((k, self.groups.size[k], inner) for k in self.groups.parts[r])
                out.extend(self._expand(kids))
            else:
                out.append((r, c, inner))
        return tuple(out)

    def _fresh(self, n: fx.Node, fixed: str | None = None) -> Layout | None:
        shape = n.meta.get("shape")
        if shape is None or len(shape) < 2:
            return None
        return ((self.groups.new(shape[1], n.name, fixed), shape[1], 1),)

    def _fix(self, layout: Layout | None, why: str) -> None:
        for g, _, _ in layout or ():
            self.groups.fix(g, why)

    def _opaque(self, n: fx.Node, why: str) -> Layout | None:
        for a in n.all_input_nodes:
            self._fix(self._lay(a), why)
        return self._fresh(n, fixed=why)

    def _unify(self, layouts: list[Layout], why: str) -> Layout:
        first = layouts[0]
        for other in layouts[1:]:
            problem = self._align(first, other)
            first, other = self._expand(first), self._expand(other)
            if problem is None:
                for (a, _, _), (b, _, _) in zip(first, other):
                    self.groups.union(a, b, why)
            else:  # segments that cannot be aligned: keep them all
                self._fix(first, f"{why}: {problem}")
                self._fix(other, f"{why}: {problem}")
        return self._expand(first)

    def _align(self, a: Layout, b: Layout) -> str | None:
        """Split groups of ``a`` and ``b`` until their segments coincide (same channels
        and features per channel, pairwise); the reason when they cannot."""
        while True:
            a, b = self._expand(a), self._expand(b)
            if [s[1:] for s in a] == [s[1:] for s in b]:
                return None
            ends = [list(itertools.accumulate(c * i for _, c, i in lay)) for lay in (a, b)]
            if ends[0][-1] != ends[1][-1]:
                return f"{ends[0][-1]} against {ends[1][-1]} features"
            bounds = sorted(set(ends[0]) | set(ends[1]))
            for x, y in zip([0, *bounds], bounds):  # the pieces both sides are cut into
                inner = _inner_at(a, x)
                if inner != _inner_at(b, x) or (y - x) % inner:
                    return f"segments {_sizes(a)} and {_sizes(b)} differ in features per channel"
            cuts: dict[int, set[int]] = {}  # group -> cut points, channels from its start
            for lay in (a, b):
                offset = 0
                for g, c, inner in lay:
                    for o in bounds:
                        if offset < o < offset + c * inner:
                            cuts.setdefault(g, set()).add((o - offset) // inner)
                    offset += c * inner
            for g, at in cuts.items():
                edges = [0, *sorted(at), self.groups.size[g]]
                problem = self.groups.split(g, [y - x for x, y in zip(edges, edges[1:])])
                if problem is not None:
                    return problem

    # ------------------------------------------------------------------ visit
    def _visit(self, n: fx.Node) -> Layout | None:
        what = f"{n.op} {n.name} ({target_name(n)})"
        if n.op in ("placeholder", "get_attr"):
            return self._fresh(n, fixed=what)
        if n.op == "output":
            for a in n.all_input_nodes:
                self._fix(self._lay(a), "network output")
            return None
        if n.op == "call_module":
            return self._module(n, what)
        t = n.target
        if t in _CAT:
            return self._cat(n, what)
        if t in _FLATTEN:
            start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
            end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
            return self._flatten(n, start, end, what)
        if t in _VIEW:
            return self._view(n, what)
        if t in _REDUCE:
            return self._reduce(n, what)
        if t in _POOL_FUNCS:
            return self._passthrough(n, what)
        if t in _ELEMENTWISE_FUNCS or (n.op == "call_method" and t in _ELEMENTWISE_METHODS):
            return self._elementwise(n, what)
        if (n.op == "call_method" and t == "size") or (
            t is getattr and len(n.args) > 1 and n.args[1] == "shape"
        ):
            return self._size(n, what)
        if t is getattr or (n.op == "call_method" and t == "dim"):
            return None
        if t is operator.getitem and self._lay(n.args[0]) is None:
            return self._fresh(n, fixed=what)  # an item of a tuple or a size
        return self._opaque(n, f"unsupported op {what}")

    def _module(self, n: fx.Node, what: str) -> Layout | None:
        m = self.gm.get_submodule(n.target)
        x = n.args[0] if n.args else None
        lin = self._lay(x)
        if lin is None or len(n.args) != 1 or n.kwargs:
            return self._opaque(n, f"opaque module call {what}")
        sliced = type(m) in (*CONV_TYPES, *BN_TYPES, nn.Linear)
        if sliced and self._calls[n.target] > 1:  # one module, two channel layouts
            return self._opaque(n, f"module {n.target!r} is called more than once")
        if type(m) in CONV_TYPES and all(s[2] == 1 for s in lin):
            if m.groups == 1:
                return self._layer(n, "conv", lin, self._fresh(n))
            if m.in_channels == m.out_channels:
                width = m.in_channels // m.groups
                if width == 1:
                    return self._layer(n, "tied", lin, lin)
                if len(lin) == 1:
                    self.groups.set_gran(lin[0][0], width)
                    return self._layer(n, "tied", lin, lin)
        if type(m) is nn.Linear and len(x.meta["shape"]) == 2:
            return self._layer(n, "linear", lin, self._fresh(n))
        if type(m) in BN_TYPES:
            return self._layer(n, "bn", lin, lin)
        if isinstance(m, nn.Flatten):
            return self._flatten(n, m.start_dim, m.end_dim, what)
        if isinstance(m, _AGNOSTIC_MODULES) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return self._passthrough(n, what)
        return self._opaque(n, f"opaque module {n.target!r} ({type(m).__name__})")

    def _layer(self, n: fx.Node, kind: str, inp: Layout, out: Layout) -> Layout:
        self.layers[n.target] = Layer(n.name, n.target, kind, inp, out)
        return out

    def _passthrough(self, n: fx.Node, what: str) -> Layout | None:
        x = n.args[0]
        lin, shape = self._lay(x), n.meta.get("shape")
        if lin is None or shape is None or shape[:2] != x.meta["shape"][:2]:
            return self._opaque(n, f"channel-changing op {what}")
        for a in n.all_input_nodes[1:]:
            self._fix(self._lay(a), what)
        return lin

    def _elementwise(self, n: fx.Node, what: str) -> Layout | None:
        shape = n.meta.get("shape")
        if shape is None or len(shape) < 2:
            return self._opaque(n, what)
        found: list[Layout] = []
        fixed = False
        for a in n.all_input_nodes:
            s = a.meta.get("shape")
            if s is None:
                continue
            pos = 1 - (len(shape) - len(s))  # operand dim aligned with the channel dim
            if pos < 0 or s[pos] == 1:
                continue
            lay = self._lay(a)
            if pos == 1 and lay is not None:
                found.append(lay)
            else:
                fixed = True
        if not found:
            return self._fresh(n, fixed=what)
        out = self._unify(found, f"elementwise {what}")
        if fixed:
            for lay in found:
                self._fix(lay, f"broadcast against a constant in {what}")
        return out

    def _cat(self, n: fx.Node, what: str) -> Layout | None:
        tensors = n.args[0]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        lays = [self._lay(t) for t in tensors]
        if any(lay is None for lay in lays) or not isinstance(dim, int):
            return self._opaque(n, what)
        if dim % len(n.meta["shape"]) == 1:
            return tuple(seg for lay in lays for seg in lay)
        return self._unify(lays, what)

    def _flatten(self, n: fx.Node, start: int, end: int, what: str) -> Layout | None:
        x = n.args[0]
        lin, shape = self._lay(x), x.meta.get("shape")
        if lin is None:
            return self._opaque(n, what)
        nd = len(shape)
        start, end = start % nd, end % nd
        if start >= 2:
            return lin
        if start == 0:
            return self._opaque(n, f"flatten over the batch in {what}")
        inner = math.prod(shape[2 : end + 1])
        return tuple((g, c, i * inner) for g, c, i in lin)

    def _view(self, n: fx.Node, what: str) -> Layout | None:
        x = n.args[0]
        sizes = list(n.args[1:]) or list(n.kwargs.get("shape", ()))
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        shape, in_shape = n.meta.get("shape"), x.meta.get("shape")
        if shape and in_shape and len(shape) == 2 and len(sizes) == 2 and sizes[1] == -1:
            if shape[0] == in_shape[0]:
                return self._flatten(n, 1, -1, what)
        return self._opaque(n, f"view/reshape with literal sizes {what}")

    def _reduce(self, n: fx.Node, what: str) -> Layout | None:
        x = n.args[0]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        lin, shape = self._lay(x), x.meta.get("shape")
        if lin is None or dim is None or not all(isinstance(d, int) for d in dims):
            return self._opaque(n, what)
        if {d % len(shape) for d in dims} & {0, 1}:
            return self._opaque(n, f"reduction over channels {what}")
        return lin

    def _size(self, n: fx.Node, what: str) -> None:
        x = n.args[0]
        shape = x.meta.get("shape") or ()
        dim = n.args[1] if n.op == "call_method" and len(n.args) > 1 else n.kwargs.get("dim")
        dims: set[int] | None = {dim} if dim is not None else set()
        if dim is None:
            for u in n.users:
                if u.target is operator.getitem and isinstance(u.args[1], int):
                    dims.add(u.args[1])
                else:
                    dims = None
                    break
        if dims is None or (shape and 1 in {d % len(shape) for d in dims}):
            self._fix(self._lay(x), f"channel count read by {what}")
        return None

    # ---------------------------------------------------------------- results
    def resolve(self) -> None:
        """Rewrite every layout with union-find roots, split groups replaced by their
        parts."""

        def res(lay: Layout | None) -> Layout | None:
            return None if lay is None else self._expand(lay)

        self.layout = {k: res(v) for k, v in self.layout.items()}
        for layer in self.layers.values():
            layer.inp, layer.out = res(layer.inp), res(layer.out)


def _sizes(lay: Layout) -> list[int]:
    return [c for _, c, _ in lay]


def _inner_at(lay: Layout, feature: int) -> int:
    """Features per channel of the segment of ``lay`` that holds feature ``feature``."""
    offset = 0
    for _, c, inner in lay:
        offset += c * inner
        if feature < offset:
            return inner
    return 0
