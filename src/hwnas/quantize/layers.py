"""Quantizable layers of a module and the ONNX nodes that compute them.

A precision assignment names PyTorch layers (qualified module names); ONNX Runtime's
quantizer selects graph nodes. :func:`onnx_layer_nodes` bridges the two for a model
exported by :func:`hwnas.app.subnet_io.export_onnx` (``torch.onnx.export``, TorchScript
exporter), in two steps, most reliable first:

1. **Weight initializer name.** The exporter keeps a parameter's name
   (``features.1.weight``) for an initializer it feeds unchanged into a Conv/Gemm.
2. **Node scope.** When the weight was rewritten (a BatchNorm folded into the Conv,
   a Linear on 3-D input transposed into a MatMul) the initializer gets a generated
   name (``onnx::Conv_40``), but the node keeps the scope of the module that ran it:
   ``/features/features.0/features.0.0/Conv`` -- the last scope is the qualified name.

Both steps only accept nodes of the matching type (Conv for ``Conv*d``; Gemm or MatMul
for ``Linear``) and no node may be claimed by two layers.

3. **Call order.** Graphs traced by torch.fx (bootstrapped subnets) lose the module
   path in node names (``/conv.0.0_1/Conv``). Given example inputs, the layers are then
   run once with hooks recording the order they are called, which is the order of the
   Conv/Gemm/MatMul nodes with a constant weight in the exported (topologically sorted)
   graph; the counts and op types must agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from hwnas.hardware.int8 import QUANTIZABLE_OPS, weight_nodes

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# ONNX op types that compute each kind of layer
NODE_TYPES = {"conv": ("Conv",), "linear": ("Gemm", "MatMul")}
_CALL_SUFFIX = re.compile(r"_\d+$")  # a module called more than once: "/head_1/Gemm"


@dataclass(frozen=True)
class Layer:
    """A quantizable layer: qualified module name, kind (``conv``/``linear``) and its
    weight's shape (output channels first) and element count."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]

    @property
    def n_params(self) -> int:
        n = 1
        for d in self.weight_shape:
            n *= d
        return n


def quantizable_layers(model: nn.Module) -> list[Layer]:
    """Every ``Conv1d/2d/3d`` and ``Linear`` of ``model`` (subclasses included; transposed
    convolutions are not), in ``named_modules`` order."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, CONV_TYPES):
            kind = "conv"
        elif isinstance(module, nn.Linear):
            kind = "linear"
        else:
            continue
        out.append(Layer(name, kind, tuple(module.weight.shape)))
    return out


def called_layers(model: nn.Module, example: tuple) -> list[Layer]:
    """The quantizable layers that ``model(*example)`` runs (its exported ``forward``),
    in ``named_modules`` order: a transducer's forward is its encoder, so its predictor
    and joiner (run only while decoding) are not in the export and are left out."""
    every = quantizable_layers(model)
    called = set(_calls(model, example, {layer.name for layer in every}))
    return [layer for layer in every if layer.name in called]


def _calls(model: nn.Module, example: tuple, names: set[str]) -> list[str]:
    """The modules of ``names`` in the order ``model(*example)`` calls them (eval mode,
    no grad), one entry per call."""
    calls: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
        for name, module in model.named_modules()
        if name in names
    ]
    try:
        with torch.no_grad():
            model.eval()(*example)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _load(onnx_model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(onnx_model, onnx.ModelProto):
        return onnx_model
    return onnx.load(str(onnx_model), load_external_data=False)


def node_scope(node_name: str) -> str:
    """The qualified module name a TorchScript-exported node name was recorded under.

    The exporter writes one path element per module: its attribute name, or, for an
    item of a container, the container's element plus ``.<index>``
    (``/features/features.1/conv/conv.0/conv.0.0/Conv`` is ``features.1.conv.0.0``;
    ``/blocks/blocks.0/expand/Conv`` is ``blocks.0.expand``). ``/Gemm`` -> ``""``."""
    parts: list[str] = []
    for part in node_name.split("/")[1:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def call_order_nodes(
    model: nn.Module,
    onnx_model: str | Path | onnx.ModelProto,
    layers: Sequence[Layer],
    example: tuple,
) -> dict[str, list[str]]:
    """``{layer: [node]}`` by call order (see the module doc, step 3): ``model`` runs on
    ``example`` with hooks on ``layers``; the k-th call is the k-th Conv/Gemm/MatMul node."""
    wanted = {layer.name: layer for layer in layers}
    calls = _calls(model, example, set(wanted))
    nodes = weight_nodes(_load(onnx_model))
    if len(calls) != len(nodes):
        raise ValueError(
            f"the model calls its conv/linear layers {len(calls)} times but its ONNX graph "
            f"has {len(nodes)} Conv/Gemm/MatMul nodes: export it with "
            "hwnas.app.subnet_io.export_onnx (dynamo=False)"
        )
    out: dict[str, list[str]] = {name: [] for name in wanted}
    for name, node in zip(calls, nodes, strict=True):
        if node.op_type not in NODE_TYPES[wanted[name].kind]:
            raise ValueError(f"call order pairs layer {name!r} with {node.op_type} {node.name!r}")
        out[name].append(node.name)
    return out


def _scope_owner(scope: str, names: set[str]) -> str | None:
    """The layer a node scope belongs to: the scope itself, or without the ``_<k>``
    suffix of a repeated call when the suffixed name is not a layer of its own."""
    if scope in names:
        return scope
    base = _CALL_SUFFIX.sub("", scope)
    return base if base in names else None


def onnx_layer_nodes(
    model: nn.Module,
    onnx_model: str | Path | onnx.ModelProto,
    layers: Sequence[Layer] | None = None,
    strict: bool = True,
    example: tuple | None = None,
) -> dict[str, list[str]]:
    """``{layer name: [ONNX node names]}`` for the quantizable ``layers`` of ``model``
    (default: all) in its export ``onnx_model`` (path or proto); see the module doc.
    With ``example`` inputs, call order (step 3) is the fallback when names fail.

    A layer usually maps to one node; a module called several times maps to one node
    per call. With ``strict``, a layer without a node (never run in ``forward``) is a
    ``ValueError``; otherwise it maps to ``[]``.
    """
    layers = quantizable_layers(model) if layers is None else list(layers)
    every = {layer.name for layer in quantizable_layers(model)}
    specs = [(layer.name, NODE_TYPES[layer.kind]) for layer in layers]
    proto = _load(onnx_model)
    if example is not None:
        try:
            return _match(proto, specs, every, strict=True)
        except ValueError:
            return call_order_nodes(model, proto, layers, example)
    return _match(proto, specs, every, strict)


def layer_nodes_by_name(
    onnx_model: str | Path | onnx.ModelProto, names: Sequence[str], strict: bool = True
) -> dict[str, list[str]]:
    """:func:`onnx_layer_nodes` without the PyTorch model: layers known only by their
    qualified ``names`` (e.g. the keys of a precision assignment), matched to any
    Conv/Gemm/MatMul node by the same two rules."""
    specs = [(name, QUANTIZABLE_OPS) for name in names]
    return _match(_load(onnx_model), specs, set(names), strict)


def _match(
    proto: onnx.ModelProto,
    specs: Sequence[tuple[str, tuple[str, ...]]],
    every: set[str],
    strict: bool,
) -> dict[str, list[str]]:
    nodes = [n for n in proto.graph.node if n.op_type in QUANTIZABLE_OPS]
    claimed: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for name, types in specs:
        weight = f"{name}.weight" if name else "weight"
        found = [n.name for n in nodes if n.op_type in types and weight in n.input[1:2]]
        if not found:
            found = [
                n.name
                for n in nodes
                if n.op_type in types and _scope_owner(node_scope(n.name), every) == name
            ]
        for node in found:
            if node in claimed:
                raise ValueError(f"node {node!r} matches layers {claimed[node]!r} and {name!r}")
            claimed[node] = name
        if not found and strict:
            raise ValueError(
                f"layer {name!r} has no {'/'.join(types)} node in the ONNX graph: is it used "
                f"in forward, and was the graph exported with hwnas.app.subnet_io.export_onnx "
                f"(dynamo=False)?"
            )
        out[name] = found
    return out
