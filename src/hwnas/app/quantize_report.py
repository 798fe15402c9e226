"""What the quantize stage writes besides the deployed model: the precision front (CSV
and plot) and the report (JSON and markdown)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hwnas.core import atomic
from hwnas.quantize.ort_runtime import (
    OrtModule,
    model_size_mb,
    peak_memory_mb,
    throughput,
    time_onnx,
)
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic.atomic_open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _save_front(
    folder: Path,
    measured: Mapping[Arch, dict[str, Any]],
    fp32: Arch,
    int8: Arch,
    chosen: Arch,
    metric: str,
    qat: Mapping[str, Any] | None = None,
    sign: float = 1.0,
    runtime: str = "onnxruntime",
) -> None:
    """``pareto.csv`` (every measured assignment, fastest first, with its marks; the
    QAT model, when there is one, as a row of its own) and ``pareto.png`` (measured val
    metric against latency). ``measured`` holds ``val`` and ``estimate`` oriented so
    higher is better; ``sign`` (-1 for a lower-is-better metric) turns them back."""
    measured = {
        a: {**m, "val": sign * m["val"], "estimate": sign * m["estimate"]}
        for a, m in measured.items()
    }
    if qat is not None:
        qat = {**qat, "val": sign * qat["val"]}
    order = sorted(measured, key=lambda a: measured[a]["latency_ms"])
    marks = {fp32: "uniform FP32", int8: "uniform INT8"}
    rows = []
    for a in order:
        mark = marks.get(a, "")
        if a == chosen:
            mark = (mark + ", chosen").lstrip(", ")
        if qat is not None and qat["deployed"] and a == chosen:
            mark = mark.replace("chosen", "").strip(", ")
        rows.append({"assignment": json.dumps(a.to_dict()), "mark": mark, **measured[a]})
    if qat is not None:
        target = measured[Arch(qat["assignment"])]
        row = {**target, "val": qat["val"]}
        mark = "QAT, chosen" if qat["deployed"] else "QAT"
        rows.append({"assignment": json.dumps(qat["assignment"]), "mark": mark, **row})
    _write_csv(folder / "pareto.csv", rows)
    fig = Figure(figsize=(6.4, 4.4))  # no pyplot: no global figure state, no backend
    ax = fig.subplots()
    xs = [measured[a]["latency_ms"] for a in order]
    ys = [measured[a]["val"] for a in order]
    ax.plot(xs, ys, "o-", color="tab:blue", ms=4, label="measured assignments")
    for a, style, label in ((fp32, "s", "uniform FP32"), (int8, "D", "uniform INT8")):
        ax.plot(measured[a]["latency_ms"], measured[a]["val"], style, ms=8, label=label)
    if qat is not None:
        ax.plot(qat["latency_ms"], qat["val"], "P", ms=9, label="after QAT")
    best = qat["val"] if qat is not None and qat["deployed"] else measured[chosen]["val"]
    ax.plot(measured[chosen]["latency_ms"], best, "*", ms=14, label="chosen")
    ax.set_xlabel(f"latency (ms, {RUNTIME_LABELS.get(runtime, runtime)})")
    ax.set_ylabel(f"val {metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_open(folder / "pareto.png", "wb") as fh:
        fig.savefig(fh, dpi=120, format="png")


RUNTIME_LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
MODEL_LABELS = {
    "fp32": "FP32",
    "int8": "uniform INT8",
    "int4": "INT4 where possible, INT8 elsewhere",
    "chosen": "chosen mixed",
    "qat": "QAT",
}
# the CPU features that decide integer and bf16 speed
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
               "amx_int8", "amx_bf16")  # fmt: skip


def machine_info() -> dict[str, Any]:
    """CPU model, its speed-relevant flags and the runtime versions, for every table."""
    import torch

    from hwnas.hardware.latency import device_name
    from hwnas.quantize.deploy import runtime_version
    from hwnas.quantize.onnx_quant import cpu_flags

    try:
        from importlib.metadata import version

        nncf = version("nncf")
    except Exception:  # noqa: BLE001 - not installed
        nncf = None
    flags = cpu_flags()
    return {
        "cpu": device_name("cpu"),
        "flags": [f for f in SPEED_FLAGS if f in flags],
        "versions": {
            "onnxruntime": runtime_version("onnxruntime"),
            "openvino": runtime_version("openvino"),
            "nncf": nncf,
            "torch": torch.__version__,
        },
    }


def copy_model(src: Path, stem: Path) -> Path:
    """Copy a deployed model (``.onnx``, or an IR's ``.xml`` and ``.bin``) to ``stem``
    plus its suffix, atomically per file; returns the copy's path."""
    dst = Path(f"{stem}{src.suffix}")
    files = [(src, dst)]
    if src.suffix == ".xml":
        files.insert(0, (src.with_suffix(".bin"), dst.with_suffix(".bin")))
    for a, b in files:
        atomic.write_bytes(b, a.read_bytes())
    return dst


def _measure(
    task: Any, net: Any, dm: Any, q: Mapping[str, Any], models: Mapping[str, Path], runtime: str
) -> dict[str, dict[str, float]]:
    """Test metric, size, resident memory, latency and throughput of each model as
    ``runtime`` runs it (a file named twice is measured once); speedup against FP32."""
    metric = task.primary_metric
    timing = dict(threads=int(q["threads"]), warmup=int(q["warmup"]), repeats=int(q["repeats"]))
    inputs = task.example_inputs
    measured: dict[Path, dict[str, float]] = {}
    for path in dict.fromkeys(models.values()):
        module = task.deployed(net, OrtModule(path, int(q["threads"]), runtime))
        test = float(task.evaluate(module, dm.test_dataloader())[metric])
        lat = time_onnx(path, inputs, batch_size=int(q["batch_size"]), runtime=runtime, **timing)
        big = time_onnx(
            path, inputs, batch_size=int(q["throughput_batch"]), runtime=runtime, **timing
        )
        measured[path] = {
            "test": test, "size_mb": model_size_mb(path),
            "peak_memory_mb": peak_memory_mb(path, inputs, int(q["batch_size"]), runtime),
            "latency_ms": lat.median_ms, "throughput_per_s": throughput(big),
        }  # fmt: skip
    out = {name: dict(measured[path]) for name, path in models.items()}
    for row in out.values():
        row["speedup"] = row["throughput_per_s"] / out["fp32"]["throughput_per_s"]
    return out


def report_runtimes(
    task: Any,
    net: Any,
    dm: Any,
    q: Mapping[str, Any],
    models: Mapping[str, Path],
    ranked: Mapping[str, Arch],
    runtime: str,
    deploy: Callable[[str, Arch, Path], Path],
    compare_dir: Path,
) -> dict[str, Any]:
    """The report's figures: ``models`` on the stage's ``runtime``, and with
    ``q.compare`` the ``ranked`` assignments deployed (``deploy(runtime, arch, stem)``)
    and measured on every other runtime installed here, under ``compare``."""
    from hwnas.quantize.deploy import available_runtimes

    out: dict[str, Any] = _measure(task, net, dm, q, models, runtime)
    out["runtime"] = runtime
    out["timing"] = {
        "threads": int(q["threads"]), "warmup": int(q["warmup"]), "repeats": int(q["repeats"]),
        "batch_size": int(q["batch_size"]), "throughput_batch": int(q["throughput_batch"]),
        "backend": runtime,
    }  # fmt: skip
    out["machine"] = machine_info()
    others = [r for r in available_runtimes() if r != runtime] if q.get("compare") else []
    out["compare"] = {}
    for other in others:
        folder = compare_dir / other
        folder.mkdir(parents=True, exist_ok=True)
        paths = {name: deploy(other, arch, folder / name) for name, arch in ranked.items()}
        out["compare"][other] = _measure(task, net, dm, q, paths, other)
    return out


def _table(rows: Mapping[str, Mapping[str, Any]], metric: str, chosen_qat: bool) -> list[str]:
    lines = [
        f"| model | test {metric} | size (MB) | peak memory (MB) | latency (ms) | throughput (/s) "
        "| speedup |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = dict(MODEL_LABELS)
    if chosen_qat:
        labels["chosen"] = "chosen mixed (QAT)"
    for name in [n for n in labels if n in rows]:
        m = rows[name]
        lines.append(
            f"| {labels[name]} | {m['test']:.4f} | {m['size_mb']:.3f} | "
            f"{m.get('peak_memory_mb', float('nan')):.1f} | {m['latency_ms']:.3f} | "
            f"{m['throughput_per_s']:.0f} | {m['speedup']:.2f}x |"
        )
    return lines


def _markdown(r: Mapping[str, Any]) -> str:
    runtime = r.get("runtime", "onnxruntime")
    metric = r.get("metric", "acc")
    label = RUNTIME_LABELS.get(runtime, runtime)
    lines = [f"# Quantization ({label})", ""]
    lines += _table(r, metric, bool(r["chosen"].get("qat")))
    for other, rows in (r.get("compare") or {}).items():
        lines += [
            "",
            f"The same assignments on {RUNTIME_LABELS.get(other, other)} (an INT4 "
            "layer it has no kernel for runs in INT8 there):",
            "",
        ]
        lines += _table(rows, metric, False)
    t = r["timing"]
    lines += [
        "",
        f"{r['assignment']['int8']} of {r['assignment']['layers']} layers in INT8"
        f"{_int4_text(r)} (fastest measured assignment within {r['max_drop']:.4g} val "
        f"{metric} of FP32). "
        f"Latency at batch {t['batch_size']}, throughput at batch {t['throughput_batch']}, "
        f"{t['threads']} thread(s); medians of {t['repeats']} runs. Peak memory: "
        "resident memory that loading the model and one run cost in a fresh process.",
    ]
    if "machine" in r:
        m = r["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        lines += ["", f"CPU: {m['cpu']}; flags: {' '.join(m['flags']) or 'none of note'}; "
                  f"{versions}."]  # fmt: skip
    if "qat" in r:
        qat = r["qat"]
        done = "deployed" if qat["deployed"] else "kept out (not faster or better within max_drop)"
        lines += [
            "",
            f"Quantization-aware fine-tuning ({qat['epochs']} epoch(s)) of an assignment with "
            f"{sum(p == 'int8' for p in qat['assignment'].values())} INT8 layers: val "
            f"{qat['val']:.4f} after vs {qat['ptq_val']:.4f} before (FP32 {r['val']['fp32']:.4f}"
            f"; the fine-tuned weights unquantized {qat['fp32_val']:.4f}); {done}.",
        ]
    if r["kept_fp32"]:
        lines += ["", "Layers kept in FP32 (measured val drop alone in INT8, HAWQ Omega):", ""]
        lines += [
            f"- {k['layer']}: drop {k['drop']:+.4f}, Omega {k['omega']:.3g}, {k['n_params']} params"
            for k in r["kept_fp32"]
        ]
    return "\n".join(lines) + "\n"


def _int4_text(r: Mapping[str, Any]) -> str:
    n = r["assignment"].get("int4", 0)
    return f" and {n} in INT4 (weight-only)" if n else ""
