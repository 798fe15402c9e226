"""Per-layer sensitivity to INT8, measured and estimated, and an additive accuracy model.

:func:`layer_sensitivity` quantizes one layer at a time on the deployment runtime (the
model as it would be deployed), scores it on evaluation batches and puts the metric drop next
to the Hessian trace and HAWQ-v2 ``Omega`` of that layer, one row per layer for the
report. :func:`estimate_accuracy` adds per-layer drops up to rank assignments a search
does not measure; :func:`hessian_drops` turns ``Omega`` into drops in metric units
(least-squares scale through the origin, fitted on the measured rows) for precisions
or layers never measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.quantize.deploy import deploy_assignment
from hwnas.quantize.hessian import TraceEstimate, hawq_sensitivity
from hwnas.quantize.layers import Layer, onnx_layer_nodes, quantizable_layers
from hwnas.quantize.onnx_quant import QuantSettings, calibration_cache_name
from hwnas.quantize.ort_runtime import OrtModule

log = logging.getLogger(__name__)

# ``evaluate(module) -> metric``, higher is better (e.g. top-1 accuracy); the module is
# an :class:`OrtModule` running the quantized ONNX file
Evaluate = Callable[[nn.Module], float]


@dataclass(frozen=True)
class SensitivityRow:
    """One layer: the metric with only this layer at ``precision`` next to the FP32
    ``base_metric`` (``drop = base_metric - metric``, > 0 is worse), and the Hessian
    trace (mean, standard error) and HAWQ-v2 ``omega`` when traces were given."""

    layer: str
    kind: str
    n_params: int
    precision: str
    base_metric: float
    metric: float
    drop: float
    trace: float = float("nan")
    trace_stderr: float = float("nan")
    omega: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top1_evaluator(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Evaluate:
    """An :data:`Evaluate` computing top-1 accuracy over fixed ``(inputs, labels)``
    batches (classification; other tasks pass ``lambda m: task.evaluate(m, loader)[...]``)."""
    batches = list(batches)

    def evaluate(module: nn.Module) -> float:
        correct = total = 0
        with torch.no_grad():
            for x, y in batches:
                correct += int((module(x).argmax(dim=1) == y).sum())
                total += int(y.numel())
        return correct / total

    return evaluate


def layer_sensitivity(
    model: nn.Module,
    fp32_onnx: str | Path,
    evaluate: Evaluate,
    calib_batches: Iterable[Any],
    folder: str | Path,
    traces: Mapping[str, TraceEstimate] | None = None,
    settings: QuantSettings | None = None,
    layers: Sequence[Layer] | None = None,
    precision: str = "int8",
    threads: int = 1,
    nodes: Mapping[str, Sequence[str]] | None = None,
    runtime: str = "onnxruntime",
    base: float | None = None,
) -> list[SensitivityRow]:
    """One :class:`SensitivityRow` per layer of ``layers`` (default: every quantizable
    layer of ``model``, whose export is ``fp32_onnx``): that layer alone at
    ``precision`` deployed on ``runtime`` (:func:`hwnas.quantize.deploy.deploy_assignment`),
    scored by ``evaluate``; the FP32 base is ``evaluate`` on ``fp32_onnx`` itself in that
    runtime (or ``base`` when given). Quantized models go to ``folder`` (one ORT
    calibration for all); ``nodes`` is the layers' ONNX nodes (default:
    :func:`onnx_layer_nodes` by name)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = quantizable_layers(model) if layers is None else list(layers)
    if nodes is None:
        nodes = onnx_layer_nodes(model, fp32_onnx, layers)
    cache = folder / calibration_cache_name(fp32_onnx, settings)
    calib = list(calib_batches)
    omegas = hawq_sensitivity(model, traces, precision) if traces else {}
    if base is None:
        base = float(evaluate(OrtModule(fp32_onnx, threads, runtime)))
    rows = []
    for layer in layers:
        out = deploy_assignment(
            runtime, fp32_onnx, {layer.name: precision}, calib,
            folder / f"only_{layer.name or 'root'}_{precision}", settings, nodes, cache,
        )  # fmt: skip
        metric = float(evaluate(OrtModule(out, threads, runtime)))
        trace = traces.get(layer.name) if traces else None
        rows.append(
            SensitivityRow(
                layer=layer.name,
                kind=layer.kind,
                n_params=layer.n_params,
                precision=precision,
                base_metric=base,
                metric=metric,
                drop=base - metric,
                trace=trace.mean if trace else float("nan"),
                trace_stderr=trace.stderr if trace else float("nan"),
                omega=omegas.get(layer.name, float("nan")),
            )
        )
        log.debug("sensitivity %s: %.4f -> %.4f", layer.name, base, metric)
    return rows


def _by_precision(
    rows: Iterable[SensitivityRow], drop: Callable[[list[SensitivityRow]], dict[str, float]]
) -> dict[str, Any]:
    """``drop(rows of one precision)`` per precision: ``{layer: drop}`` when every row is
    INT8, else ``{layer: {precision: drop}}`` (both are :func:`estimate_accuracy` input)."""
    groups: dict[str, list[SensitivityRow]] = {}
    for r in rows:
        groups.setdefault(r.precision, []).append(r)
    if set(groups) <= {"int8"}:
        return drop(groups.get("int8", []))
    out: dict[str, dict[str, float]] = {}
    for precision, group in groups.items():
        for layer, d in drop(group).items():
            out.setdefault(layer, {})[precision] = d
    return out


def measured_drops(rows: Iterable[SensitivityRow]) -> dict[str, Any]:
    """``{layer: drop}`` of measured rows (the ``per_layer_drop`` of
    :func:`estimate_accuracy`; per precision when rows hold several)."""
    return _by_precision(rows, lambda group: {r.layer: r.drop for r in group})


def _fit(rows: list[SensitivityRow]) -> dict[str, float]:
    den = sum(r.omega**2 for r in rows)
    c = sum(r.omega * r.drop for r in rows) / den if den > 0 else 0.0
    return {r.layer: c * r.omega for r in rows}


def hessian_drops(rows: Sequence[SensitivityRow]) -> dict[str, Any]:
    """``{layer: c * omega}`` with ``c`` the least-squares fit of measured drop on
    ``omega`` through the origin (0 when every ``omega`` is 0), so Hessian estimates
    read in metric units; one fit per precision when rows hold several. Rows need
    ``omega`` (:func:`layer_sensitivity` with traces)."""
    if any(r.omega != r.omega for r in rows):
        raise ValueError("hessian_drops needs rows with omega: pass traces to layer_sensitivity")
    return _by_precision(rows, _fit)


def estimate_accuracy(
    assignment: Mapping[str, str],
    base_acc: float,
    per_layer_drop: Mapping[str, float | Mapping[str, float]],
) -> float:
    """Additive estimate: ``base_acc`` minus the drop of every layer not at FP32.
    ``per_layer_drop[layer]`` is the INT8 drop, or ``{precision: drop}`` when several
    precisions were measured. A quantized layer without a drop is a ``KeyError``."""
    total = 0.0
    for layer, precision in assignment.items():
        if precision == "fp32":
            continue
        if layer not in per_layer_drop:
            raise KeyError(f"no measured or estimated drop for layer {layer!r}")
        drop = per_layer_drop[layer]
        if isinstance(drop, Mapping):
            if precision not in drop:
                raise KeyError(f"no drop for layer {layer!r} at {precision}")
            drop = drop[precision]
        elif precision != "int8":
            raise KeyError(f"layer {layer!r}: a bare drop is the INT8 drop, not {precision}")
        total += float(drop)
    return base_acc - total
