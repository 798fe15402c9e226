"""Sessions on exported networks: ONNX Runtime and OpenVINO behind one interface.

:func:`onnx_session` exports a module to ONNX in a temporary folder (optionally
quantized to uniform INT8 first, :mod:`hwnas.hardware.int8`) and opens it in ONNX
Runtime (:func:`ort_session`) or OpenVINO (:func:`~hwnas.hardware.openvino.ov_session`);
:func:`time_session` times any such session with the garbage collector off.
"""

from __future__ import annotations

import copy
import gc
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.hardware.int8 import int8_model
from hwnas.hardware.openvino import ov_session
from hwnas.hardware.ort_sessions import ort_session

# the backends that time the module exported to ONNX (:func:`onnx_session`)
EXPORTED = ("onnxruntime", "openvino")


def on_device(module: nn.Module, device: str) -> nn.Module:
    """``module`` itself when it already lives on ``device``, else a moved copy."""
    target = torch.device(device)
    tensors = list(module.parameters()) + list(module.buffers())
    if all(t.device.type == target.type for t in tensors):
        return module
    return copy.deepcopy(module).to(target)


@contextmanager
def no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def input_names(xs: tuple) -> list[str]:
    """ONNX input names of :func:`onnx_session`: ``x`` for one input, else ``x0, x1, ...``."""
    return ["x"] if len(xs) == 1 else [f"x{i}" for i in range(len(xs))]


def onnx_session(
    module: nn.Module,
    xs: tuple,
    device: str,
    threads: int,
    backend: str = "onnxruntime",
    int8_feed: Mapping[str, Any] | None = None,
) -> Any:
    """Export ``module`` (eval mode, traced on the inputs ``xs``) to ONNX and open a
    session of ``backend`` on it: :func:`ort_session` (onnxruntime) or OpenVINO's
    :func:`~hwnas.hardware.openvino.ov_session` (openvino, cpu only), both with
    ``run(None, feed)``; its inputs are named by :func:`input_names`. With ``int8_feed``
    the export is first quantized to uniform INT8, calibrated on that feed."""
    if backend not in EXPORTED:
        raise ValueError(f"no ONNX session for backend {backend!r}; use one of {list(EXPORTED)}")
    opener = ov_session if backend == "openvino" else ort_session
    net = on_device(module, "cpu")
    with tempfile.TemporaryDirectory(prefix="hwnas-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                net,
                tuple(xs),
                str(path),
                input_names=input_names(xs),
                output_names=["y"],
                opset_version=17,
                dynamo=False,
            )
        if int8_feed is not None:  # time the uniform INT8 deployment instead
            path = int8_model(path, backend, dict(int8_feed))
        return opener(path, threads, device)


def time_session(session: Any, feed: Mapping[str, Any], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` runs of a ``session`` (ONNX Runtime's or an
    :class:`~hwnas.hardware.openvino.OvSession`) on ``feed``, after ``warmup`` untimed
    runs, with the garbage collector off."""
    times: list[float] = []
    with no_gc():
        for _ in range(warmup):
            session.run(None, feed)
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_exported(
    module: nn.Module,
    xs: tuple,
    device: str,
    threads: int,
    warmup: int,
    repeats: int,
    backend: str = "onnxruntime",
    precision: str = "fp32",
) -> list[float]:
    """:func:`time_session` of ``module`` exported to ONNX (uniform INT8 with
    ``precision="int8"``, :func:`hwnas.hardware.int8.int8_model`), run by ``backend``."""
    feed = {n: x.numpy() for n, x in zip(input_names(xs), xs, strict=True)}
    session = onnx_session(
        module, xs, device, threads, backend, feed if precision == "int8" else None
    )
    return time_session(session, feed, warmup, repeats)
