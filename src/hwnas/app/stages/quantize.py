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
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from hwnas.app.config import build_configured_strategy
from hwnas.app.device import eval_device
from hwnas.app.quantize_report import (
    _markdown,
    _save_front,
    _write_csv,
    copy_model,
    report_runtimes,
)
from hwnas.app.stages.quantize_qat import qat_node, qat_target, quantization_aware
from hwnas.app.subnet_io import export_onnx
from hwnas.core import atomic
from hwnas.core.progress import progress_bar
from hwnas.core.types import to_plain
from hwnas.hardware.constraints import Constraints
from hwnas.quantize.deploy import check_runtime, deploy_assignment, int4_layers
from hwnas.quantize.hessian import hutchinson_trace, task_loss
from hwnas.quantize.layers import called_layers, onnx_layer_nodes
from hwnas.quantize.onnx_quant import QuantSettings, calibration_cache_name
from hwnas.quantize.ort_runtime import OrtModule
from hwnas.quantize.sensitivity import (
    estimate_accuracy,
    hessian_drops,
    layer_sensitivity,
    measured_drops,
)
from hwnas.quantize.space import MeasuredQuantCost, lowest, precision_space, uniform
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
    bad = [c for c in q["choices"] if c not in ("int4", "int8", "fp32")]
    if bad or "fp32" not in q["choices"] or "int8" not in q["choices"]:
        raise ValueError(
            f"quantize.choices={list(q['choices'])}: offer fp32 and int8, optionally int4 "
            "(e.g. [int4,int8,fp32])"
        )
    check_runtime(str(q.get("runtime", "onnxruntime")))
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


def model_inputs(task: Any, batches: Iterable[Any]) -> list[tuple]:
    """The exported model's inputs of each data-loader batch (``task.split_batch``, the
    first ``len(task.input_names())`` of them: a transducer's tokens feed only its
    training joiner)."""
    n = len(task.input_names())
    return [tuple(task.split_batch(b)[0][:n]) for b in batches]


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
    :mod:`hwnas.app.device`); every accuracy is the deployment runtime's
    (``q.runtime``), on the CPU."""
    check_quantize_config(q)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    progress = dict(progress or {})
    runtime = str(q.get("runtime", "onnxruntime"))
    task = dm.task()
    metric = task.primary_metric
    sign = 1.0 if task.higher_is_better else -1.0  # drops are "worse by", in either direction
    net = net.eval().to("cpu")
    settings = settings_of(q)
    inputs = task.example_inputs  # timing batches of any size, from the task

    # 1. the FP32 model and the layers its exported forward runs
    example = task.example_inputs(1, torch.Generator().manual_seed(0))
    fp32 = export_onnx(
        net, example, folder / "fp32.onnx", task.input_names(), task.output_names(),
        task.dynamic_axes(),
    )  # fmt: skip
    layers = called_layers(net, example)
    nodes = onnx_layer_nodes(net, fp32, layers, example=example)
    calib = model_inputs(task, dm.calibration_loader(int(q["calib_samples"])))
    val = first_samples(dm.val_dataloader(), int(q["val_samples"]))
    int4 = int4_layers(runtime, layers, nodes, fp32) if "int4" in q["choices"] else []

    def accuracy(path: Path) -> float:
        module = task.deployed(net, OrtModule(path, int(q["threads"]), runtime))
        return sign * float(task.evaluate(module, val)[metric])

    # 2. sensitivity: Hessian traces, then one quantized layer at a time
    log.info("quantize: %d layers; Hessian traces (%d probes)", len(layers), q["hessian_samples"])
    hessian_data = first_samples(
        dm.calibration_loader(int(q["hessian_batch"])), int(q["hessian_batch"])
    )
    device = torch.device(eval_device(trainer_cfg or {}) if device is None else device)
    hessian_net = net
    if device.type != "cpu":  # a copy: the CPU net is exported and measured
        hessian_net = copy.deepcopy(net).to(device)
        hessian_data = [move_data_to_device(b, device) for b in hessian_data]
    log.info("stage quantize: Hessian traces on %s; accuracies on cpu (%s)", device, runtime)
    traces = hutchinson_trace(
        hessian_net,
        task_loss(task),
        hessian_data,
        [layer.name for layer in layers],
        samples=int(q["hessian_samples"]),
        seed=seed,
        mode="joint",
    )
    log.info("quantize: measuring each layer alone quantized (%d val samples)", q["val_samples"])
    base = accuracy(fp32)
    rows = []
    for precision, subset in (("int8", layers), ("int4", [x for x in layers if x.name in int4])):
        if subset:
            rows += layer_sensitivity(
                net, fp32, lambda m: accuracy(m.path), calib, folder / "sensitivity", traces,
                settings, subset, precision, int(q["threads"]), nodes, runtime, base,
            )  # fmt: skip
    _write_csv(folder / "sensitivity.csv", [
        {**r.to_dict(), "base_metric": sign * r.base_metric, "metric": sign * r.metric}
        for r in rows
    ])  # fmt: skip
    drops = hessian_drops(rows) if q["estimate"] == "hessian" else measured_drops(rows)
    # a negative trace (noise, or a saddle) or a lucky measurement is not a gain
    drops = {k: _floor0(v) for k, v in drops.items()}

    # 3. search: estimated accuracy against measured latency of the quantized model
    space = precision_space(layers, tuple(q["choices"]), int4=int4 or None)
    cost = MeasuredQuantCost(
        fp32, calib, folder / "candidates", settings, nodes, inputs=inputs,
        batch_size=int(q["batch_size"]), threads=int(q["threads"]),
        warmup=int(q["warmup"]), repeats=int(q["repeats"]), runtime=runtime,
    )  # fmt: skip
    constraints = Constraints.from_config(to_plain(q["constraints"]))

    def estimated(arch: Arch) -> dict[str, float]:
        return {metric: sign * estimate_accuracy(arch.to_dict(), base, drops)}

    objective = TaskObjective(estimated, task)
    strategy = build_configured_strategy(q["strategy"], "quantize.strategy")
    with progress_bar("precision search", **progress) as update:
        problem = SearchProblem(space, objective, cost, constraints, seed, update)
        result = strategy.run(problem)

    # 4. measure the front, the uniform baselines and FP32; choose
    fp32_arch, int8_arch = space.max_arch(), uniform(space, "int8")
    baselines = [int8_arch, fp32_arch]
    int4_arch = lowest(space, "int4") if int4 else None
    if int4_arch is not None:
        baselines.insert(0, int4_arch)
    front = result.pareto("latency_ms")
    step = max(1, -(-len(front) // int(q["measure_front"])))
    picked = [e.arch for e in front[::step]] + baselines
    measured: dict[Arch, dict[str, Any]] = {}
    for arch in dict.fromkeys(picked):
        costs = cost(arch)
        measured[arch] = {
            "val": base if arch == fp32_arch else accuracy(cost.model_path(arch)),
            "estimate": estimated(arch)[metric],
            **costs,
            **{f"{p}_layers": n for p, n in precision_counts(arch).items()},
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
    qat = qat_node(q)
    qat_row: dict[str, Any] | None = None
    models: dict[str, Path] = {}
    if int(qat["epochs"]) > 0:
        target = qat_target(qat, measured, chosen, int8_arch)
        if target is None:
            log.info("quantize: the QAT target has no INT8 layer; fine-tuning skipped")
        else:
            path = quantization_aware(
                net, target, dm, qat, trainer_cfg, folder / "qat", calib, settings, layers,
                example, progress, runtime,
            )  # fmt: skip
            qat_row = {
                "assignment": target.to_dict(), "val": accuracy(path),
                "fp32_val": accuracy(path.with_name("fp32.onnx")),
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
                sum(p == "int8" for p in target.values()), metric, sign * qat_row["val"],
                sign * qat_row["ptq_val"], sign * base,
                "; deployed" if qat_row["deployed"] else "",
            )  # fmt: skip
            models["qat"] = path
            if qat_row["deployed"]:
                chosen, chosen_path = target, path
    _save_front(folder, measured, fp32_arch, int8_arch, chosen, metric, qat_row, sign, runtime)

    # 5. the chosen model and the report on the test set (each runtime installed)
    for old in folder.glob("model.*"):  # a rerun with another runtime leaves one model
        old.unlink()
    deployed = copy_model(chosen_path, folder / "model")
    atomic.write_json(folder / "assignment.json", chosen.to_dict())
    ranked = {"fp32": fp32_arch, "int8": int8_arch, "chosen": chosen}
    if int4_arch is not None:
        ranked["int4"] = int4_arch
    paths = {name: cost.model_path(arch) for name, arch in ranked.items()}
    report = report_runtimes(
        task, net, dm, q, {**paths, "chosen": chosen_path, **models}, ranked, runtime,
        lambda rt, arch, stem: deploy_assignment(
            rt, fp32, _portable(arch, rt, layers, nodes, fp32, bool(int4)), calib, stem,
            settings, nodes, folder / "candidates" / calibration_cache_name(fp32, settings),
        ),
        folder / "compare",
    )  # fmt: skip
    kept = [r.to_dict() for r in rows if chosen[r.layer] == "fp32" and r.precision == "int8"]
    chosen_val = qat_row["val"] if qat_row and qat_row["deployed"] else measured[chosen]["val"]
    report.update({
        "model": deployed.name, "metric": metric,
        "assignment": {**precision_counts(chosen), "layers": len(layers)},
        "kept_fp32": [{k: r[k] for k in ("layer", "n_params", "drop", "omega")} for r in kept],
        "int4_layers": int4,
        "estimate": q["estimate"], "max_drop": float(q["max_drop"]),
        "val": {
            "fp32": sign * base, "int8": sign * measured[int8_arch]["val"],
            "chosen": sign * chosen_val,
        },
        "settings": settings.to_dict(),
    })  # fmt: skip
    if qat_row is not None:
        signed = {k: sign * qat_row[k] for k in ("val", "fp32_val", "ptq_val")}
        report["qat"].update({**qat_row, **signed})
        report["chosen"]["qat"] = bool(qat_row["deployed"])
    atomic.write_json(folder / "report.json", report)
    atomic.write_text(folder / "report.md", _markdown(report))
    log.info(
        "quantize: %d of %d layers INT8, %d INT4; test %s %.4f vs FP32 %.4f; %.2fx "
        "throughput (%s)", report["assignment"]["int8"], len(layers),
        report["assignment"]["int4"], metric, report["chosen"]["test"],
        report["fp32"]["test"], report["chosen"]["speedup"], runtime,
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


def _portable(
    arch: Arch, runtime: str, layers: list, nodes: Mapping, fp32: Path, has_int4: bool
) -> dict[str, str]:
    """``arch`` as ``runtime`` can deploy it: an INT4 layer it has no kernel for (a
    Gemm on ONNX Runtime) runs in INT8 there."""
    ok = set(int4_layers(runtime, layers, nodes, fp32)) if has_int4 else set()
    return {k: "int8" if p == "int4" and k not in ok else p for k, p in arch.items()}


def _floor0(drop: float | Mapping[str, float]) -> float | dict[str, float]:
    if isinstance(drop, Mapping):
        return {p: max(0.0, float(d)) for p, d in drop.items()}
    return max(0.0, float(drop))


def precision_counts(arch: Arch) -> dict[str, int]:
    """How many layers of ``arch`` are INT8 and INT4."""
    return {p: sum(v == p for v in arch.values()) for p in ("int8", "int4")}


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
