"""OpenVINO as an inference runtime, behind the session interface ONNX Runtime has.

OpenVINO (``pip install openvino``; optional: ``pip install 'hwnas[openvino]'``) reads
an ONNX file or its own IR (``model.xml`` + ``model.bin``) and compiles it for the CPU
plugin. :func:`ov_session` returns an :class:`OvSession` whose ``run(None, feed)`` and
``get_inputs()`` behave as an ``onnxruntime.InferenceSession``'s, so the timing loop,
the random feeds and the module wrapper written for ONNX Runtime serve both runtimes.

A session is compiled with a fixed number of inference threads, one stream, the
latency hint and FP32 inference precision: on a CPU with BF16 support OpenVINO would
otherwise run an FP32 model in BF16, and an FP32 baseline must be FP32. Quantized
layers (INT8 FakeQuantize, compressed weights) still run on integer kernels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

# OpenVINO op types that carry a layer's weight
WEIGHT_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")
INSTALL_HINT = "pip install 'hwnas[openvino]' (the openvino and nncf packages)"

# OpenVINO element types as ONNX Runtime spells input types
_TYPES = {
    "f32": "tensor(float)",
    "f64": "tensor(double)",
    "f16": "tensor(float16)",
    "i64": "tensor(int64)",
    "i32": "tensor(int32)",
    "i8": "tensor(int8)",
    "u8": "tensor(uint8)",
    "boolean": "tensor(bool)",
}


def openvino_version() -> str | None:
    """The installed OpenVINO's version, ``None`` when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


def require_openvino(key: str) -> None:
    """A one-line ``ValueError`` naming the setting ``key`` that asked for OpenVINO
    when it is not installed."""
    if openvino_version() is None:
        raise ValueError(
            f"{key}=openvino: OpenVINO is not installed; {INSTALL_HINT}, or choose "
            f"{key}=onnxruntime"
        )


@lru_cache(maxsize=1)
def ov_core() -> Any:
    """One OpenVINO ``Core`` per process (it caches plugins)."""
    import openvino as ov

    return ov.Core()


@dataclass(frozen=True)
class OvInput:
    """An input as ``onnxruntime.NodeArg`` describes it: name, shape (a string for a
    dynamic dimension) and type (``tensor(float)``)."""

    name: str
    shape: list
    type: str


class OvSession:
    """A compiled OpenVINO model with ONNX Runtime's session calls (see the module doc)."""

    def __init__(self, model: Any, threads: int = 1):
        import openvino as ov

        self.compiled = ov_core().compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": int(threads),
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": ov.Type.f32,
            },
        )
        self.request = self.compiled.create_infer_request()
        self._inputs = []
        for port in self.compiled.inputs:
            dims = [
                int(d.get_length()) if d.is_static else f"d{i}"
                for i, d in enumerate(port.get_partial_shape())
            ]
            kind = _TYPES.get(port.get_element_type().get_type_name(), "tensor(unknown)")
            self._inputs.append(OvInput(port.get_any_name(), dims, kind))

    def get_inputs(self) -> list[OvInput]:
        return list(self._inputs)

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, Any]) -> list[Any]:
        """Outputs in the model's order (``output_names`` must be ``None``: all)."""
        if output_names is not None:
            raise ValueError("OvSession.run returns every output: pass None")
        results = self.request.infer({k: np.asarray(v) for k, v in feed.items()})
        return [np.array(results[port]) for port in self.compiled.outputs]


def ov_session(path: str | Path, threads: int = 1, device: str = "cpu") -> OvSession:
    """An :class:`OvSession` on an ``.onnx`` or ``.xml`` (IR) file, CPU only."""
    if device != "cpu":
        raise ValueError(
            f"OpenVINO timing runs on the cpu here, not {device!r}; use hardware.device=cpu"
        )
    require_openvino("backend")
    return OvSession(ov_core().read_model(str(path)), threads)


def ir_files(path: str | Path) -> list[Path]:
    """The files of an OpenVINO IR model: ``model.xml`` and its ``model.bin``."""
    xml = Path(path)
    return [xml, xml.with_suffix(".bin")]


def ov_op_names(model: Any, onnx_nodes: Iterable[str]) -> dict[str, str]:
    """``{onnx node: OpenVINO op}`` for the weight-carrying ops of ``model`` that came
    from ``onnx_nodes`` (see the module doc); a node without such an op is left out."""
    wanted = set(onnx_nodes)
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHT_OPS:
            continue
        name = op.get_friendly_name()
        base = name.removesuffix("/WithoutBiases")
        if base in wanted:
            out[base] = name
    return out
