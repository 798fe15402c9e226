"""Pareto fronts (CSV + plot) and the final side-by-side report (JSON + Markdown)."""

from __future__ import annotations

import csv
import json
import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from hwnas.hardware.constraints import Constraints  # noqa: E402
from hwnas.hardware.latency import device_name, measure_latency  # noqa: E402
from hwnas.search.base import Evaluated, SearchResult  # noqa: E402
from hwnas.spaces.base import Arch  # noqa: E402

if TYPE_CHECKING:
    from hwnas.context import Context

log = logging.getLogger(__name__)

COST_KEYS = ("latency_ms", "params_m", "flops_m", "memory_mb")


def save_pareto(result: SearchResult, path: str | Path, gain: str) -> list[Evaluated]:
    """Write the feasible Pareto front (``gain`` up, latency down) as CSV; return it."""
    front = result.pareto("latency_ms")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        keys = [k for k in COST_KEYS if front and k in front[0].costs]
        w.writerow(["arch", gain, *keys])
        for e in front:
            w.writerow([e.arch.to_str(), e.fitness, *(e.costs[k] for k in keys)])
    return front


def plot_pareto(
    result: SearchResult,
    path: str | Path,
    constraints: Constraints,
    gain_label: str,
    chosen: Evaluated | None = None,
    reference: Arch | None = None,
) -> None:
    """Objective vs latency for every evaluated arch, the front, the feasible latency
    window shaded, the chosen arch starred and the reference (largest) circled."""
    uniq = result.unique()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lat = [e.costs["latency_ms"] for e in uniq]
    lo, hi = constraints.windows.get("latency_ms", (None, None))
    left = min(lat) * 0.95 if lo is None else lo
    right = max(lat) * 1.05 if hi is None else hi
    ax.axvspan(left, right, color="tab:green", alpha=0.08, label="latency window")
    for feasible, colour, label in (
        (True, "tab:blue", "feasible"),
        (False, "tab:gray", "infeasible"),
    ):
        pts = [e for e in uniq if e.feasible == feasible]
        if pts:
            ax.scatter(
                [e.costs["latency_ms"] for e in pts],
                [e.fitness for e in pts],
                s=14,
                color=colour,
                alpha=0.7,
                label=label,
            )
    front = result.pareto("latency_ms")
    if front:
        ax.plot(
            [e.costs["latency_ms"] for e in front],
            [e.fitness for e in front],
            "-",
            color="tab:orange",
            label="Pareto front",
        )
    if reference is not None:
        ref = next((e for e in uniq if e.arch == reference), None)
        if ref is not None:
            ax.scatter(
                [ref.costs["latency_ms"]],
                [ref.fitness],
                s=90,
                facecolors="none",
                edgecolors="black",
                label="largest subnet",
            )
    if chosen is not None:
        ax.scatter(
            [chosen.costs["latency_ms"]],
            [chosen.fitness],
            marker="*",
            s=220,
            color="tab:red",
            label="chosen",
            zorder=5,
        )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(gain_label)
    ax.set_title(f"{result.strategy}: {len(uniq)} archs, {len(front)} on the front")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _measure(ctx: Context, net: nn.Module) -> dict[str, float]:
    hw = ctx.cfg.hardware
    shape = tuple(ctx.dm.input_shape)
    common = dict(
        device=hw.device,
        threads=hw.threads,
        warmup=hw.warmup,
        repeats=hw.repeats,
        backend=hw.backend,
    )
    lat = measure_latency(net, shape, batch_size=int(hw.batch_size), **common)
    batch = int(ctx.cfg.final.throughput_batch)
    thr = measure_latency(net, shape, batch_size=batch, **common)
    return {
        "latency_ms": lat.median_ms,
        "latency_p90_ms": lat.p90_ms,
        "throughput_img_s": batch / (thr.median_ms / 1000.0),
    }


def _accuracy_method(acc: dict[str, float | None], epochs: int) -> tuple[float, str]:
    """The accuracy a side is compared with, and how it was obtained."""
    if acc.get("finetuned_test_acc") is not None:
        return float(
            acc["finetuned_test_acc"]
        ), f"fine-tuned {epochs} epochs from inherited weights"
    return float(acc["inherited_test_acc"]), "inherited supernet weights, BN recalibrated"


def final_report(
    ctx: Context,
    folder: Path,
    net: nn.Module,
    big: nn.Module,
    arch: Arch,
    largest: Arch,
    sub: dict[str, float | None],
    ref: dict[str, float | None],
    epochs: int,
) -> dict[str, Any]:
    """Measure both nets on this machine and write ``report.json`` and ``report.md``.

    ``sub``/``ref`` hold ``inherited_test_acc`` and ``finetuned_test_acc`` (None when
    not fine-tuned). The accuracy drop compares like with like: fine-tuned with
    fine-tuned (same epochs) when both were fine-tuned, else inherited with inherited."""
    both_tuned = (
        sub.get("finetuned_test_acc") is not None and ref.get("finetuned_test_acc") is not None
    )
    rows = {}
    for tag, module, a, acc in (("largest", big, largest, ref), ("subnet", net, arch, sub)):
        if both_tuned:
            value, method = _accuracy_method(acc, epochs)
        else:
            value, method = _accuracy_method({"inherited_test_acc": acc["inherited_test_acc"]}, 0)
        rows[tag] = {
            "test_acc": value,
            "test_acc_method": method,
            **acc,
            **ctx.model.cost_of(a),
            **_measure(ctx, module),
        }
    deployed, deployed_method = _accuracy_method(sub, epochs)
    speedup = rows["largest"]["latency_ms"] / rows["subnet"]["latency_ms"]
    thr_gain = rows["subnet"]["throughput_img_s"] / rows["largest"]["throughput_img_s"]
    hw = ctx.cfg.hardware
    env = {
        "machine": platform.machine(),
        "processor": device_name(str(hw.device)),
        "torch": torch.__version__,
        "threads": hw.threads,
        "device": hw.device,
        "backend": hw.backend,
        "batch_size": hw.batch_size,
        "throughput_batch": ctx.cfg.final.throughput_batch,
        "search_cost_model": ctx.cost_model.describe(),
    }
    report = {
        "data": ctx.dm.name,
        "space": ctx.model.space.name,
        "arch": arch.to_dict(),
        "largest": rows["largest"],
        "subnet": rows["subnet"],
        "comparison": rows["subnet"]["test_acc_method"],
        "deployed_test_acc": deployed,
        "deployed_test_acc_method": deployed_method,
        "speedup_latency": speedup,
        "speedup_throughput": thr_gain,
        "accuracy_drop": rows["largest"]["test_acc"] - rows["subnet"]["test_acc"],
        "environment": env,
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text(_markdown(report))
    log.info(
        "final: test acc %.4f (subnet) vs %.4f (largest), both %s; latency %.3f vs %.3f ms (%.2fx)",
        rows["subnet"]["test_acc"],
        rows["largest"]["test_acc"],
        report["comparison"],
        rows["subnet"]["latency_ms"],
        rows["largest"]["latency_ms"],
        speedup,
    )
    return {
        "report": str(folder / "report.json"),
        "metrics": {
            "final/test_acc": deployed,
            "final/compared_test_acc": rows["subnet"]["test_acc"],
            "final/largest_test_acc": rows["largest"]["test_acc"],
            "final/accuracy_drop": report["accuracy_drop"],
            "final/latency_ms": rows["subnet"]["latency_ms"],
            "final/speedup": speedup,
            "final/throughput_gain": thr_gain,
        },
    }


def _fmt(value: Any, fmt: str) -> str:
    return "n/a (not fine-tuned)" if value is None else fmt.format(value)


def _markdown(r: dict[str, Any]) -> str:
    env = r["environment"]
    fields = [
        (f"test accuracy compared ({r['comparison']})", "test_acc", "{:.4f}"),
        ("test accuracy, inherited weights (BN recalibrated)", "inherited_test_acc", "{:.4f}"),
        ("test accuracy, fine-tuned", "finetuned_test_acc", "{:.4f}"),
        ("parameters (M)", "params_m", "{:.4f}"),
        ("FLOPs (M)", "flops_m", "{:.2f}"),
        ("latency (ms, median)", "latency_ms", "{:.3f}"),
        ("latency (ms, p90)", "latency_p90_ms", "{:.3f}"),
        ("throughput (images/s)", "throughput_img_s", "{:.0f}"),
    ]
    lines = [
        f"# hwnas report: {r['space']} on {r['data']}",
        "",
        "| metric | largest subnet (reference) | chosen subnet |",
        "|---|---|---|",
    ]
    for label, key, fmt in fields:
        lines.append(
            f"| {label} | {_fmt(r['largest'][key], fmt)} | {_fmt(r['subnet'][key], fmt)} |"
        )
    lines += [
        "",
        f"- accuracy drop: {100 * r['accuracy_drop']:.2f} points (largest minus chosen, "
        f"both {r['comparison']})",
        f"- the deployed subnet: {100 * r['deployed_test_acc']:.2f} % test accuracy "
        f"({r['deployed_test_acc_method']})",
        f"- latency speedup: **{r['speedup_latency']:.2f}x**; throughput gain: "
        f"**{r['speedup_throughput']:.2f}x**",
        f"- measured with {env['backend']} on {env['device']} ({env['processor']}, "
        f"{env['machine']}), {env['threads']} threads, batch {env['batch_size']} "
        f"(throughput at batch {env['throughput_batch']}), torch {env['torch']}",
        f"- search-time cost model: {env['search_cost_model']}",
        f"- chosen arch: `{json.dumps(r['arch'], separators=(',', ':'))}`",
        "",
    ]
    return "\n".join(lines)
