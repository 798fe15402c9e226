"""Analytic costs: parameters, FLOPs and peak activation memory, no timing needed.

Parameters and FLOPs are exact, from the elastic model's per-op formulas
(``ElasticModel.cost_of``; FLOPs count 2 per multiply-add of convolutions and linear
layers, as ``torch.utils.flop_counter.FlopCounterMode`` does, per sample).

``memory_mb`` estimates the peak activation memory of one eager float32 inference
pass at the configured batch size, in MB (10^6 bytes); weights are not included.
While a layer runs, the tensors counted as alive are the network input (held by the
caller), the input of the current block (held for its shortcut and by its
``forward`` frame), and the layer's own input and output; the estimate is the
largest such sum over all layers. A model that knows its layer shapes computes it
(``ElasticModel.peak_activation_elements``, e.g. the elastic CNN) without building
the subnet; other elastic models are traced once per arch with forward hooks on
their exported subnet.

Also here, because they need the model's structure but no timing: the latency-unit
keys of an arch (:func:`unit_keys`), a fingerprint of the supernet's layer sizes
(:func:`model_signature`) and archs that cover every unit (:func:`covering_archs`),
used by :mod:`hwnas.hardware.table`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hwnas.elastic.base import ElasticModel
from hwnas.hardware.base import CostModel
from hwnas.hardware.latency import InputSpec, make_inputs
from hwnas.spaces.base import Arch, Gene, SearchSpace

BYTES_PER_ELEMENT = 4  # float32


def traced_peak_elements(module: nn.Module, inputs: InputSpec) -> int:
    """Largest ``input + input-of-layer + output-of-layer`` over the leaf modules of
    ``module`` for one sample (generic fallback; block inputs are not tracked);
    ``inputs`` is a shape without the batch dimension or an input callable."""
    sizes: list[int] = []

    def hook(_mod: nn.Module, args: tuple, output: Any) -> None:
        n_in = sum(a.numel() for a in args if isinstance(a, torch.Tensor))
        n_out = output.numel() if isinstance(output, torch.Tensor) else 0
        sizes.append(n_in + n_out)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    try:
        module.eval()
        xs = make_inputs(inputs, 1, torch.Generator().manual_seed(0))
        with torch.inference_mode():
            module(*xs)
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return sum(x.numel() for x in xs) + max(sizes, default=0)


class AnalyticCost(CostModel):
    """``params_m`` (millions), ``flops_m`` (MFLOPs per sample) and ``memory_mb`` (peak
    activation MB at ``batch_size``, float32) of each arch."""

    name = "analytic"

    def __init__(self, model: ElasticModel, batch_size: int = 1):
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size = model, int(batch_size)

    def peak_elements(self, arch: Arch) -> int:
        computed = self.model.peak_activation_elements(arch)
        if computed is not None:  # from the layer shapes (the model knows them)
            return computed
        return traced_peak_elements(self.model.export(arch), self.model.example_inputs)

    def _compute(self, arch: Arch) -> dict[str, float]:
        costs = dict(self.model.cost_of(arch, batch_size=1))
        elements = self.peak_elements(arch) * self.batch_size
        costs["memory_mb"] = elements * BYTES_PER_ELEMENT / 1e6
        return costs

    def describe(self) -> str:
        return (
            f"analytic: params, FLOPs per sample, peak activation memory "
            f"(batch {self.batch_size}, float32)"
        )


def unit_keys(model: ElasticModel, arch: Mapping[str, Any]) -> list[str]:
    """The latency-unit keys of ``arch`` (the model's :meth:`latency_unit_keys`)."""
    return model.latency_unit_keys(arch)


def model_signature(model: ElasticModel) -> str:
    """Short hash of the supernet's class, input shape and tensor shapes: models with
    the same genes but other layer sizes get different signatures."""
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    blob = json.dumps([type(model).__name__, list(model.input_shape), shapes])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def covering_archs(space: SearchSpace) -> list[Arch]:
    """Archs that together contain every latency unit of ``space``: one per combination
    of a value per gene group (each gene of the group set to it, or to its largest
    choice when it has no such value); ungrouped genes vary as groups of their own."""

    def group_of(gene: Gene) -> str:
        return gene.group or f"gene:{gene.name}"

    groups: dict[str, list] = {}
    for g in space.genes:
        values = groups.setdefault(group_of(g), [])
        values += [c for c in g.choices if c not in values]
    largest = space.max_arch()
    archs: dict[Arch, None] = {}
    for combo in itertools.product(*groups.values()):
        pick = dict(zip(groups, combo, strict=True))
        values = {}
        for g in space.genes:
            v = pick[group_of(g)]
            values[g.name] = v if v in g.choices else largest[g.name]
        archs[space.canonical(values)] = None
    return list(archs)
