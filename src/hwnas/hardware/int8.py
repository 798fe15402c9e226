"""Timing a network as it deploys in INT8: ``hardware.precision=int8``.

The fastest FP32 subnet need not be the fastest INT8 one (depthwise and small layers
gain little from integer kernels), so a search for an INT8 deployment ranks subnets by
the latency of their INT8 model. :func:`int8_model` quantizes an exported ONNX file
uniformly, every weight-carrying Conv/Gemm/MatMul in INT8, as the quantize stage's
uniform INT8 baseline does on either runtime: ONNX Runtime static QDQ (per-channel INT8
weights, UInt8 activations, the ops between layers too but :func:`kept_float`) or
NNCF's post-training quantization for OpenVINO. Activation ranges come from the timing
batch itself: ranges change what a model computes, not how fast.

A timed backend is written ``<runtime>:int8`` (``onnxruntime:int8``, ``openvino:int8``)
in settings, labels and records, so INT8 latency tables never mix with FP32 ones.
"""

from __future__ import annotations

import io
import logging
import platform
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
# ops the ONNX Runtime quantizer leaves in FP32 beside the layers (``other_ops``): 8-bit
# LayerNorm and Softmax cost a transformer several times the error of its layers
FLOAT_OPS = ("LayerNormalization", "Softmax")


def split_backend(backend: str) -> tuple[str, str]:
    """``"openvino:int8"`` -> ``("openvino", "int8")``; ``"torch"`` -> ``("torch", "fp32")``."""
    runtime, _, precision = backend.partition(":")
    return runtime, precision or "fp32"


def timed_backend(backend: str, precision: str) -> str:
    """The backend string of ``backend`` timing ``precision`` models."""
    return backend if precision == "fp32" else f"{backend}:{precision}"


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def reduce_range_default() -> bool:
    """ORT's advice: 7-bit weights on x86 CPUs without VNNI, full 8 bits elsewhere."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not ({"avx512_vnni", "avx_vnni"} & cpu_flags())


def _constants(proto: onnx.ModelProto) -> set[str]:
    """Tensors that hold weights: initializers, ``Constant`` outputs, and what a
    ``Transpose``/``Reshape``/``Cast`` of nothing but those produces (a Linear on
    3-D input exports as ``MatMul(x, Transpose(W))`` in some opsets)."""
    const = {i.name for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" or (
            node.op_type in ("Transpose", "Reshape", "Cast", "Identity")
            and all(i in const for i in node.input if i)
        ):
            const.update(node.output)
    return const


def weight_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv/Gemm/MatMul nodes whose second input is a weight (a constant), in graph
    order: a layer's node. Attention's ``Q K^T`` and ``P V`` are MatMuls of two
    activations and belong to no layer."""
    const = _constants(proto)
    return [
        n
        for n in proto.graph.node
        if n.op_type in QUANTIZABLE_OPS and len(n.input) > 1 and n.input[1] in const
    ]


def nncf_float_types(proto: onnx.ModelProto) -> list[str]:
    """OpenVINO op types NNCF leaves in FP32, as :func:`kept_float` does for ONNX Runtime:
    in a graph with attention, the adds (the padding mask's -inf), Softmax and the
    LayerNorms (``MVN`` in OpenVINO); none in a graph without attention."""
    attention = any(n.op_type == "Softmax" for n in proto.graph.node)
    return ["Add", "Softmax", "MVN"] if attention else []


def kept_float(proto: onnx.ModelProto) -> list[str]:
    """Nodes that ``other_ops`` does not quantize: :data:`FLOAT_OPS`, and in a graph with
    attention (a Softmax) every Add, whose inputs include the additive padding mask
    (-inf: no 8-bit range holds it) and the residual stream's outliers."""
    attention = any(n.op_type == "Softmax" for n in proto.graph.node)
    return [
        n.name
        for n in proto.graph.node
        if n.op_type in FLOAT_OPS or (attention and n.op_type == "Add")
    ]


# what ORT's quantizer logs on the root logger that is advice, not a problem
ORT_NOISE = ("pre-process", "to be an initializer", "is out-of-range for weight")


class _DropOrtAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(t in text for t in ORT_NOISE)


@contextmanager
def quiet_ort():
    """ORT's quantizer logs "consider pre-processing" on the root logger twice a call
    (pre-processing optimises the graph and would rename its nodes, so we skip it), notes
    on per-channel axes of 1-D weights and on biases that are not initializers, and
    prints progress for histogram calibration: keep them out of the run's output."""
    root, filt, printed = logging.getLogger(), _DropOrtAdvice(), io.StringIO()
    root.addFilter(filt)
    try:
        with redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(filt)
        if printed.getvalue().strip():
            log.debug("onnxruntime: %s", printed.getvalue().strip())


class _OneFeed:
    """ORT ``CalibrationDataReader`` over one feed."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self.feeds, self.i = [feed], 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.i += 1
        return self.feeds[0] if self.i == 1 else None

    def rewind(self) -> None:
        self.i = 0


def int8_model(path: str | Path, runtime: str, feed: dict[str, np.ndarray]) -> Path:
    """Quantize the ONNX file ``path`` uniformly to INT8 for ``runtime`` (see the module
    doc), calibrated on ``feed``; the model is written beside ``path`` and its path
    returned (``.onnx`` for ONNX Runtime, ``.xml`` IR for OpenVINO)."""
    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    layers = {n.name for n in weight_nodes(proto)}
    stray = [
        n.name for n in proto.graph.node if n.op_type in QUANTIZABLE_OPS and n.name not in layers
    ]
    if runtime == "openvino":
        return _openvino_int8(path, feed, stray)
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = path.with_name(path.stem + "_int8.onnx")
    with quiet_ort():
        quantize_static(
            str(path), str(out), calibration_data_reader=_OneFeed(feed),
            quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=reduce_range_default(), activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=stray + kept_float(proto),
        )  # fmt: skip
    return out


def _openvino_int8(path: Path, feed: dict[str, np.ndarray], stray: list[str]) -> Path:
    import nncf
    import openvino as ov

    from hwnas.hardware.openvino import ov_core, ov_op_names

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    nncf.set_log_level(logging.WARNING)
    model = ov_core().read_model(str(path))
    skip = list(ov_op_names(model, stray).values())
    with redirect_stdout(io.StringIO()):  # NNCF's progress bars
        model = nncf.quantize(
            model, nncf.Dataset([feed]), preset=nncf.QuantizationPreset.MIXED, subset_size=1,
            ignored_scope=nncf.IgnoredScope(
                names=skip, types=nncf_float_types(onnx.load(str(path))), validate=False
            ),
        )  # fmt: skip
    out = path.with_name(path.stem + "_int8.xml")
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


__all__ = [
    "PRECISIONS",
    "cpu_flags",
    "int8_model",
    "kept_float",
    "reduce_range_default",
    "split_backend",
    "timed_backend",
    "weight_nodes",
]
