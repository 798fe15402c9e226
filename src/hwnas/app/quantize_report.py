"""What the quantize stage writes besides the deployed model: the precision front (CSV
and plot) and the report (JSON and markdown)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hwnas.core import atomic
from hwnas.quantize.ort_runtime import OrtModule, model_size_mb, throughput, time_onnx
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
) -> None:
    """``pareto.csv`` (every measured assignment, fastest first, with its marks; the
    QAT model, when there is one, as a row of its own) and ``pareto.png`` (measured val
    accuracy against latency)."""
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
    ax.set_xlabel("latency (ms, ONNX Runtime)")
    ax.set_ylabel(f"val {metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_open(folder / "pareto.png", "wb") as fh:
        fig.savefig(fh, dpi=120, format="png")


def _report(
    task: Any, dm: Any, q: Mapping[str, Any], models: dict[str, Path], shape
) -> dict[str, Any]:
    """Test accuracy, size, latency and throughput of each model, as ORT runs it (a
    file named twice, e.g. a chosen uniform assignment, is measured once)."""
    metric = task.primary_metric
    timing = dict(threads=int(q["threads"]), warmup=int(q["warmup"]), repeats=int(q["repeats"]))
    measured: dict[Path, dict[str, float]] = {}
    for path in dict.fromkeys(models.values()):
        test = float(
            task.evaluate(OrtModule(path, int(q["threads"])), dm.test_dataloader())[metric]
        )
        lat = time_onnx(path, shape, batch_size=int(q["batch_size"]), **timing)
        big = time_onnx(path, shape, batch_size=int(q["throughput_batch"]), **timing)
        measured[path] = {
            "test": test, "size_mb": model_size_mb(path), "latency_ms": lat.median_ms,
            "throughput_per_s": throughput(big),
        }  # fmt: skip
    out: dict[str, Any] = {name: dict(measured[path]) for name, path in models.items()}
    for row in out.values():
        row["speedup"] = row["throughput_per_s"] / out["fp32"]["throughput_per_s"]
    out["timing"] = {
        **timing,
        "batch_size": int(q["batch_size"]),
        "throughput_batch": int(q["throughput_batch"]),
        "backend": "onnxruntime",
    }
    return out


def _markdown(r: Mapping[str, Any]) -> str:
    lines = [
        "# Quantization (ONNX Runtime, static QDQ)",
        "",
        "| model | test acc | size (MB) | latency (ms) | throughput (/s) | speedup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {"fp32": "FP32", "int8": "uniform INT8", "chosen": "chosen mixed", "qat": "QAT"}
    if r["chosen"].get("qat"):
        labels["chosen"] = "chosen mixed (QAT)"
    for name in [n for n in labels if n in r]:
        m = r[name]
        label = labels[name]
        lines.append(
            f"| {label} | {m['test']:.4f} | {m['size_mb']:.3f} | {m['latency_ms']:.3f} | "
            f"{m['throughput_per_s']:.0f} | {m['speedup']:.2f}x |"
        )
    t = r["timing"]
    lines += [
        "",
        f"{r['assignment']['int8']} of {r['assignment']['layers']} layers in INT8 "
        f"(fastest measured assignment within {r['max_drop']:.2%} val accuracy of FP32). "
        f"Latency at batch {t['batch_size']}, throughput at batch {t['throughput_batch']}, "
        f"{t['threads']} thread(s); medians of {t['repeats']} runs.",
    ]
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
