"""Table helpers of the quantization benchmarks (``bench_quantize.py``,
``bench_joint_search.py``): the machine line (CPU, its speed-relevant flags, the runtime
versions), the rows' throughput ratios, the markdown table and the target lines."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TARGET_RATIO, TARGET_DROP = 5.0, 0.01
EPS = 1e-9  # a drop of exactly 1 % (two top-1 figures subtracted) is within 1 %
BASELINE_NAME = "bootstrap_baseline"
RUNTIME_LABELS = {"eager": "PyTorch eager", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
SHORT = {"eager": "eager", "onnxruntime": "ORT", "openvino": "OV"}
KINDS = {
    "eager": "FP32 eager (PyTorch)",
    "fp32": "FP32",
    "int8": "uniform INT8",
    "int4": "INT4 where possible",
    "chosen": "chosen mixed",
    "qat": "QAT",
}
COLUMNS = [
    ("model", "model", "{}"), ("variant", "variant", "{}"), ("int8_layers", "INT8 layers", "{}"),
    ("top1", "test top-1", "{:.2%}"), ("size_mb", "size MB", "{:.3f}"),
    ("b1_ms", "latency b1 ms", "{:.3f}"), ("thr", "img/s", "{:.0f}"),
    ("x_fp32", "x FP32 same rt", "{:.2f}x"), ("x_base_eager", "x base eager", "{:.2f}x"),
    ("x_base_rt", "x base FP32 same rt", "{:.2f}x"),
    ("drop_base_eager", "drop vs base eager", "{:+.2%}"),
    ("drop_base_rt", "drop vs base same rt", "{:+.2%}"),
]  # fmt: skip


def bench_bootstrap() -> Any:
    """The bootstrap benchmark module (``fitted_mobilenet``, ``interleaved``)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("bench_bootstrap")


def variant(kind: str, runtime: str) -> str:
    """A row's label: ``uniform INT8 (OV)``; the eager row is its own."""
    return KINDS[kind] if runtime == "eager" else f"{KINDS[kind]} ({SHORT[runtime]})"


def markdown(rows: list[dict], columns: list[tuple[str, str, str]] = COLUMNS) -> str:
    """A markdown table of ``rows`` by ``columns`` (:func:`bench_bootstrap.markdown`)."""
    return bench_bootstrap().markdown(rows, columns)


def machine() -> dict[str, Any]:
    """CPU model, its speed-relevant flags and the runtime versions (the quantize
    report's ``machine``)."""
    from hwnas.app.quantize_report import machine_info

    return machine_info()


def cpu_line() -> str:
    """``CPU: <model>; avx2: yes, ..., amx_int8: no; onnxruntime X, openvino Y, ...``."""
    from hwnas.app.quantize_report import SPEED_FLAGS

    m = machine()
    flags = ", ".join(f"{f}: {'yes' if f in m['flags'] else 'no'}" for f in SPEED_FLAGS)
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in m["versions"].items())
    return f"CPU: {m['cpu']}; {flags}; {versions}"


def vnni() -> str:
    """``with`` or ``without`` VNNI (integer dot-product instructions) on this CPU."""
    return (
        "with" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(machine()["flags"]) else "without"
    )


def compare(rows: list[dict]) -> None:
    """Each row's throughput over its model's FP32 in the same runtime (``x_fp32``;
    none for eager rows), and for bootstrap rows the throughput ratio and top-1 drop
    against the FP32 baseline in eager PyTorch and in the row's own runtime."""
    by = {(r["model"], r["runtime"], r["kind"]): r for r in rows}
    base_eager = by.get((BASELINE_NAME, "eager", "eager"))
    for row in rows:
        rt = row["runtime"]
        fp32 = by.get((row["model"], rt, "fp32"))
        row["x_fp32"] = row["thr"] / fp32["thr"] if fp32 is not None else None
        base_rt = by.get((BASELINE_NAME, rt, "fp32"))
        for tag, base in (("eager", base_eager), ("rt", base_rt)):
            on = base is not None and row["bootstrap"]
            row[f"x_base_{tag}"] = row["thr"] / base["thr"] if on else None
            row[f"drop_base_{tag}"] = base["top1"] - row["top1"] if on else None


def model_lines(m: Any, rows: list[dict], runtimes: Iterable[str]) -> list[str]:
    """Per runtime: uniform INT8 (and INT4) and the chosen assignment against FP32;
    the QAT line where there is one."""
    by = {(r["runtime"], r["kind"]): r for r in rows if r["model"] == m.name}
    lines = []
    limit = float(m.q["max_drop"])
    for rt in runtimes:
        if (rt, "fp32") not in by:
            continue
        fp32, int8, chosen = by[(rt, "fp32")], by[(rt, "int8")], by[(rt, "chosen")]
        int4 = by.get((rt, "int4"))
        four = (
            f"; INT4 where possible {int4['x_fp32']:.2f}x ({fp32['top1'] - int4['top1']:+.2%})"
            if int4 is not None
            else ""
        )
        drop = fp32["top1"] - chosen["top1"]
        lines.append(
            f"- {m.name}, {RUNTIME_LABELS[rt]}: uniform INT8 {int8['x_fp32']:.2f}x FP32 "
            f"throughput (top-1 drop {fp32['top1'] - int8['top1']:+.2%}){four}; chosen mixed "
            f"({chosen['int8_layers']} layers INT8, within {limit:.2%} val of FP32 where the "
            f"stage searched) {chosen['x_fp32']:.2f}x at {drop:+.2%} test top-1 drop "
            f"({'within' if drop <= limit + EPS else 'beyond'} {limit:.2%} on test)."
        )
        qat = by.get((rt, "qat"))
        if qat is not None:
            info = qat["qat_info"]
            uniform = set(info["assignment"].values()) == {"int8"}
            ptq = f"; PTQ of uniform INT8 {int8['top1']:.2%}" if uniform else ""
            lines.append(
                f"- {m.name}, {RUNTIME_LABELS[rt]}: QAT ({info['epochs']} epoch(s), "
                f"{qat['int8_layers']} layers INT8) test top-1 {qat['top1']:.2%} vs FP32 "
                f"{fp32['top1']:.2%}{ptq}; val {info['val']:.2%} after vs {info['ptq_val']:.2%} "
                f"before (the fine-tuned weights in FP32: {info['fp32_val']:.2%}); "
                f"{qat['x_fp32']:.2f}x FP32 throughput; "
                f"{'deployed' if info['deployed'] else 'not deployed'}."
            )
    return lines


def target_lines(models: list[Any], rows: list[dict], runtimes: Iterable[str]) -> list[str]:
    """NAS + quantization against the FP32 baseline, per runtime: the chosen assignment,
    and the best ratio of any quantized row of the bootstrap run at <= 1 % top-1 drop
    against the baseline's FP32 in the same runtime, with the 5x target's verdict."""
    boot = [m for m in models if m.bootstrap and m.name != BASELINE_NAME]
    if not boot:
        return ["- NAS + quantization vs the baseline: no bootstrap run in the table."]
    cpu = f"this CPU ({vnni()} VNNI)"
    lines = []
    for m in boot:
        own = [r for r in rows if r["model"] == m.name and r["runtime"] != "eager"]
        if not own or all(r["x_base_rt"] is None for r in own):
            lines.append(f"- {m.name}: no bootstrap baseline found to compare with.")
            continue
        for rt in runtimes:
            mine = [r for r in own if r["runtime"] == rt and r["x_base_rt"] is not None]
            if not mine:
                continue
            label = RUNTIME_LABELS[rt]
            chosen = next(r for r in mine if r["kind"] == "chosen")
            lines.append(
                f"- NAS + quantization ({m.name}, chosen mixed) in {label}: "
                f"{chosen['x_base_rt']:.2f}x the FP32 baseline in {label} at "
                f"{chosen['drop_base_rt']:+.2%} top-1 drop ({chosen['x_base_eager']:.2f}x the "
                f"eager baseline at {chosen['drop_base_eager']:+.2%})."
            )
            ok = [r for r in mine if r["drop_base_rt"] <= TARGET_DROP + EPS]
            target = f"target >= {TARGET_RATIO:.0f}x at <= {TARGET_DROP:.0%} drop"
            if not ok:
                best = max(mine, key=lambda r: r["x_base_rt"])
                lines.append(
                    f"- best NAS + quantization in {label} at <= {TARGET_DROP:.0%} top-1 "
                    f"drop: none of {m.name}'s rows is within it (fastest: {best['variant']} "
                    f"{best['x_base_rt']:.2f}x at {best['drop_base_rt']:+.2%}); {target}: "
                    f"NOT met on {cpu}."
                )
                continue
            best = max(ok, key=lambda r: r["x_base_rt"])
            met = "met" if best["x_base_rt"] >= TARGET_RATIO else "NOT met"
            lines.append(
                f"- best NAS + quantization in {label} at <= {TARGET_DROP:.0%} top-1 drop: "
                f"{m.name} {best['variant']} {best['x_base_rt']:.2f}x the FP32 baseline in "
                f"{label} at {best['drop_base_rt']:+.2%} ({best['x_base_eager']:.2f}x the eager "
                f"baseline); {target}: {met} on {cpu} (BootstrapNAS: 11.37x on Xeon with VNNI)."
            )
    return lines


def seconds_line(models: list[Any], timing_s: float, total_s: float) -> str:
    parts = []
    for m in models:
        s = m.seconds
        q = (
            f"quantize {s['quantize'] / 60:.1f} min"
            if "quantize" in s
            else f"quantize cached ({s['quantize_cached'] / 60:.1f} min when run)"
            if s.get("quantize_cached") is not None
            else "quantize cached"
        )
        parts.append(f"{m.name}: load {s['load']:.0f} s, {q}, eager test {s['eager_test']:.0f} s")
    return (
        "Wall time: " + "; ".join(parts) + f"; timing {timing_s / 60:.1f} min; "
        f"this invocation {total_s / 60:.1f} min."
    )


__all__ = [
    "BASELINE_NAME",
    "COLUMNS",
    "KINDS",
    "RUNTIME_LABELS",
    "TARGET_DROP",
    "TARGET_RATIO",
    "bench_bootstrap",
    "compare",
    "cpu_line",
    "machine",
    "markdown",
    "model_lines",
    "seconds_line",
    "target_lines",
    "variant",
]
