"""Quantization-aware fine-tuning inside the quantize stage: which assignment is tuned,
and deploying the tuned weights on the stage's runtime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from hwnas.app.subnet_io import export_onnx
from hwnas.quantize.deploy import deploy_assignment
from hwnas.quantize.layers import onnx_layer_nodes
from hwnas.quantize.onnx_quant import QuantSettings, calibration_cache_name
from hwnas.spaces.base import Arch

QAT_OFF = {"epochs": 0}


def qat_node(q: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``qat`` node (a run saved before it existed: off)."""
    return q.get("qat") or QAT_OFF


def qat_target(
    qat: Mapping[str, Any], measured: Mapping[Arch, dict[str, Any]], chosen: Arch, int8: Arch
) -> Arch | None:
    """The assignment QAT fine-tunes: the chosen one, the fastest measured assignment
    within the constraints whatever its accuracy (``fastest``), or uniform INT8
    (``int8``); ``None`` when it has no INT8 layer."""
    target = chosen
    if qat["assignment"] == "int8":
        target = int8
    elif qat["assignment"] == "fastest":
        feasible = [a for a, m in measured.items() if m["feasible"]]
        target = min(feasible, key=lambda a: measured[a]["latency_ms"], default=chosen)
    return target if any(p == "int8" for p in target.values()) else None


def quantization_aware(
    net: nn.Module,
    target: Arch,
    dm: Any,
    qat: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any] | None,
    folder: Path,
    calib: list,
    settings: QuantSettings,
    layers: list,
    example: tuple,
    progress: Mapping[str, Any],
    runtime: str = "onnxruntime",
) -> Path:
    """Fine-tune ``net`` with ``target``'s INT8 layers fake-quantized, export the tuned
    FP32 weights (``qat/fp32.onnx``), quantize them for ``runtime`` (calibrated again)
    and return the path of the deployed QAT model (``qat/model.onnx`` or ``.xml``,
    beside the FP32)."""
    from hwnas.quantize.qat import qat_finetune
    from hwnas.training.settings import TrainerSettings

    if trainer_cfg is None:  # the trainer group's defaults
        trainer_cfg = TrainerSettings()
    task = dm.task()
    tuned = qat_finetune(
        net, target.to_dict(), dm, qat, trainer_cfg, folder, calib,
        settings.resolved_reduce_range, settings.activations, progress,
    )  # fmt: skip
    fp32 = export_onnx(
        tuned, example, folder / "fp32.onnx", task.input_names(), task.output_names()
    )
    nodes = onnx_layer_nodes(tuned, fp32, layers, example=example)
    cache = folder / calibration_cache_name(fp32, settings)
    return deploy_assignment(
        runtime, fp32, target.to_dict(), calib, folder / "model", settings, nodes, cache
    )
