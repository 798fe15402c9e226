"""Stage ``quantize``: a precision per layer of the final subnet under a hardware budget.

:func:`quantize_model` does the work on any classification-style module and data
module (the pipeline stage :func:`quantize` and ``python -m hwnas.quantize`` call it):

1. export the FP32 model to ONNX; find its conv/linear layers and their ONNX nodes;
2. sensitivity of every layer: the Hessian trace of the loss (Hutchinson) times the
   INT8 perturbation of its weights (HAWQ-v2 ``Omega``), and the measured validation
   accuracy with only that layer in INT8 (ORT), both written to ``sensitivity.csv``;
3. search the precision space (any strategy) ranking assignments by the additive
   accuracy estimate (``estimate``: Omega scaled to accuracy, or the measured drops)
   against the latency of each quantized model as ORT runs it (measured, cached);
4. measure the validation accuracy of the front (at most ``measure_front``) and of
   uniform INT8; choose the fastest assignment within ``max_drop`` of FP32;
5. report FP32, uniform INT8 and the chosen assignment on the test set: accuracy, size,
   latency, throughput, speedup (``report.json`` / ``report.md``), with ``model.onnx``,
   ``assignment.json`` and the front (``pareto.csv`` / ``pareto.png``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from hwnas.app.config import build_configured_strategy
from hwnas.app.device import eval_device
from hwnas.app.quantize_report import _markdown, _report, _save_front, _write_csv
from hwnas.app.subnet_io import export_onnx
from hwnas.core import atomic
from hwnas.core.progress import progress_bar
from hwnas.core.types import to_plain
from hwnas.hardware.constraints import Constraints
from hwnas.quantize.hessian import hutchinson_trace, task_loss
from hwnas.quantize.layers import onnx_layer_nodes, quantizable_layers
from hwnas.quantize.onnx_quant import QuantSettings
from hwnas.quantize.ort_runtime import OrtModule
from hwnas.quantize.sensitivity import (
    estimate_accuracy,
    hessian_drops,
    layer_sensitivity,
    measured_drops,
)
from hwnas.quantize.space import MeasuredQuantCost, precision_space, uniform
from hwnas.search.base import SearchProblem
from hwnas.search.objectives import TaskObjective
from hwnas.spaces.base import Arch
from hwnas.training.evaluate import first_samples

log = logging.getLogger(__name__)

ESTIMATES = ("hessian", "measured")


def settings_of(q: Mapping[str, Any]) -> QuantSettings:
    """The ORT quantization settings of a ``quantize`` config node."""
    return QuantSettings(
        calibration=str(q["calibration"]),
        activations=str(q["activations"]),
        reduce_range=None if q["reduce_range"] is None else bool(q["reduce_range"]),
        other_ops=bool(q["other_ops"]),
    )


def check_quantize_config(q: Mapping[str, Any]) -> None:
    """One-line errors for a bad ``quantize`` node, before anything runs."""
    bad = [c for c in q["choices"] if c not in ("int8", "fp32")]
    if bad or "fp32" not in q["choices"] or len(q["choices"]) < 2:
        raise ValueError(
            f"quantize.choices={list(q['choices'])}: offer fp32 and int8 (int4 has no ONNX "
            "Runtime kernel for convolutions)"
        )
    if q["estimate"] not in ESTIMATES:
        raise ValueError(f"quantize.estimate={q['estimate']!r}: choose one of {list(ESTIMATES)}")
    if not 0 <= float(q["max_drop"]) < 1:
        raise ValueError(f"quantize.max_drop={q['max_drop']} must be in [0, 1) (accuracy)")
    for key in ("calib_samples", "val_samples", "hessian_batch", "measure_front"):
        if int(q[key]) < 1:
            raise ValueError(f"quantize.{key}={q[key]} must be >= 1")
    if int(q["hessian_samples"]) < 2:
        raise ValueError(f"quantize.hessian_samples={q['hessian_samples']} must be >= 2")
    settings_of(q)
    Constraints.from_config(to_plain(q["constraints"]))
    if "qat" in q:
        from hwnas.quantize.qat import check_qat_config

        check_qat_config(q["qat"])


def _inputs_only(batches: list) -> list:
    return [b[0] if isinstance(b, (list, tuple)) else b for b in batches]


def quantize_model(
    net: nn.Module,
    dm: Any,
    q: Mapping[str, Any],
    folder: str | Path,
    seed: int = 0,
    progress: Mapping[str, Any] | None = None,
    trainer_cfg: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Search a per-layer precision for ``net`` (eval mode, CPU) on the data module
    ``dm`` with the settings ``q`` (the ``quantize`` group: keys and defaults in
    :class:`hwnas.app.schema.quantize.QuantizeConfig`); write everything into ``folder``
    and return the stage summary (with ``metrics``). ``trainer_cfg`` (the trainer
    settings; default :class:`~hwnas.training.settings.TrainerSettings`) runs the
    optional quantization-aware fine-tuning (``q.qat``), in one process. The Hessian
    traces run on ``device`` (default: the trainer settings' evaluation device,
    :mod:`hwnas.app.device`); every accuracy is ONNX Runtime's, on the CPU."""
    check_quantize_config(q)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    progress = dict(progress or {})
    task = dm.task()
    metric = task.primary_metric
    net = net.eval().to("cpu")
    settings = settings_of(q)
    shape = tuple(dm.input_shape)

    # 1. the FP32 model and its layers
    example = task.example_inputs(1, torch.Generator().manual_seed(0))
    fp32 = export_onnx(net, example, folder / "fp32.onnx", task.input_names(), task.output_names())
    layers = quantizable_layers(net)
    nodes = onnx_layer_nodes(net, fp32, layers, example=example)
    calib = _inputs_only(list(dm.calibration_loader(int(q["calib_samples"]))))
    val = first_samples(dm.val_dataloader(), int(q["val_samples"]))

    def accuracy(module: nn.Module) -> float:
        return float(task.evaluate(module, val)[metric])

    # 2. sensitivity: Hessian traces, then one INT8 layer at a time
    log.info("quantize: %d layers; Hessian traces (%d probes)", len(layers), q["hessian_samples"])
    hessian_data = first_samples(
        dm.calibration_loader(int(q["hessian_batch"])), int(q["hessian_batch"])
    )
    device = torch.device(eval_device(trainer_cfg or {}) if device is None else device)
    hessian_net = net
    if device.type != "cpu":  # a copy: the CPU net is exported and measured
        hessian_net = copy.deepcopy(net).to(device)
        hessian_data = [move_data_to_device(b, device) for b in hessian_data]
    log.info("stage quantize: Hessian traces on %s; accuracies on cpu (ONNX Runtime)", device)
    traces = hutchinson_trace(
        hessian_net,
        task_loss(task),
        hessian_data,
        [layer.name for layer in layers],
        samples=int(q["hessian_samples"]),
        seed=seed,
        mode="joint",
    )
    log.info("quantize: measuring each layer alone in INT8 (%d val samples)", q["val_samples"])
    rows = layer_sensitivity(
        net, fp32, accuracy, calib, folder / "sensitivity", traces, settings, layers,
        threads=int(q["threads"]), nodes=nodes,
    )  # fmt: skip
    _write_csv(folder / "sensitivity.csv", [r.to_dict() for r in rows])
    base = rows[0].base_metric
    drops = hessian_drops(rows) if q["estimate"] == "hessian" else measured_drops(rows)
    # a negative trace (noise, or a saddle) or a lucky measurement is not a gain
    drops = {k: max(0.0, v) for k, v in drops.items()}

    # 3. search: estimated accuracy against measured latency of the quantized model
    space = precision_space(layers, tuple(q["choices"]))
    cost = MeasuredQuantCost(
        fp32, calib, folder / "candidates", settings, nodes, inputs=shape,
        batch_size=int(q["batch_size"]), threads=int(q["threads"]),
        warmup=int(q["warmup"]), repeats=int(q["repeats"]),
    )  # fmt: skip
    constraints = Constraints.from_config(to_plain(q["constraints"]))

    def estimated(arch: Arch) -> dict[str, float]:
        return {metric: estimate_accuracy(arch.to_dict(), base, drops)}

    objective = TaskObjective(estimated, task)
    strategy = build_configured_strategy(q["strategy"], "quantize.strategy")
    with progress_bar("precision search", **progress) as update:
        problem = SearchProblem(space, objective, cost, constraints, seed, update)
        result = strategy.run(problem)

    # 4. measure the front, uniform INT8 and FP32; choose
    fp32_arch, int8_arch = space.max_arch(), uniform(space, "int8")
    front = result.pareto("latency_ms")
    step = max(1, -(-len(front) // int(q["measure_front"])))
    picked = [e.arch for e in front[::step]] + [int8_arch, fp32_arch]
    measured: dict[Arch, dict[str, Any]] = {}
    for arch in dict.fromkeys(picked):
        costs = cost(arch)
        measured[arch] = {
            "val": base if arch == fp32_arch else accuracy(OrtModule(cost.model_path(arch))),
            "estimate": estimated(arch)[metric],
            **costs,
            "int8_layers": sum(p == "int8" for p in arch.values()),
            "feasible": constraints.feasible(costs),
        }
    ok = [
        a for a, m in measured.items() if m["feasible"] and base - m["val"] <= float(q["max_drop"])
    ]
    chosen = min(ok, key=lambda a: measured[a]["latency_ms"]) if ok else fp32_arch
    if not ok:
        log.warning("quantize: no measured assignment within max_drop and constraints: FP32 kept")
    chosen_path = cost.model_path(chosen)

    # 4b. optional quantization-aware fine-tuning of the chosen (or fastest) assignment
    qat = _qat_node(q)
    qat_row: dict[str, Any] | None = None
    models: dict[str, Path] = {}
    if int(qat["epochs"]) > 0:
        target = _qat_target(qat, measured, chosen, int8_arch)
        if target is None:
            log.info("quantize: the QAT target has no INT8 layer; fine-tuning skipped")
        else:
            path = _quantization_aware(
                net, target, dm, qat, trainer_cfg, folder / "qat", calib, settings, layers,
                example, progress,
            )  # fmt: skip
            qat_row = {
                "assignment": target.to_dict(), "val": accuracy(OrtModule(path)),
                "fp32_val": accuracy(OrtModule(path.with_name("fp32.onnx"))),
                "ptq_val": measured[target]["val"], "latency_ms": measured[target]["latency_ms"],
                "feasible": measured[target]["feasible"], "epochs": int(qat["epochs"]),
            }  # fmt: skip
            better = measured[target]["latency_ms"] < measured[chosen]["latency_ms"] or (
                target == chosen and qat_row["val"] > measured[chosen]["val"]
            )
            within = base - qat_row["val"] <= float(q["max_drop"])
            qat_row["deployed"] = bool(qat_row["feasible"] and within and better)
            log.info(
                "quantize: QAT of %d INT8 layers: val %s %.4f (PTQ %.4f, FP32 %.4f)%s",
                sum(p == "int8" for p in target.values()), metric, qat_row["val"],
                qat_row["ptq_val"], base, "; deployed" if qat_row["deployed"] else "",
            )  # fmt: skip
            models["qat"] = path
            if qat_row["deployed"]:
                chosen, chosen_path = target, path
    _save_front(folder, measured, fp32_arch, int8_arch, chosen, metric, qat_row)

    # 5. the chosen model and the report on the test set
    atomic.write_bytes(folder / "model.onnx", chosen_path.read_bytes())
    atomic.write_json(folder / "assignment.json", chosen.to_dict())
    report = _report(task, dm, q, {
        "fp32": cost.model_path(fp32_arch), "int8": cost.model_path(int8_arch),
        "chosen": chosen_path, **models,
    }, shape)  # fmt: skip
    kept = [r.to_dict() for r in rows if chosen[r.layer] == "fp32"]
    chosen_val = qat_row["val"] if qat_row and qat_row["deployed"] else measured[chosen]["val"]
    report.update({
        "assignment": {"int8": sum(p == "int8" for p in chosen.values()), "layers": len(layers)},
        "kept_fp32": [{k: r[k] for k in ("layer", "n_params", "drop", "omega")} for r in kept],
        "estimate": q["estimate"], "max_drop": float(q["max_drop"]),
        "val": {
            "fp32": base, "int8": measured[int8_arch]["val"],
            "chosen": chosen_val,
        },
        "settings": settings.to_dict(),
    })  # fmt: skip
    if qat_row is not None:
        report["qat"].update(qat_row)
        report["chosen"]["qat"] = bool(qat_row["deployed"])
    atomic.write_json(folder / "report.json", report)
    atomic.write_text(folder / "report.md", _markdown(report))
    log.info(
        "quantize: %d of %d layers INT8; test %s %.4f vs FP32 %.4f; %.2fx throughput (ORT)",
        report["assignment"]["int8"], len(layers), metric, report["chosen"]["test"],
        report["fp32"]["test"], report["chosen"]["speedup"],
    )  # fmt: skip
    extra = {} if qat_row is None else {f"quantize/qat_test_{metric}": report["qat"]["test"]}
    return {
        "assignment": chosen.to_dict(),
        "metrics": {
            **extra,
            f"quantize/test_{metric}": report["chosen"]["test"],
            f"quantize/fp32_test_{metric}": report["fp32"]["test"],
            "quantize/latency_ms": report["chosen"]["latency_ms"],
            "quantize/speedup": report["chosen"]["speedup"],
            "quantize/size_mb": report["chosen"]["size_mb"],
        },
    }


QAT_OFF = {"epochs": 0}


def _qat_node(q: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``qat`` node (a run saved before it existed: off)."""
    return q.get("qat") or QAT_OFF


def _qat_target(
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


def _quantization_aware(
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
) -> Path:
    """Fine-tune ``net`` with ``target``'s INT8 layers fake-quantized, export the tuned
    FP32 weights (``qat/fp32.onnx``), quantize them with ORT (calibrated again) and
    return the path of the deployed QAT model (``qat/model.onnx``, beside the FP32)."""
    from hwnas.quantize.onnx_quant import calibration_cache_name, quantize_assignment
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
    return quantize_assignment(
        fp32, target.to_dict(), calib, folder / "model.onnx", settings, nodes, cache
    )


def quantize(ctx: Any) -> dict[str, Any]:
    """The pipeline stage: quantize the run's final subnet (``final/``)."""
    from hwnas.app.subnet_io import load_subnet

    final_dir = ctx.out / "final"
    if not (final_dir / "subnet.pt").exists():
        from hwnas.app.config import ConfigError

        raise ConfigError(
            f"no final subnet in {final_dir}: add final to stages before quantize, or "
            "resume the run folder where it finished"
        )
    net = load_subnet(final_dir)
    return quantize_model(
        net, ctx.dm, asdict(ctx.settings.quantize), ctx.stage_dir("quantize"), ctx.seed,
        ctx.progress, ctx.settings.trainer,
    )  # fmt: skip


__all__ = [
    "ESTIMATES",
    "check_quantize_config",
    "quantize",
    "quantize_model",
    "settings_of",
]
