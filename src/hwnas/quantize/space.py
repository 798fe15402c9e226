"""Per-layer precision as a search space of the existing kind, and its cost models.

One categorical :class:`~hwnas.spaces.base.Gene` per quantizable layer, named by the
layer's qualified module name, group ``precision``. Choices are ordered from lowest to
highest precision (:data:`PRECISION_ORDER`), because a categorical gene's last choice is
its largest (:attr:`Gene.ordered`): ``max_arch()`` is uniform FP32 (the reference
network, as the largest subnet elsewhere) and ``min_arch()`` the lowest precision
everywhere (smallest and, on a runtime with integer kernels, fastest). An arch's
``to_dict()`` is the assignment ``{layer: precision}`` that
:func:`hwnas.quantize.onnx_quant.quantize_assignment` takes, so every strategy
(evolution, random, NSGA-II, TPE) searches it unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hwnas.core.types import Timing
from hwnas.hardware.base import CostModel
from hwnas.quantize.deploy import deploy_assignment
from hwnas.quantize.layers import Layer
from hwnas.quantize.onnx_quant import QuantSettings, calibration_cache_name
from hwnas.quantize.ort_runtime import model_size_mb, time_onnx
from hwnas.spaces.base import Arch, Gene, SearchSpace

PRECISION_ORDER = ("int4", "int8", "fp32")  # lowest to highest
BYTES_PER_WEIGHT = {"int4": 0.5, "int8": 1.0, "fp32": 4.0}
GROUP = "precision"


def precision_space(
    layers: Sequence[str | Layer],
    choices: Sequence[str] = ("int8", "fp32"),
    name: str = "precision",
    int4: Iterable[str] | None = None,
) -> SearchSpace:
    """The space of per-layer precisions over ``layers`` (names or :class:`Layer`);
    ``choices`` are reordered lowest precision first (see the module doc). With
    ``int4`` (the layers the runtime has INT4 kernels for), ``int4`` is offered to
    those layers only; the others choose among the remaining ``choices``."""
    unknown = [c for c in choices if c not in PRECISION_ORDER]
    if unknown:
        raise ValueError(f"unknown precisions {unknown}; choose from {list(PRECISION_ORDER)}")
    ordered = tuple(p for p in PRECISION_ORDER if p in choices)
    names = [x.name if isinstance(x, Layer) else str(x) for x in layers]
    if not names:
        raise ValueError("a precision space needs at least one layer")
    capable = set(names if int4 is None else int4)
    narrow = tuple(p for p in ordered if p != "int4")
    genes = [Gene(n, ordered if n in capable else narrow, GROUP) for n in names]
    if any(len(g.choices) < 2 for g in genes):
        raise ValueError(f"precisions {list(ordered)} leave some layer a single choice")
    info = {"kind": "precision", "choices": list(ordered)}
    if int4 is not None and "int4" in ordered:
        info["int4_layers"] = [n for n in names if n in capable]
    return SearchSpace(name, genes, info)


def lowest(space: SearchSpace, precision: str) -> Arch:
    """Every layer at ``precision`` where it may take it, else at its nearest higher
    choice (uniform INT4 where a layer has no INT4 kernel keeps it at INT8)."""
    rank = {p: i for i, p in enumerate(PRECISION_ORDER)}
    return space.validate(
        {g.name: min((c for c in g.choices if rank[c] >= rank[precision]), key=rank.get)
         for g in space.genes}
    )  # fmt: skip


def uniform(space: SearchSpace, precision: str) -> Arch:
    """Every layer of ``space`` at ``precision`` (e.g. the uniform INT8 baseline)."""
    return space.validate({g.name: precision for g in space.genes})


def assignment_key(assignment: Mapping[str, str]) -> str:
    """A short stable name for an assignment (file names of quantized models)."""
    text = ",".join(f"{k}={v}" for k, v in sorted(assignment.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class WeightSizeCost(CostModel):
    """Analytic ``size_mb``: every assigned layer's weights at their precision's bytes
    (scales and zero points ignored) plus ``other_mb`` for everything else (biases,
    unassigned layers); instant, for filtering before anything is quantized."""

    name = "weight_size"

    def __init__(self, layers: Iterable[Layer], other_mb: float = 0.0):
        super().__init__()
        self.n_params = {layer.name: layer.n_params for layer in layers}
        self.other_mb = float(other_mb)

    def _compute(self, arch: Arch) -> dict[str, float]:
        total = sum(self.n_params[k] * BYTES_PER_WEIGHT[p] for k, p in arch.items())
        return {"size_mb": total / 1e6 + self.other_mb}

    def describe(self) -> str:
        return "size: analytic weight bytes per precision"


class MeasuredQuantCost(CostModel):
    """``latency_ms`` and ``size_mb`` of each assignment as deployed: quantized for
    ``runtime`` (:func:`hwnas.quantize.deploy.deploy_assignment`) into ``folder`` (one
    model per assignment, kept), timed with :func:`time_onnx` and sized on disk; cached
    per arch. One ORT calibration serves every assignment (:func:`calibration_cache_name`)."""

    name = "measured_quant"

    def __init__(
        self,
        fp32_onnx: str | Path,
        calib_batches: Iterable[Any],
        folder: str | Path,
        settings: QuantSettings | None = None,
        layer_nodes: Mapping[str, Sequence[str]] | None = None,
        inputs: Any = None,
        batch_size: int = 1,
        threads: int = 1,
        warmup: int = Timing.warmup,
        repeats: int = Timing.repeats,
        runtime: str = "onnxruntime",
    ):
        super().__init__()
        self.runtime = runtime
        self.fp32_onnx, self.folder = Path(fp32_onnx), Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.calib_batches = list(calib_batches)
        self.settings, self.layer_nodes, self.inputs = settings, layer_nodes, inputs
        self.timing = dict(batch_size=batch_size, threads=threads, warmup=warmup, repeats=repeats)
        self.paths: dict[Arch, Path] = {}

    def model_path(self, arch: Arch) -> Path:
        """The quantized model of ``arch`` (written on first use)."""
        if arch not in self.paths:
            self.paths[arch] = deploy_assignment(
                self.runtime,
                self.fp32_onnx,
                arch.to_dict(),
                self.calib_batches,
                self.folder / f"q_{assignment_key(arch)}",
                self.settings,
                self.layer_nodes,
                cache_path=self.folder / calibration_cache_name(self.fp32_onnx, self.settings),
            )
        return self.paths[arch]

    def _compute(self, arch: Arch) -> dict[str, float]:
        path = self.model_path(arch)
        stats = time_onnx(path, self.inputs, runtime=self.runtime, **self.timing)
        return {"latency_ms": stats.median_ms, "size_mb": model_size_mb(path)}

    def describe(self) -> str:
        t = self.timing
        return (
            f"latency/size: {self.runtime} quantized model measured (cpu, {t['threads']} "
            f"threads, batch "
            f"{t['batch_size']}; median of {t['repeats']} after {t['warmup']} warm-up)"
        )
