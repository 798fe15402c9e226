"""Stage 1, zero-shot: a train-free DE-Score search of the whole space; its pool seeds
the supernet's first phase and the final search."""

from __future__ import annotations

import logging
import time
from typing import Any

from hwnas.app.context import Context
from hwnas.app.report import plot_pareto, save_pareto
from hwnas.app.stages.common import ZERO_SHOT_TITLE, _zero_shot_search
from hwnas.core import atomic
from hwnas.search.journal import JOURNAL_NAME

log = logging.getLogger(__name__)


def run(ctx: Context) -> dict[str, Any]:
    folder = ctx.stage_dir("zero_shot")
    log.info("stage zero_shot: proxies on %s (zero_shot.device)", ctx.device)
    start = time.perf_counter()
    budget = ctx.settings.zero_shot.budget
    journal = folder / JOURNAL_NAME
    result = _zero_shot_search(
        ctx, ctx.model.space, ctx.seed, ZERO_SHOT_TITLE, journal, budget, share=True
    )
    seconds = time.perf_counter() - start
    result.save(folder)
    pool = result.pool(int(ctx.settings.zero_shot.pool_size))
    atomic.write_json(folder / "pool.json", [a.to_dict() for a in pool], indent=1)
    save_pareto(result, folder / "pareto.csv", gain="descore")
    plot_pareto(
        result, folder / "pareto.png", ctx.constraints, gain_label="DE-Score", chosen=result.best
    )
    n = len(result.unique())
    log.info(
        "zero-shot: %d archs scored in %.1f s (%.1f/s); best %s",
        n,
        seconds,
        n / seconds,
        result.best.arch.to_str(),
    )
    return {
        "best": result.best.arch.to_dict(),
        "pool": [a.to_dict() for a in pool],
        "proxy_failures": result.proxy_failures,
        "metrics": {
            "zero_shot/candidates_per_s": n / seconds,
            "zero_shot/best_descore": result.best.fitness,
            "zero_shot/proxy_failures": float(sum(result.proxy_failures.values())),
        },
    }
