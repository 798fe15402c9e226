"""Deploying a precision assignment: ONNX Runtime static QDQ quantization.

:func:`quantize_assignment` turns an FP32 ONNX file (``hwnas.app.subnet_io.export_onnx``)
and ``{layer: "fp32" | "int8" | "int4"}`` into a QDQ model in which exactly the INT8
layers' Conv/Gemm/MatMul nodes are quantized: weights per output channel (QInt8,
symmetric), activations with ranges calibrated on real batches (QUInt8 by default, as
ORT recommends for x86 CPUs). ORT then fuses each ``DQ -> Conv -> Q`` into an integer
kernel. INT4 layers (MatMul only) become weight-only ``MatMulNBits`` nodes
(:func:`int4_weights`). :mod:`hwnas.quantize.ort_runtime` times and sizes what was
deployed.

ORT quirks handled here: an empty ``nodes_to_quantize`` means *every* node, so an
all-FP32 assignment copies the FP32 file instead of calling the quantizer; ORT
recommends 7-bit weights (``reduce_range``) on x86 without VNNI, which
:attr:`QuantSettings.reduce_range` (``None``) follows by reading the CPU flags;
calibration ranges depend only on the model and the data, so one calibration cache
(``cache_path``) serves every assignment of a search.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hwnas.core import atomic
from hwnas.hardware.int8 import cpu_flags as cpu_flags  # re-exported (cards, benchmarks)
from hwnas.hardware.int8 import kept_float, quiet_ort, reduce_range_default
from hwnas.quantize.layers import QUANTIZABLE_OPS, layer_nodes_by_name
from hwnas.quantize.ort_runtime import as_feed

log = logging.getLogger(__name__)

ORT_PRECISIONS = ("fp32", "int8", "int4")
INT4_BLOCK = 32  # MatMulNBits block: input channels per 4-bit scale
CALIBRATIONS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class QuantSettings:
    """How ORT quantizes the INT8 layers.

    ``calibration``: ``minmax``, ``percentile`` (``percentile`` of |x|, e.g. 99.999)
    or ``entropy``. ``activations``: ``uint8`` (asymmetric; ORT's choice for x86) or
    ``int8`` (symmetric; ARM). Weights are always INT8, per channel when
    ``per_channel``. ``reduce_range``: 7-bit weights against overflow in CPUs' 8-bit
    dot products; ``None`` = on for x86 without VNNI (:func:`reduce_range_default`).
    ``other_ops``: also quantize the ops between INT8 layers (Add, pooling, ...), which
    saves Q/DQ pairs in uniform INT8; with ``False`` only the layers' nodes change.
    """

    calibration: str = "minmax"
    percentile: float = 99.999
    activations: str = "uint8"
    per_channel: bool = True
    reduce_range: bool | None = None
    other_ops: bool = False

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise ValueError(
                f"calibration {self.calibration!r}: choose one of {list(CALIBRATIONS)}"
            )
        if self.activations not in ACTIVATION_TYPES:
            raise ValueError(
                f"activations {self.activations!r}: choose one of {list(ACTIVATION_TYPES)}"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reduce_range": self.resolved_reduce_range}

    @property
    def resolved_reduce_range(self) -> bool:
        return reduce_range_default() if self.reduce_range is None else self.reduce_range


def onnx_input_names(path: str | Path) -> list[str]:
    """The graph inputs of an ONNX file that are fed at run time (not initializers)."""
    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits]


class BatchReader:
    """ORT ``CalibrationDataReader`` over a list of model-input batches."""

    def __init__(self, batches: Iterable[Any], input_names: Sequence[str]):
        self.feeds = [as_feed(b, input_names) for b in batches]
        if not self.feeds:
            raise ValueError("calibration needs at least one batch")
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.feeds = self.feeds[start_index:end_index]
        self._next = 0


def check_assignment(
    assignment: Mapping[str, str],
    layer_nodes: Mapping[str, Sequence[str]] | None = None,
    op_types: Mapping[str, str] | None = None,
) -> None:
    """A ``ValueError`` for a precision ORT cannot deploy: anything but fp32/int8/int4,
    or INT4 on a layer whose node is not a MatMul (``op_types``: node -> op type)."""
    bad = {k: v for k, v in assignment.items() if v not in ORT_PRECISIONS}
    if bad:
        raise ValueError(f"ONNX Runtime supports {list(ORT_PRECISIONS)} per layer; got {bad}")
    if layer_nodes is None or op_types is None:
        return
    for layer, p in assignment.items():
        kinds = {op_types[n] for n in layer_nodes.get(layer, [])}
        if p == "int4" and kinds - {"MatMul"}:
            raise ValueError(
                f"layer {layer!r} computes a {'/'.join(sorted(kinds))}: ONNX Runtime has INT4 "
                "kernels for MatMul only (MatMulNBits); keep it at int8 or fp32"
            )


def int4_weights(
    src: str | Path, out: str | Path, nodes: Sequence[str], block_size: int = INT4_BLOCK
) -> Path:
    """Rewrite the MatMul ``nodes`` of ``src`` (their weights constant) as ONNX Runtime's
    weight-only ``MatMulNBits``: 4-bit symmetric weights in blocks of ``block_size``
    input channels, FP32 activations; everything else unchanged. Writes ``out``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    proto = onnx.load(str(src))
    every = [n.name for n in proto.graph.node if n.op_type == "MatMul"]
    quantizer = MatMulNBitsQuantizer(
        proto,
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        nodes_to_exclude=[n for n in every if n not in set(nodes)],
    )
    with quiet_ort():
        quantizer.process()
    done = {n.name for n in quantizer.model.model.graph.node if n.op_type == "MatMulNBits"}
    if len(done) < len(nodes):
        raise ValueError(
            f"ONNX Runtime left {len(nodes) - len(done)} of the INT4 MatMuls unquantized "
            "(a weight that is not a constant?)"
        )
    tmp = atomic.temporary_path(Path(out))
    quantizer.model.save_model_to_file(str(tmp))
    return atomic.replace_file(tmp, Path(out))


def calibration_cache_name(fp32_onnx: str | Path, settings: QuantSettings | None = None) -> str:
    """``calibration_<hash>.json``, hashing the FP32 model's bytes, the calibration
    method and which op types are calibrated (``other_ops``): a cache left by another
    model or setting in the same folder is never reused (the calibration data is the
    caller's to keep fixed)."""
    s = settings or QuantSettings()
    pct = s.percentile if s.calibration == "percentile" else ""
    method = f"{s.calibration}:{pct}:{s.other_ops}"
    digest = hashlib.sha1(Path(fp32_onnx).read_bytes() + method.encode()).hexdigest()[:12]
    return f"calibration_{digest}.json"


def quantize_assignment(
    fp32_onnx_path: str | Path,
    assignment: Mapping[str, str],
    calib_batches: Iterable[Any] | None,
    out_path: str | Path,
    settings: QuantSettings | None = None,
    layer_nodes: Mapping[str, Sequence[str]] | None = None,
    cache_path: str | Path | None = None,
) -> Path:
    """Write to ``out_path`` the QDQ model of ``fp32_onnx_path`` in which exactly the
    layers that ``assignment`` sets to ``"int8"`` are quantized (layers it leaves out
    stay FP32) and return the path.

    ``calib_batches``: model-input batches for activation ranges (may be ``None`` when
    ``cache_path`` already holds a calibration of the same method). ``layer_nodes``:
    ``{layer: [node names]}`` (default: matched from the graph by name,
    :func:`hwnas.quantize.layers.layer_nodes_by_name`).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = settings or QuantSettings()
    check_assignment(assignment)
    src, out = Path(fp32_onnx_path), Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    int4 = [name for name, p in assignment.items() if p == "int4"]
    if int4 or layer_nodes is None:
        layer_nodes = layer_nodes or layer_nodes_by_name(src, list(assignment))
    if int4:
        proto = onnx.load(str(src), load_external_data=False)
        check_assignment(assignment, layer_nodes, {n.name: n.op_type for n in proto.graph.node})
        eight = {k: ("fp32" if p == "int4" else p) for k, p in assignment.items()}
        quantize_assignment(src, eight, calib_batches, out, settings, layer_nodes, cache_path)
        return int4_weights(out, out, [n for name in int4 for n in layer_nodes[name]])
    int8 = [name for name, p in assignment.items() if p == "int8"]
    if not int8:  # ORT reads an empty nodes_to_quantize as "every node"
        if src.resolve() != out.resolve():
            shutil.copyfile(src, out)
        return out
    missing = [n for n in int8 if n not in layer_nodes]
    if missing:
        raise KeyError(f"layer_nodes has no entry for INT8 layers {missing}")
    chosen = [node for name in int8 for node in layer_nodes[name]]
    fp32_nodes = [node for name, nodes in layer_nodes.items() if name not in int8 for node in nodes]
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[settings.calibration]
    extra: dict[str, Any] = {"ActivationSymmetric": settings.activations == "int8"}
    if settings.calibration == "percentile":
        extra["CalibPercentile"] = settings.percentile
    reader = None
    if calib_batches is not None:
        reader = BatchReader(calib_batches, onnx_input_names(src))
    quant_kw: dict[str, Any]
    if settings.other_ops:
        # every supported op type; FP32 layers (and anything not a layer of the
        # assignment that computes a Conv/Gemm/MatMul) excluded by name
        assigned = {node for nodes in layer_nodes.values() for node in nodes}
        proto = onnx.load(str(src), load_external_data=False)
        stray = [
            n.name
            for n in proto.graph.node
            if n.op_type in QUANTIZABLE_OPS and n.name not in assigned
        ] + kept_float(proto)
        quant_kw = {"nodes_to_exclude": fp32_nodes + stray}
    else:
        quant_kw = {"nodes_to_quantize": chosen, "op_types_to_quantize": list(QUANTIZABLE_OPS)}
    activation = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
    with quiet_ort():
        tmp = atomic.temporary_path(out)  # a kill leaves no truncated model behind
        quantize_static(
            str(src),
            str(tmp),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.resolved_reduce_range,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options=extra,
            calibration_cache_path=None if cache_path is None else str(cache_path),
            **quant_kw,
        )
    atomic.replace_file(tmp, out)
    return out


def quantized_nodes(path: str | Path) -> set[str]:
    """Names of the Conv/Gemm/MatMul nodes of an ONNX file whose weight input comes
    from a ``DequantizeLinear`` (i.e. the nodes that run in INT8 after ORT's fusion)."""
    proto = onnx.load(str(path), load_external_data=False)
    dq_outputs = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {
        n.name
        for n in proto.graph.node
        if n.op_type in QUANTIZABLE_OPS and len(n.input) > 1 and n.input[1] in dq_outputs
    }
