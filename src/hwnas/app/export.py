"""The Pareto set, delivered: any point of a search's front exported as a plain subnet
(``subnet.pt`` state dict, ``arch.json``, ``subnet.onnx``) with a model card
(``card.json`` + ``card.md``: its test metric and how it was obtained, latency and
throughput with the hardware fingerprint, parameters, FLOPs, size on disk, parent model,
the commands that reproduce it), and an ``index.md`` table with a plot of them all.

The final stage exports the chosen subnet (``final.export=chosen``) or every point of
the search's front (``final.export=front``; fine-tuning them all is opt-in:
``final.finetune=front``); ``python -m hwnas.export`` exports any point of a finished run
without searching again (:mod:`hwnas.app.export_cli`)."""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch import nn

from hwnas.app.cards import write_card
from hwnas.app.context import Context
from hwnas.app.device import evaluate
from hwnas.core import atomic
from hwnas.spaces.base import Arch
from hwnas.training.bn import inherited_label

log = logging.getLogger(__name__)

PICKS = "<k> (0 = fastest), fastest, most_accurate, all, or <cost><=<x> (latency_ms<=2.5)"


@dataclass
class FrontPoint:
    """A row of ``search/pareto.csv``: the arch, its validation score and its costs."""

    index: int
    arch: Arch
    val: float
    costs: dict[str, float]


def read_front(run_dir: Path, ctx: Context) -> list[FrontPoint]:
    """The search's front of a run, sorted by cost (``search/pareto.csv``)."""
    path = run_dir / "search" / "pareto.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run_dir must hold a finished search (add search to stages)"
        )
    metric = ctx.task.primary_metric
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        points = []
        for i, row in enumerate(rows):
            arch = ctx.model.space.validate(Arch.from_str(row["arch"]))
            costs = {k: float(v) for k, v in row.items() if k not in ("arch", metric, "front_cost")}
            points.append(FrontPoint(i, arch, float(row[metric]), costs))
    except (KeyError, ValueError, TypeError) as err:
        raise atomic.corrupt(path, err, "rerun the search stage (delete search/DONE.json)") from err
    if not points:
        raise ValueError(f"{path} holds no subnet: the search found nothing feasible")
    return points


def pick_points(points: list[FrontPoint], pick: str) -> list[FrontPoint]:
    """The points ``pick`` names (:data:`PICKS`); one-line errors list the choices."""
    pick = pick.strip()
    if pick == "all":
        return list(points)
    if pick == "fastest":
        return [points[0]]
    if pick == "most_accurate":
        return [max(points, key=lambda p: (p.val, -p.index))]
    if re.fullmatch(r"\d+", pick):
        k = int(pick)
        if k >= len(points):
            raise ValueError(f"pick={k}: the front has {len(points)} points (0..{len(points) - 1})")
        return [points[k]]
    match = re.fullmatch(r"([a-z_]+)\s*<=\s*([0-9.eE+-]+)", pick)
    if match:
        key, limit = match.group(1), float(match.group(2))
        if key not in points[0].costs:
            raise ValueError(
                f"pick={pick}: the front has no cost {key!r} ({sorted(points[0].costs)})"
            )
        within = [p for p in points if p.costs[key] <= limit]
        if not within:
            least = min(p.costs[key] for p in points)
            raise ValueError(f"pick={pick}: no point of the front has {key} <= {limit:g} "
                             f"(the least is {least:.4g})")  # fmt: skip
        return [max(within, key=lambda p: (p.val, -p.index))]
    raise ValueError(f"pick={pick!r}: use {PICKS}")


def point_dir(root: Path, point: FrontPoint) -> Path:
    """``<root>/<index>_<8 hex digits of the arch>``: stable names, sorted by cost."""
    digest = hashlib.sha1(point.arch.to_str().encode()).hexdigest()[:8]
    return root / f"{point.index:02d}_{digest}"


def export_points(
    ctx: Context,
    points: list[FrontPoint],
    root: Path,
    tuned: dict[int, tuple[nn.Module, dict[str, float], str]] | None = None,
    finetune: Callable[..., Any] | None = None,
    chosen: Arch | None = None,
) -> list[dict[str, Any]]:
    """Export ``points`` under ``root`` (one folder each), measured side by side, with a
    card each and ``root/index.md`` + ``root/front.png``; returns the cards.

    ``tuned``: nets already fine-tuned (the final stage's chosen subnet), by point
    index, with their test metrics and how they were obtained. Other points get the
    supernet's inherited weights with recalibrated BN, or are fine-tuned by
    ``finetune(ctx, net, folder, tag, arch)`` (the final stage's, ``final.*``); they are
    scored on the run's evaluation device (:mod:`hwnas.app.device`), then measured and
    saved from the CPU."""
    from hwnas.app.report import _measure, finetune_budget
    from hwnas.app.stages.common import evaluator
    from hwnas.app.subnet_io import save_subnet

    tuned = dict(tuned or {})
    ev = evaluator(ctx, 1)
    f = ctx.settings.final
    nets: dict[int, nn.Module] = {}
    scored: dict[int, tuple[dict[str, float], str]] = {}
    for p in points:
        folder = point_dir(root, p)
        folder.mkdir(parents=True, exist_ok=True)
        if p.index in tuned:
            net, metrics, method = tuned[p.index]
        else:
            net = ev.subnet(p.arch)
            method = inherited_label(ctx.model)
            if finetune is not None and int(f.epochs) > 0:
                finetune(ctx, net, folder, f"front{p.index:02d}", p.arch)
                budget = finetune_budget(int(f.epochs), f.limit_train_batches)
                method = f"fine-tuned {budget} from inherited weights"
            metrics = evaluate(ctx.task, net, ctx.dm.test_dataloader(), ev.device)
        nets[p.index], scored[p.index] = net.eval(), (metrics, method)
    speed = _measure(ctx, {str(i): n for i, n in nets.items()})
    cards = []
    for p in points:
        folder = point_dir(root, p)
        save_subnet(folder, nets[p.index], p.arch, ctx, onnx=bool(f.onnx))
        metrics, method = scored[p.index]
        cards.append(write_card(ctx, folder, p, metrics, method, speed[str(p.index)],
                                chosen=p.arch == chosen))  # fmt: skip
    write_index(ctx, root, cards)
    return cards


def write_index(ctx: Context, root: Path, cards: list[dict[str, Any]]) -> None:
    """``index.md``: one row per exported subnet (metric, latency, size, folder) and the
    plot ``front.png`` (test metric against measured latency)."""
    m = ctx.task.primary_metric
    lines = [
        f"# Exported subnets: {ctx.model.space.name} on {ctx.dm.name}",
        "",
        f"Test {m} of each subnet (how it was obtained in the card) against its latency "
        f"measured side by side on {cards[0]['hardware']['device_name']}.",
        "",
        "![front](front.png)",
        "",
        f"| point | test {m} | obtained | latency (ms) | params (M) | FLOPs (M) | size (MB) "
        "| folder |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cards:
        star = " (chosen)" if c["chosen"] else ""
        lines.append(
            f"| {c['point']}{star} | {c['test'][m]:.4f} | {c['test']['method']} "
            f"| {c['speed']['latency_ms']:.3f} | {c['params_m']:.4f} | {c['flops_m']:.2f} "
            f"| {c['size_mb']['subnet.pt']:.3f} | [{c['folder']}]({c['folder']}/card.md) |"
        )
    atomic.write_text(root / "index.md", "\n".join(lines) + "\n")
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    xs = [c["speed"]["latency_ms"] for c in cards]
    ys = [c["test"][m] for c in cards]
    for tuned, marker, label in ((False, "o", "inherited weights"), (True, "s", "fine-tuned")):
        pts = [(x, y) for c, x, y in zip(cards, xs, ys, strict=True)
               if c["test"]["method"].startswith("fine-tuned") == tuned]  # fmt: skip
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, color="tab:blue", label=label)
    for c, x, y in zip(cards, xs, ys, strict=True):
        ax.annotate(str(c["point"]), (x, y), textcoords="offset points", xytext=(4, 4))
        if c["chosen"]:
            ax.scatter([x], [y], marker="*", s=220, color="tab:red", label="chosen", zorder=5)
    ax.set_xlabel("latency (ms, measured)")
    ax.set_ylabel(f"test {m}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic.atomic_open(root / "front.png", "wb") as fh:
        fig.savefig(fh, dpi=110, format="png")


def chosen_point(points: list[FrontPoint], chosen: Arch) -> FrontPoint | None:
    return next((p for p in points if p.arch == chosen), None)


__all__ = ["FrontPoint", "export_points", "pick_points", "read_front"]
