"""Deploying a precision assignment on OpenVINO: NNCF post-training quantization.

:func:`ov_quantize_assignment` reads the FP32 ONNX export into OpenVINO and gives each
layer its precision through NNCF's own mechanisms, saving an OpenVINO IR
(``q_<key>.xml`` + ``.bin``):

- ``int8``: :func:`nncf.quantize` (8-bit weights per output channel, 8-bit
  activations calibrated on the same batches as ONNX Runtime's) with every
  weight-carrying op that is not an INT8 layer in the ignored scope, so exactly the
  INT8 layers get FakeQuantize on their inputs and weights (the preset follows
  ``QuantSettings.activations``: ``uint8`` is NNCF's mixed preset, asymmetric
  activations; ``int8`` its performance preset, symmetric).
- ``int4``: :func:`nncf.compress_weights` (weight-only, 4-bit symmetric groups of
  ``group_size`` input channels, per channel when a layer's input is narrower;
  activations stay FP32) on the INT4 layers alone (``all_layers``, ratio 1).

OpenVINO names an op after the ONNX node it came from (``/features/features.0/Conv``,
or that name plus ``/WithoutBiases`` when the bias became an ``Add``), which is how a
layer's ONNX nodes (:func:`hwnas.quantize.layers.onnx_layer_nodes`) are found in the
OpenVINO model.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import onnx

from hwnas.hardware.int8 import nncf_float_types
from hwnas.hardware.openvino import WEIGHT_OPS, ir_files, ov_core, ov_op_names, require_openvino
from hwnas.quantize.layers import layer_nodes_by_name
from hwnas.quantize.onnx_quant import QuantSettings, onnx_input_names
from hwnas.quantize.ort_runtime import as_feed

log = logging.getLogger(__name__)

OV_PRECISIONS = ("fp32", "int8", "int4")
INT4_GROUP = 32


@contextmanager
def _quiet_nncf():
    """NNCF logs every ignored node at INFO and draws progress bars on stdout: keep
    both out of the run's output (its warnings still pass, at debug level the bars)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA"
    import nncf

    nncf.set_log_level(logging.WARNING)
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            yield
    finally:
        if printed.getvalue().strip():
            log.debug("nncf: %s", printed.getvalue().strip())


def _save_ir(model: Any, out: Path) -> Path:
    """Write the IR beside ``out`` under a temporary name, then move ``.bin`` and
    ``.xml`` into place (the ``.xml`` last: an interrupted save leaves no readable
    half model)."""
    import openvino as ov

    tmp = out.with_name(f".tmp_{os.getpid()}_{out.name}")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    for src, dst in zip(ir_files(tmp), ir_files(out), strict=True):
        os.replace(src, dst)
    return out


def check_ov_assignment(assignment: Mapping[str, str]) -> None:
    bad = {k: v for k, v in assignment.items() if v not in OV_PRECISIONS}
    if bad:
        raise ValueError(f"OpenVINO supports {list(OV_PRECISIONS)} per layer; got {bad}")


def ov_quantize_assignment(
    fp32_onnx_path: str | Path,
    assignment: Mapping[str, str],
    calib_batches: Iterable[Any] | None,
    out_path: str | Path,
    settings: QuantSettings | None = None,
    layer_nodes: Mapping[str, Sequence[str]] | None = None,
    group_size: int = INT4_GROUP,
) -> Path:
    """Write to ``out_path`` (``.xml``) the OpenVINO IR of ``fp32_onnx_path`` with each
    layer of ``assignment`` at its precision (see the module doc) and return the path.
    ``calib_batches`` are model-input batches (needed when a layer is INT8);
    ``layer_nodes`` as in :func:`hwnas.quantize.onnx_quant.quantize_assignment`."""
    require_openvino("quantize.runtime")
    import nncf

    settings = settings or QuantSettings()
    check_ov_assignment(assignment)
    src, out = Path(fp32_onnx_path), Path(out_path)
    if out.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR is saved as .xml (+ .bin), not {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if layer_nodes is None:
        layer_nodes = layer_nodes_by_name(src, list(assignment))
    model = ov_core().read_model(str(src))
    proto = onnx.load(str(src), load_external_data=False)
    every = ov_op_names(model, [n for nodes in layer_nodes.values() for n in nodes])
    stray = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHT_OPS and op.get_friendly_name() not in every.values()
    ]

    def ops(precision: str) -> list[str]:
        return [
            every[n]
            for layer, p in assignment.items()
            if p == precision
            for n in layer_nodes.get(layer, [])
            if n in every
        ]

    int8, int4 = ops("int8"), ops("int4")
    with _quiet_nncf():
        if int8:
            if calib_batches is None:
                raise ValueError("OpenVINO INT8 quantization needs calibration batches")
            names = onnx_input_names(src)
            feeds = [as_feed(b, names) for b in calib_batches]
            preset = (
                nncf.QuantizationPreset.MIXED
                if settings.activations == "uint8"
                else nncf.QuantizationPreset.PERFORMANCE
            )
            skip = [name for name in every.values() if name not in int8] + stray
            model = nncf.quantize(
                model,
                nncf.Dataset(feeds),
                preset=preset,
                subset_size=len(feeds),  # NNCF counts dataset items, here batches
                ignored_scope=nncf.IgnoredScope(
                    names=skip, types=nncf_float_types(proto), validate=False
                ),
            )
        if int4:
            skip = [name for name in every.values() if name not in int4] + stray
            widths = [
                op.input(0).get_partial_shape()[-1]
                for op in model.get_ordered_ops()
                if op.get_friendly_name() in int4
            ]
            if not all(w.is_static and w.get_length() % group_size == 0 for w in widths):
                group_size = -1  # a layer narrower than, or not a multiple of, a group
            model = nncf.compress_weights(
                model,
                mode=nncf.CompressWeightsMode.INT4_SYM,
                ratio=1.0,
                group_size=group_size,
                all_layers=True,
                ignored_scope=nncf.IgnoredScope(
                    names=skip, types=nncf_float_types(proto), validate=False
                ),
            )
    return _save_ir(model, out)
