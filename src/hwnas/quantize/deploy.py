"""One call that deploys a precision assignment on either runtime.

``quantize.runtime`` chooses where the quantized model runs: ONNX Runtime (static QDQ
INT8 and ``MatMulNBits`` INT4, :mod:`.onnx_quant`, saved as ``.onnx``) or OpenVINO
(NNCF INT8 and INT4 weight compression, :mod:`.ov_quant`, saved as an IR ``.xml`` +
``.bin``). Both start from the same FP32 ONNX export and the same layer-to-node map, so
one assignment means the same layers in either runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from hwnas.hardware.openvino import openvino_version, require_openvino
from hwnas.hardware.records import onnxruntime_version
from hwnas.quantize.layers import Layer
from hwnas.quantize.onnx_quant import QuantSettings, quantize_assignment
from hwnas.quantize.ort_runtime import RUNTIMES

SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}
# op types of a layer's nodes on which each runtime has INT4 (weight-only) kernels
INT4_OPS = {"onnxruntime": {"MatMul"}, "openvino": {"MatMul", "Gemm"}}


def check_runtime(runtime: str, key: str = "quantize.runtime") -> None:
    """One-line errors for an unknown runtime or one not installed here."""
    if runtime not in RUNTIMES:
        raise ValueError(f"{key}={runtime!r}: choose one of {list(RUNTIMES)}")
    if runtime == "openvino":
        require_openvino(key)


def available_runtimes() -> list[str]:
    """The runtimes installed here, ONNX Runtime first."""
    return [r for r in RUNTIMES if runtime_version(r) is not None]


def runtime_version(runtime: str) -> str | None:
    return openvino_version() if runtime == "openvino" else onnxruntime_version()


def int4_layers(
    runtime: str,
    layers: Sequence[Layer],
    nodes: Mapping[str, Sequence[str]],
    fp32_onnx: str | Path,
) -> list[str]:
    """The ``layers`` that may take INT4 on ``runtime``: linear layers whose every node
    is an op type with INT4 kernels there (:data:`INT4_OPS`)."""
    proto = onnx.load(str(fp32_onnx), load_external_data=False)
    op_types = {n.name: n.op_type for n in proto.graph.node}
    ok = INT4_OPS[runtime]
    return [
        layer.name
        for layer in layers
        if layer.kind == "linear"
        and nodes.get(layer.name)
        and all(op_types[n] in ok for n in nodes[layer.name])
    ]


def deploy_assignment(
    runtime: str,
    fp32_onnx: str | Path,
    assignment: Mapping[str, str],
    calib_batches: Iterable[Any] | None,
    out_stem: str | Path,
    settings: QuantSettings | None = None,
    layer_nodes: Mapping[str, Sequence[str]] | None = None,
    cache_path: str | Path | None = None,
) -> Path:
    """Quantize ``fp32_onnx`` with ``assignment`` for ``runtime`` and save it as
    ``out_stem`` plus the runtime's suffix (:data:`SUFFIX`); returns the model's path.
    ``cache_path``: ONNX Runtime's calibration cache (OpenVINO calibrates each time)."""
    check_runtime(runtime)
    out = Path(f"{out_stem}{SUFFIX[runtime]}")  # not with_suffix: "only_layers.0_int8"
    if runtime == "openvino":
        from hwnas.quantize.ov_quant import ov_quantize_assignment

        calib = None if calib_batches is None else list(calib_batches)
        return ov_quantize_assignment(fp32_onnx, assignment, calib, out, settings, layer_nodes)
    return quantize_assignment(
        fp32_onnx, assignment, calib_batches, out, settings, layer_nodes, cache_path
    )
