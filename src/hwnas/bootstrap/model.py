"""The supernet made from a converted model: the traced graph with elastic layers."""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.split_module import split_module

from hwnas.bootstrap.analysis import ChannelAnalysis, Layout, is_pooling
from hwnas.bootstrap.depth import Block
from hwnas.bootstrap.kernel import KERNEL_TRANSFORM, find_kernel_convs
from hwnas.bootstrap.ops import Index, permute_
from hwnas.core.types import Network
from hwnas.elastic.base import ElasticModel, Saliency
from hwnas.spaces.base import Arch, Gene, SearchSpace


@dataclass
class WidthGroup:
    """Channels that shrink together: ``choices`` are channel counts (largest = all)."""

    gene: str
    group: int
    channels: int
    granularity: int
    choices: tuple[int, ...]
    producers: list[str]  # conv/linear modules whose output channels these are
    members: list[str]  # depthwise/grouped convs and norms sliced with them
    consumers: list[str]  # conv/linear modules whose input channels include them


def width_choices(channels: int, gran: int, ratios: Sequence[float]) -> tuple[int, ...]:
    """Channel counts for ``ratios`` of ``channels``: multiples of ``gran``, at least
    ``gran``, de-duplicated, ascending, the largest always ``channels``."""
    out = {max(gran, round(r * channels / gran) * gran) for r in ratios}
    return tuple(sorted({min(c, channels) for c in out} | {channels}))


def _expand(perm: torch.Tensor, inner: int) -> torch.Tensor:
    """Channel permutation -> feature permutation (``inner`` features per channel)."""
    if inner == 1:
        return perm
    return (perm[:, None] * inner + torch.arange(inner)).flatten()


class BootstrapModel(ElasticModel):
    """A weight-sharing supernet converted from a plain model (see :func:`convert`).

    Genes: ``w{i}`` (width group i, channel counts), ``d{s}`` (how many skippable blocks
    of stage s run: the first d) and, when converted with ``kernel=True``, ``k{i}`` (the
    kernel size of convolution i, a centre crop). :meth:`describe` tells which layers
    each touches.
    """

    reorder_groups = frozenset({"width"})

    def __init__(
        self,
        net: fx.GraphModule,
        analysis: ChannelAnalysis,
        stages: list[list[Block]],
        width_ratios: Sequence[float],
        example_input: torch.Tensor,
        kernel: bool = False,
    ):
        super().__init__()
        self.net = net
        self.input_shape = tuple(example_input.shape[1:])
        self._batch = example_input.shape[0]
        self._layers = analysis.layers
        self._stages = stages
        nodes = {n.name: n for n in net.graph.nodes}
        self._block_of = {
            name: (s, j)
            for s, stage in enumerate(stages)
            for j, blk in enumerate(stage)
            for name in [*blk.body, blk.add]
        }
        # per-sample costs of every module call / constant, from the traced shapes
        self._calls = [(n.name, n.target) for n in net.graph.nodes if n.op == "call_module"]
        self._attrs = [(n.name, n.target) for n in net.graph.nodes if n.op == "get_attr"]
        self._shape = {n.name: n.meta.get("shape") for n in net.graph.nodes}
        self._flops = {n.name: n.meta.get("flops", 0) for n in net.graph.nodes}
        self._feature_node = self._find_features(net.graph)
        self.width_groups = self._make_width_groups(analysis, width_ratios, nodes)
        self.kernel_convs, self._fixed_kernels = (
            find_kernel_convs(net, self._layers) if kernel else ([], [])
        )
        genes = self._make_genes()
        if not genes:
            raise ValueError(
                f"nothing elastic found in {type(net).__name__}: every channel group is "
                "fixed and no skippable residual block exists (see describe())"
            )
        out_shape = next(n for n in net.graph.nodes if n.op == "output").args[0]
        self.space = SearchSpace(
            "bootstrap",
            genes,
            {
                "source": type(net).__name__,
                "input_shape": list(self.input_shape),
                "output_shape": list(self._shape.get(getattr(out_shape, "name", ""), ()) or ())[1:],
                "params": sum(p.numel() for p in net.parameters()),
            },
        )
        self._gene_of = {wg.group: wg.gene for wg in self.width_groups}
        used = {seg[0] for layer in self._layers.values() for seg in (*layer.inp, *layer.out)}
        self._fixed = {  # fixed groups the sliced layers touch: channels, origin, reason
            g: (analysis.groups.size[g], analysis.groups.origin[g], why)
            for g, why in analysis.groups.why_fixed.items()
            if g in used
        }
        self._runners: dict[tuple, fx.GraphModule] = {}
        self._depth = tuple(len(stage) for stage in stages)
        self.set_active(self.space.max_arch())

    # ----------------------------------------------------------------- structure
    def _find_features(self, graph: fx.Graph) -> str:
        """Pre-pooling features: the last node with the input's rank that is not the
        output of a pooling op (the input itself if there is none)."""
        rank = len(self.input_shape) + 1
        best = next(n.name for n in graph.nodes if n.op == "placeholder")
        for n in graph.nodes:
            shape = self._shape.get(n.name)
            if n.op != "output" and shape is not None and len(shape) == rank:
                if not is_pooling(n, self.net):
                    best = n.name
        return best

    def _make_width_groups(self, analysis: ChannelAnalysis, ratios, nodes) -> list[WidthGroup]:
        groups = analysis.groups
        found: dict[int, WidthGroup] = {}
        for layer in self._layers.values():  # in graph order
            if layer.kind not in ("conv", "linear"):
                continue
            for g, _, _ in layer.out:  # several when split to match a concatenation
                if g not in found and not groups.fixed(g):
                    gran = groups.gran[g]
                    choices = width_choices(groups.size[g], gran, ratios)
                    if len(choices) > 1:
                        found[g] = WidthGroup(
                            f"w{len(found)}", g, groups.size[g], gran, choices, [], [], []
                        )
        for layer in self._layers.values():
            if layer.kind in ("conv", "linear"):
                for g in dict.fromkeys(s[0] for s in layer.out):
                    if g in found:
                        found[g].producers.append(layer.target)
            for g in dict.fromkeys(s[0] for s in layer.inp):
                if g in found:
                    kind = "consumers" if layer.kind in ("conv", "linear") else "members"
                    getattr(found[g], kind).append(layer.target)
        return list(found.values())

    def _make_genes(self) -> list[Gene]:
        genes: list[Gene] = []
        for s, stage in enumerate(self._stages):
            genes.append(Gene(f"d{s}", tuple(range(len(stage) + 1)), "depth"))
        for kc in self.kernel_convs:
            where = self._block_of.get(kc.node)
            cond = (f"d{where[0]}", where[1]) if where else None
            genes.append(Gene(kc.gene, kc.choices, "kernel", cond))
        for wg in self.width_groups:
            inside = {
                self._block_of.get(self._layers[t].node)
                for t in wg.producers + [m for m in wg.members if self._layers[m].kind == "tied"]
            }
            cond = None
            if len(inside) == 1 and None not in inside:
                s, j = inside.pop()
                cond = (f"d{s}", j)
            genes.append(Gene(wg.gene, wg.choices, "width", cond))
        return genes

    # ---------------------------------------------------------------- activation
    def set_active(self, arch: Mapping[str, Any]) -> None:
        arch = self.space.validate(arch)
        width = {g: arch[gene] for g, gene in self._gene_of.items()}
        for layer in self._layers.values():
            m = self.net.get_submodule(layer.target)
            m.in_idx = self._index(layer.inp, width)
            if layer.kind != "bn":
                m.out_idx = self._index(layer.out, width)
        for kc in self.kernel_convs:
            k = arch[kc.gene]
            self.net.get_submodule(kc.module).active_kernel = None if k == kc.kernel else k
        self._depth = tuple(arch[f"d{s}"] for s in range(len(self._stages)))
        self._active = arch

    def get_active(self) -> Arch:
        return self._active

    @staticmethod
    def _index(layout: Layout, width: Mapping[int, int]) -> Index:
        if all(width.get(g, c) == c for g, c, _ in layout):
            return None
        if len(layout) == 1:
            g, _, inner = layout[0]
            return width[g] * inner
        parts, offset = [], 0
        for g, c, inner in layout:
            parts.append(torch.arange(offset, offset + width.get(g, c) * inner))
            offset += c * inner
        return torch.cat(parts)

    # ------------------------------------------------------------------- forward
    def _graph(self, depth: tuple[int, ...], features: bool = False) -> fx.Graph:
        """The traced graph without the skipped blocks (cut at the features if asked)."""
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        out = graph.graph_copy(self.net.graph, env)
        by_name = {n.name: n for n in graph.nodes}
        graph.output(by_name[self._feature_node] if features else out)
        skipped = [blk for s, stage in enumerate(self._stages) for blk in stage[depth[s] :]]
        for blk in reversed(skipped):  # last first: a block's input may be the next's add
            add = by_name[blk.add]
            add.replace_all_uses_with(by_name[blk.x])
            graph.erase_node(add)
            for name in reversed(blk.body):
                graph.erase_node(by_name[name])
        if features:
            for n in reversed(list(graph.nodes)):
                if n.op not in ("output", "placeholder") and not n.users:
                    graph.erase_node(n)
        return graph

    def _runner(self, features: bool = False) -> nn.Module:
        key = (self._depth, features)
        if key not in self._runners:
            if not features and self._depth == tuple(len(s) for s in self._stages):
                self._runners[key] = self.net
            else:
                self._runners[key] = fx.GraphModule(self.net, self._graph(*key), "Runner")
        return self._runners[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape) -> outputs
        return self._runner()(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # -> pre-pooling features
        return self._runner(features=True)(x)

    def _apply(self, fn, recurse: bool = True):  # .to(device) etc. re-point the runners
        self._runners = {}
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runners"] = {}
        return state

    # -------------------------------------------------------------------- export
    def export(self, arch: Mapping[str, Any]) -> fx.GraphModule:
        """A plain GraphModule: smaller ``nn.Conv*d``/``nn.Linear``/``nn.BatchNorm*d``
        with weights sliced from the supernet, skipped blocks removed."""
        with self.active(arch):
            graph = self._graph(self._depth)
            root: dict[str, Any] = {}
            for n in graph.nodes:
                if n.op == "call_module":
                    m = self.net.get_submodule(n.target)
                    root[n.target] = m.to_plain() if n.target in self._layers else copy.deepcopy(m)
                elif n.op == "get_attr":
                    root[n.target] = copy.deepcopy(_get_attr(self.net, n.target))
            sub = fx.GraphModule(root, graph, "Subnet")
        return sub.train(self.training)

    def proxy_module(self, sub: nn.Module) -> nn.Module:
        """``sub`` cut into blocks for the proxies that read block features (AZ-NAS):
        one ``torch.fx`` partition up to each residual addition (two computed tensors of
        one shape added; plain layers before it go with it), or, in a network without
        any, up to each convolution; the rest (pooling, head) last. Same modules, same
        outputs; ``sub`` itself when nothing can be cut."""
        if not isinstance(sub, fx.GraphModule):
            return sub
        nodes = [n for n in sub.graph.nodes if n.op not in ("placeholder", "output")]
        ends = {n.name for n in nodes if _is_residual_add(n)}
        if not ends:
            ends = {n.name for n in nodes if n.op == "call_module" and n.target in self._layers
                    and self._layers[n.target].kind == "conv"}  # fmt: skip
        part, ids = 0, {}
        for n in nodes:
            ids[n.name] = part
            part += n.name in ends
        if part == 0:
            return sub
        split = split_module(sub, sub, lambda n: ids[n.name], keep_original_order=True)
        return _ProxyBlocks(split, [f"submod_{i}" for i in range(part)])

    # ------------------------------------------------------------- reorganizing
    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Sort each width group's channels by importance, largest first: the L1 norm of
        the consumers' input weights for those channels, summed over all consumers (the
        producers' output filters when nothing consumes them). Producers, depthwise
        convs, norms and consumers are permuted alike, so outputs do not change.
        ``saliency`` scores transformer units, which a converted model has none of: it
        is ignored."""
        for wg in self.width_groups:
            perm = self._importance(wg).argsort(descending=True, stable=True)
            if wg.granularity > 1:  # keep conv groups whole: sort them by summed importance
                blocks = self._importance(wg).view(-1, wg.granularity).sum(1)
                order = blocks.argsort(descending=True, stable=True)
                perm = (order[:, None] * wg.granularity + torch.arange(wg.granularity)).flatten()
            self._permute(wg.group, perm)

    def _segments(self, layout: Layout, group: int):
        offset = 0
        for g, c, inner in layout:
            if g == group:
                yield offset, c, inner
            offset += c * inner

    def _importance(self, wg: WidthGroup) -> torch.Tensor:
        imp = torch.zeros(wg.channels)
        for t in wg.consumers:
            w = self.net.get_submodule(t).weight.detach()
            for off, c, inner in self._segments(self._layers[t].inp, wg.group):
                part = w.narrow(1, off, c * inner).transpose(0, 1).reshape(c, -1)
                imp += part.abs().sum(1).cpu()
        if not wg.consumers:
            for t in wg.producers:
                w = self.net.get_submodule(t).weight.detach()
                for off, c, _ in self._segments(self._layers[t].out, wg.group):
                    imp += w.narrow(0, off, c).abs().flatten(1).sum(1).cpu()
        return imp

    def _permute(self, group: int, perm: torch.Tensor) -> None:
        for layer in self._layers.values():
            m = self.net.get_submodule(layer.target)
            if layer.kind in ("conv", "linear"):  # output channels: inner is 1
                for off, _, _ in self._segments(layer.out, group):
                    permute_(m.weight, 0, off, perm)
                    permute_(m.bias, 0, off, perm)
            for off, _, inner in self._segments(layer.inp, group):
                p = _expand(perm, inner)
                if layer.kind in ("conv", "linear"):
                    permute_(m.weight, 1, off, p)
                elif layer.kind == "tied":
                    permute_(m.weight, 0, off, p)
                    permute_(m.bias, 0, off, p)
                else:
                    for t in (m.weight, m.bias, m.running_mean, m.running_var):
                        permute_(t, 0, off, p)

    # --------------------------------------------------------------------- costs
    def _running(self, name: str) -> bool:
        where = self._block_of.get(name)
        return where is None or where[1] < self._depth[where[0]]

    def active_params(self) -> int:
        total = 0
        for name, target in self._calls:
            if self._running(name):
                m = self.net.get_submodule(target)
                if target in self._layers:
                    total += m.active_params()
                else:
                    total += sum(p.numel() for p in m.parameters())
        for name, target in self._attrs:
            if self._running(name):
                attr = _get_attr(self.net, target)
                total += attr.numel() if isinstance(attr, nn.Parameter) else 0
        return total

    def active_flops(self, batch_size: int = 1) -> int:
        """Convolutions and linears from their active shapes; opaque modules as measured
        by ``FlopCounterMode`` on the example input. Other ops count nothing."""
        total = 0
        for name, target in self._calls:
            if not self._running(name):
                continue
            if target in self._layers:
                shape = self._shape[name]
                m = self.net.get_submodule(target)
                spatial = shape[2:] if self._layers[target].kind != "linear" else shape[1:-1]
                total += m.active_flops(spatial) * batch_size
            else:
                total += self._flops[name] * batch_size // self._batch
        return total

    def latency_units(self, arch: Mapping[str, Any]) -> list[tuple[str, nn.Module, tuple]]:
        """One unit: the whole exported subnet (a converted graph has no fixed cut)."""
        arch = self.space.validate(arch)
        return [(f"bootstrap:{arch.to_str()}", self.export(arch), self.input_shape)]

    def latency_unit_keys(self, arch: Mapping[str, Any]) -> list[str]:
        return [f"bootstrap:{self.space.validate(arch).to_str()}"]

    # ------------------------------------------------------------------ describe
    def describe(self) -> dict[str, Any]:
        """The search space as plain data (JSON-able): genes, width groups with the layers
        they touch, fixed channel groups with the reason, depth stages with their blocks,
        elastic-kernel convolutions and (with ``kernel=True``) the convolutions with a
        kernel of 5 or more that stay whole, with the reason."""
        fixed = [
            {"channels": size, "origin": origin, "reason": why}
            for size, origin, why in self._fixed.values()
        ]
        return {
            "space": self.space.name,
            "space_id": self.space.id,
            "meta": self.space.meta,
            "genes": [
                {
                    "name": g.name,
                    "group": g.group,
                    "choices": list(g.choices),
                    "active_if": list(g.active_if) if g.active_if else None,
                }
                for g in self.space.genes
            ],
            "width_groups": [
                {
                    "gene": wg.gene,
                    "channels": wg.channels,
                    "granularity": wg.granularity,
                    "choices": list(wg.choices),
                    "producers": wg.producers,
                    "members": wg.members,
                    "consumers": wg.consumers,
                }
                for wg in self.width_groups
            ],
            "fixed_groups": fixed,
            "kernel_convs": [
                {
                    "gene": kc.gene,
                    "module": kc.module,
                    "kernel": kc.kernel,
                    "choices": list(kc.choices),
                }
                for kc in self.kernel_convs
            ],
            "fixed_kernels": self._fixed_kernels,
            "kernel_transform": KERNEL_TRANSFORM if self.kernel_convs else None,
            "depth_stages": [
                {
                    "gene": f"d{s}",
                    "blocks": [
                        {
                            "input": b.x,
                            "add": b.add,
                            "modules": [t for n, t in self._calls if n in set(b.body)],
                        }
                        for b in stage
                    ],
                }
                for s, stage in enumerate(self._stages)
            ],
            "importance": "L1 norm of consumers' input weights per channel, summed",
            "features_node": self._feature_node,
        }


def _is_residual_add(n: fx.Node) -> bool:
    if n.op != "call_function" or n.target not in (operator.add, torch.add):
        return False
    args = [a for a in n.args[:2] if isinstance(a, fx.Node)]
    shapes = {a.meta.get("shape") for a in args}
    return len(args) == 2 and len(shapes) == 1 and None not in shapes


class _ProxyBlocks(Network):
    """A split subnet whose :meth:`proxy_blocks` are its residual-block partitions."""

    def __init__(self, net: fx.GraphModule, blocks: list[str]):
        super().__init__()
        self.net, self.blocks = net, blocks

    def forward(self, *args: Any) -> Any:
        return self.net(*args)

    def proxy_blocks(self) -> list[nn.Module]:
        return [self.net.get_submodule(name) for name in self.blocks]


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
