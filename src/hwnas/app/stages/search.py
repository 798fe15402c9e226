"""Stage 3, search: the subnets of the trained supernet, scored with inherited weights
and recalibrated BN, under the run's constraints; the chosen subnet and the front."""

from __future__ import annotations

import logging
from typing import Any

from hwnas.app.checks import build_configured_strategy, search_constraints
from hwnas.app.context import Context
from hwnas.app.device import stage_device
from hwnas.app.report import plot_pareto, save_pareto
from hwnas.app.stages.common import (
    _journaled,
    _search_objective,
    _search_title,
    _shared_run,
    load_supernet,
)
from hwnas.core import atomic
from hwnas.core.progress import progress_bar
from hwnas.search.base import SearchProblem, Strategy
from hwnas.search.journal import JOURNAL_NAME
from hwnas.search.result import Evaluated
from hwnas.training.bn import inherited_label

log = logging.getLogger(__name__)


def run(ctx: Context) -> dict[str, Any]:
    load_supernet(ctx)
    stage_device(ctx, "search", "evaluations and BN recalibration")
    sel = ctx.settings.search
    folder = ctx.stage_dir("search")
    space = ctx.model.space
    largest = space.max_arch()
    constraints, largest_latency = search_constraints(ctx)
    metric, title = ctx.task.primary_metric, _search_title(ctx)
    journal = folder / JOURNAL_NAME
    objective = _journaled(ctx, _search_objective(ctx), journal, title, ctx.seed, space)
    strategy = build_configured_strategy(sel.strategy, "search.strategy")
    zs = ctx.results.get("zero_shot", {}).get("pool", [])[: int(sel.seed_with_zero_shot)]
    if ctx.settings.supernet.pool_within_cap:
        zs += ctx.results.get("supernet", {}).get("last_pool", [])
    with progress_bar(title, **ctx.progress) as update:
        problem = SearchProblem(space, objective, ctx.cost_model, constraints, ctx.seed, update)
        result = _shared_run(ctx, "search", strategy, problem, sel.budget, objective.header)
    # The best feasible zero-shot archs, the largest and the smallest are measured as
    # well, so the front and the plot always show the reference points; with
    # supernet.pool_within_cap so are the subnets the last phase trained (under the cap).
    # Seeds that break the search's constraints could never be chosen: not measured.
    seeds = [space.validate(a) for a in zs]
    seeds = [a for a in seeds if constraints.feasible(ctx.cost_model(a))]
    extra = list(dict.fromkeys([*seeds, largest, space.min_arch()]))  # once each
    history = list(result.history)
    for arch in extra:
        (metrics,) = objective.measure([arch])
        costs = ctx.cost_model(arch)
        history.append(
            Evaluated(arch, metrics, costs, iteration=-1, feasible=constraints.feasible(costs))
        )
    result = Strategy.finalize(result.strategy, problem, history, len(result.top))
    result.save(folder)
    save_pareto(result, folder / "pareto.csv", gain=metric)
    chosen = result.best
    plot_pareto(
        result,
        folder / "pareto.png",
        constraints,
        gain_label=f"val {metric} (inherited weights)",
        chosen=chosen,
        reference=largest,
    )
    atomic.write_json(
        folder / "chosen.json",
        {
            "arch": chosen.arch.to_dict(),
            "val_metrics": chosen.metrics,
            "val_primary": metric,
            "val_method": inherited_label(ctx.model),
            "costs": chosen.costs,
            "largest_latency_ms": largest_latency,
            "constraints": constraints.describe(),
        },
    )
    log.info(
        "search: chose %s (val %s %.4f, %s)",
        chosen.arch.to_str(),
        metric,
        chosen.metrics[metric],
        {k: round(v, 3) for k, v in chosen.costs.items()},
    )
    hv = result.hypervolume_record()
    if hv is not None:
        log.info(
            "search: front of %d, hypervolume %.4g (%.3f of the explored box; reference %s)",
            hv["front_size"], hv["value"], hv["normalised"], hv["reference"],
        )  # fmt: skip
    return {
        "chosen": chosen.arch.to_dict(),
        "largest_latency_ms": largest_latency,
        "hypervolume": hv,
        "metrics": {
            f"search/val_{metric}": chosen.metrics[metric],
            **({"search/hypervolume": hv["value"]} if hv is not None else {}),
            **(
                {"search/latency_ms": chosen.costs["latency_ms"]}
                if "latency_ms" in chosen.costs
                else {}
            ),
        },
    }
