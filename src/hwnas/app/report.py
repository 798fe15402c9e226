"""Pareto fronts (CSV + plot) and the final side-by-side report (JSON + Markdown)."""

from __future__ import annotations

import csv
import json
import logging
import math
import platform
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.figure import Figure
from torch import nn

from hwnas.core import atomic
from hwnas.core.types import Timing
from hwnas.hardware.constraints import Constraints
from hwnas.hardware.latency import LatencyStats, device_name, measure_latency
from hwnas.search.result import Evaluated, SearchResult
from hwnas.spaces.base import Arch
from hwnas.training.bn import inherited_label

if TYPE_CHECKING:
    from hwnas.app.context import Context

log = logging.getLogger(__name__)

COST_KEYS = ("latency_ms", "params_m", "flops_m", "memory_mb")


def save_pareto(result: SearchResult, path: str | Path, gain: str) -> list[Evaluated]:
    """Write the feasible Pareto front (``gain`` up, latency down) as CSV; return it.

    Without a latency estimate the front is drawn against ``flops_m`` instead
    (:attr:`SearchResult.cost_key`); the last column, ``front_cost``, names the cost
    the front was drawn against on every row (``flops_m (no latency estimate)``)."""
    key = result.cost_key
    front = result.pareto(key)
    with atomic.atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        keys = [k for k in COST_KEYS if front and k in front[0].costs]
        w.writerow(["arch", gain, *keys, "front_cost"])
        axis = key if key == "latency_ms" else f"{key} (no latency estimate)"
        for e in front:
            w.writerow([e.arch.to_str(), e.fitness, *(e.costs[k] for k in keys), axis])
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
    window shaded, the chosen arch starred and the reference (largest) circled.
    Without a latency estimate the x axis is FLOPs (:attr:`SearchResult.cost_key`), and
    its label says so."""
    uniq = result.unique()
    key = result.cost_key
    fig = Figure(figsize=(6.4, 4.4))  # no pyplot: no global figure state, no backend
    ax = fig.subplots()
    cost = [e.costs[key] for e in uniq]
    lo, hi = constraints.windows.get(key, (None, None))
    left = min(cost) * 0.95 if lo is None else lo
    right = max(cost) * 1.05 if hi is None else hi
    window = "latency window" if key == "latency_ms" else f"{key} window"
    ax.axvspan(left, right, color="tab:green", alpha=0.08, label=window)
    for feasible, colour, label in (
        (True, "tab:blue", "feasible"),
        (False, "tab:gray", "infeasible"),
    ):
        pts = [e for e in uniq if e.feasible == feasible]
        if pts:
            ax.scatter(
                [e.costs[key] for e in pts],
                [e.fitness for e in pts],
                s=14,
                color=colour,
                alpha=0.7,
                label=label,
            )
    front = result.pareto(key)
    if front:
        ax.plot(
            [e.costs[key] for e in front],
            [e.fitness for e in front],
            "-",
            color="tab:orange",
            label="Pareto front",
        )
    if reference is not None:
        ref = next((e for e in uniq if e.arch == reference), None)
        if ref is not None:
            ax.scatter(
                [ref.costs[key]],
                [ref.fitness],
                s=90,
                facecolors="none",
                edgecolors="black",
                label="largest subnet",
            )
    if chosen is not None:
        ax.scatter(
            [chosen.costs[key]],
            [chosen.fitness],
            marker="*",
            s=220,
            color="tab:red",
            label="chosen",
            zorder=5,
        )
    unit = {"latency_ms": "latency (ms)", "flops_m": "MFLOPs"}.get(key, key)
    ax.set_xlabel(unit if key == "latency_ms" else f"{unit} (no latency estimate)")
    ax.set_ylabel(gain_label)
    ax.set_title(f"{result.strategy}: {len(uniq)} archs, {len(front)} on the front")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic.atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=120, format=Path(path).suffix.lstrip(".") or "png")


LATENCY_ROUNDS = 3  # interleaved rounds of batch-1 timing in the final comparison


def _measure(ctx: Context, nets: dict[str, nn.Module]) -> dict[str, dict[str, float]]:
    """Latency and throughput of each of ``nets``, timed the same way. Batch-1 latency
    is timed in :data:`LATENCY_ROUNDS` interleaved rounds (the order alternating) and
    the median of the rounds' medians kept, so a slow spell of the machine or of its
    allocator does not land on one network only; throughput is timed once each."""
    hw = ctx.cfg.hardware
    shape = ctx.task.example_inputs
    timing = Timing(hw.device, hw.backend, hw.threads, int(hw.batch_size), hw.warmup, hw.repeats)
    common = {k: v for k, v in timing.kwargs().items() if k != "batch_size"}
    rounds: dict[str, list[LatencyStats]] = {tag: [] for tag in nets}
    for r in range(LATENCY_ROUNDS):
        for tag in list(nets)[:: 1 if r % 2 == 0 else -1]:
            rounds[tag].append(
                measure_latency(nets[tag], shape, batch_size=int(hw.batch_size), **common)
            )
    batch = int(ctx.settings.final.throughput_batch)
    rows = {}
    for tag, net in nets.items():
        thr = measure_latency(net, shape, batch_size=batch, **common)
        latency = statistics.median(s.median_ms for s in rounds[tag])
        row = {
            "latency_ms": latency,
            "latency_p90_ms": statistics.median(s.p90_ms for s in rounds[tag]),
            "throughput_per_s": batch / (thr.median_ms / 1000.0),
        }
        row.update(ctx.task.speed_fields(latency, int(hw.batch_size)))
        rows[tag] = row
    return rows


def _all_metrics(value: dict[str, Any], tuned: bool) -> dict[str, float]:
    """Every test metric of a side, obtained as the compared one was."""
    every = value.get("all") or {}
    return dict(every.get("finetuned" if tuned else "inherited") or {})


def finetune_budget(epochs: int, limit: float | int) -> str:
    """``3 epochs``, or with Lightning's ``limit_train_batches`` below a full epoch
    ``1 epoch of 100 batches`` / ``2 epochs of 30% of the batches``."""
    unit = "epoch" if epochs == 1 else "epochs"
    if isinstance(limit, int) or (isinstance(limit, float) and limit > 1):
        return f"{epochs} {unit} of {int(limit)} batches"
    if limit < 1:
        return f"{epochs} {unit} of {limit:.0%} of the batches"
    return f"{epochs} {unit}"


def _method(value: dict[str, float | None], budget: str, inherited: str) -> tuple[float, str]:
    """The score a side is compared with, and how it was obtained (``inherited``: the
    label of an inherited-weights score, :func:`~hwnas.training.bn.inherited_label`)."""
    if value.get("finetuned") is not None:
        return float(value["finetuned"]), f"fine-tuned {budget} from inherited weights"
    return float(value["inherited"]), inherited


def final_report(
    ctx: Context,
    folder: Path,
    net: nn.Module,
    big: nn.Module,
    arch: Arch,
    largest: Arch,
    sub: dict[str, float | None],
    ref: dict[str, float | None],
    budget: str,
) -> dict[str, Any]:
    """Measure both nets on this machine and write ``report.json`` and ``report.md``.

    ``sub``/``ref`` hold the task's primary test metric as ``inherited`` and
    ``finetuned`` (None when not fine-tuned); rows name them ``test_<metric>``,
    ``inherited_test_<metric>`` and ``finetuned_test_<metric>``. The drop compares like
    with like: fine-tuned with fine-tuned (same epochs) when both were fine-tuned, else
    inherited with inherited; it is oriented so a positive drop means the chosen subnet
    is worse."""
    m = ctx.task.primary_metric
    both_tuned = sub.get("finetuned") is not None and ref.get("finetuned") is not None
    rows = {}
    label = inherited_label(net)
    timed = _measure(ctx, {"largest": big, "subnet": net})
    for tag, a, value in (("largest", largest, ref), ("subnet", arch, sub)):
        kept = value if both_tuned else {"inherited": value["inherited"]}
        score, method = _method(kept, budget, label)
        rows[tag] = {
            f"test_{m}": score,
            "test_method": method,
            f"inherited_test_{m}": value["inherited"],
            f"finetuned_test_{m}": value.get("finetuned"),
            "test_metrics": {
                k: v for k, v in _all_metrics(value, both_tuned).items() if k in ctx.task.metrics
            },
            **ctx.model.cost_of(a),
            **timed[tag],
        }
    refused = _not_learned(ctx, rows, m)
    if refused and ctx.settings.final.require_learned:  # no speedup or drop is stated
        atomic.write_text(folder / "report.md", f"# Final report: refused\n\n{refused}\n")
        raise ResultError(refused)
    if refused:
        log.warning("%s (final.require_learned=false: the run completes)", refused)
    deployed, deployed_method = _method(sub, budget, label)
    sign = 1.0 if ctx.task.higher_is_better else -1.0
    speedup = rows["largest"]["latency_ms"] / rows["subnet"]["latency_ms"]
    thr_gain = rows["subnet"]["throughput_per_s"] / rows["largest"]["throughput_per_s"]
    drop = sign * (rows["largest"][f"test_{m}"] - rows["subnet"][f"test_{m}"])
    if refused:  # a model that learned nothing has no speedup or drop worth stating
        speedup = thr_gain = drop = None
    hw = ctx.cfg.hardware
    env = {
        "machine": platform.machine(),
        "processor": device_name(str(hw.device)),
        "torch": torch.__version__,
        "threads": hw.threads,
        "device": hw.device,
        "backend": hw.backend,
        "batch_size": hw.batch_size,
        "throughput_batch": ctx.settings.final.throughput_batch,
        "search_cost_model": ctx.cost_model.describe(),
    }
    report = {
        "data": ctx.dm.name,
        "space": ctx.model.space.name,
        "task": ctx.task.name,
        "metric": m,
        "higher_is_better": ctx.task.higher_is_better,
        "sample_unit": ctx.task.sample_unit,
        "arch": arch.to_dict(),
        "largest": rows["largest"],
        "subnet": rows["subnet"],
        "comparison": rows["subnet"]["test_method"],
        "inherited_method": label,
        f"deployed_test_{m}": deployed,
        "deployed_method": deployed_method,
        "speedup_latency": speedup,
        "speedup_throughput": thr_gain,
        "drop": drop,
        "not_learned": refused,
        "search_hypervolume": ctx.results.get("search", {}).get("hypervolume"),
        "environment": env,
    }
    atomic.write_json(folder / "report.json", report)
    atomic.write_text(folder / "report.md", _markdown(report, ctx.task.speed_labels()))
    log.info(
        "final: test %s %.4f (subnet) vs %.4f (largest), both %s; latency %.3f vs %.3f ms%s",
        m,
        rows["subnet"][f"test_{m}"],
        rows["largest"][f"test_{m}"],
        report["comparison"],
        rows["subnet"]["latency_ms"],
        rows["largest"]["latency_ms"],
        "" if speedup is None else f" ({speedup:.2f}x)",
    )
    metrics = {
        f"final/test_{m}": deployed,
        f"final/compared_test_{m}": rows["subnet"][f"test_{m}"],
        f"final/largest_test_{m}": rows["largest"][f"test_{m}"],
        "final/drop": drop,
        "final/latency_ms": rows["subnet"]["latency_ms"],
        "final/speedup": speedup,
        "final/throughput_gain": thr_gain,
    }
    return {
        "report": str(folder / "report.json"),
        "metrics": {k: v for k, v in metrics.items() if v is not None},
    }


class ResultError(ValueError):
    """A stage ran but its result means nothing (a training that diverged); the message
    says which figure, why, and what to change."""


def _not_learned(ctx: Context, rows: dict[str, dict[str, Any]], m: str) -> str | None:
    """Why the compared figures mean nothing, or None: a non-finite test metric, or one
    not better than the task's chance level (:meth:`~hwnas.tasks.base.Task.chance_level`:
    a classifier's majority-class rate, F1 0 of a reader, WER 1 of a recogniser)."""
    chance = ctx.task.chance_level(ctx.dm.test_dataloader())
    higher = ctx.task.higher_is_better
    bad = []
    for tag in ("subnet", "largest"):
        value = rows[tag][f"test_{m}"]
        if value is None:
            continue
        if not math.isfinite(value):
            bad.append(f"the {tag}'s test {m} is {value}")
        elif chance is not None and (
            value <= chance + 1e-12 if higher else value >= chance - 1e-12
        ):
            bad.append(f"the {tag}'s test {m} {value:.4f} is not {'above' if higher else 'below'} "
                       f"chance ({chance:.4f}, {ctx.task.chance_meaning})")  # fmt: skip
    if not bad:
        return None
    return (
        f"final: {'; '.join(bad)}: the training diverged or learned nothing, so no speedup "
        "or drop is reported; lower final.lr and rerun in the same folder (the final stage "
        "runs again), or lower supernet.phases.<i>.lr in a new folder, or check the data "
        "(final.require_learned=false: a plumbing run that is not meant to learn)"
    )


def _hv_line(hv: dict[str, Any] | None, m: str) -> list[str]:
    if not hv:
        return []
    ref = ", ".join(f"{k} {v:.4g}" for k, v in hv["reference"].items())
    return [
        f"- search front: {hv['front_size']} subnets, hypervolume {hv['value']:.4g} (val {m} "
        f"up, {hv['cost_key']} down; reference {ref}; {hv['normalised']:.3f} of that box)"
    ]


def _field(row: dict[str, Any], key: str) -> Any:
    return row[key] if key in row else row.get("test_metrics", {}).get(key)


def _fmt(value: Any, fmt: str) -> str:
    return "n/a (not fine-tuned)" if value is None else fmt.format(value)


def _markdown(r: dict[str, Any], speed_labels: list[tuple[str, str, str]] = ()) -> str:
    env, m = r["environment"], r["metric"]
    fields = [
        (f"test {m} compared ({r['comparison']})", f"test_{m}", "{:.4f}"),
        (f"test {m}, {r['inherited_method']}", f"inherited_test_{m}", "{:.4f}"),
        (f"test {m}, fine-tuned", f"finetuned_test_{m}", "{:.4f}"),
        ("parameters (M)", "params_m", "{:.4f}"),
        ("FLOPs (M)", "flops_m", "{:.2f}"),
        ("latency (ms, median)", "latency_ms", "{:.3f}"),
        ("latency (ms, p90)", "latency_p90_ms", "{:.3f}"),
        (f"throughput ({r['sample_unit']}/s)", "throughput_per_s", "{:.0f}"),
    ]
    fields += [f for f in speed_labels if f[1] in r["largest"]]
    extra = [k for k in r["largest"].get("test_metrics", {}) if k not in (m, "loss")]
    fields[1:1] = [(f"test {k} compared", k, "{:.4f}") for k in extra]
    lines = [
        f"# hwnas report: {r['space']} on {r['data']}",
        "",
        "| metric | largest subnet (reference) | chosen subnet |",
        "|---|---|---|",
    ]
    for label, key, fmt in fields:
        lines.append(
            f"| {label} | {_fmt(_field(r['largest'], key), fmt)} "
            f"| {_fmt(_field(r['subnet'], key), fmt)} |"
        )
    if r.get("not_learned"):
        claims = [f"- **no speedup or drop is stated**: {r['not_learned']}"]
    else:
        claims = [
            f"- {m} drop: {r['drop']:.4f} (largest minus chosen, positive = chosen worse; "
            f"both {r['comparison']})",
            f"- latency speedup: **{r['speedup_latency']:.2f}x**; throughput gain: "
            f"**{r['speedup_throughput']:.2f}x**",
        ]
    lines += [
        "",
        *claims[:1],
        f"- the deployed subnet: test {m} {r[f'deployed_test_{m}']:.4f} ({r['deployed_method']})",
        *claims[1:],
        f"- measured with {env['backend']} on {env['device']} ({env['processor']}, "
        f"{env['machine']}), {env['threads']} threads, batch {env['batch_size']} "
        f"(throughput at batch {env['throughput_batch']}), torch {env['torch']}",
        f"- search-time cost model: {env['search_cost_model']}",
        *_hv_line(r.get("search_hypervolume"), m),
        f"- chosen arch: `{json.dumps(r['arch'], separators=(',', ':'))}`",
        "",
    ]
    return "\n".join(lines)
