"""A worker process's part in a stage's shared search (``python -m
hwnas.app.search_worker``)."""

from __future__ import annotations

import logging
from typing import Any

from hwnas.app.checks import build_configured_strategy, search_constraints
from hwnas.app.config import sharing
from hwnas.app.context import ConfigError, Context
from hwnas.app.stages.common import (
    ZERO_SHOT_TITLE,
    _header,
    _search_objective,
    _search_title,
    load_supernet,
)
from hwnas.search.base import SearchProblem
from hwnas.search.objectives import ZeroShotObjective
from hwnas.search.optuna import workers
from hwnas.search.optuna.base import OptunaStrategy

log = logging.getLogger(__name__)


def work(ctx: Context, stage: str, worker: int | None, parent_pid: int | None = None) -> dict:
    """Join stage ``stage``'s shared search as worker ``worker`` (``python -m
    hwnas.app.search_worker``): the same objective, constraints and study as the stage's
    own process; writes nothing but the study. Returns the worker's counts."""
    if stage == "zero_shot":
        node, seed, space = ctx.settings.zero_shot, ctx.seed, ctx.model.space
        title, constraints = ZERO_SHOT_TITLE, ctx.constraints
        objective: Any = ZeroShotObjective(ctx.model, ctx.descore, ctx.inputs, ctx.cost_model, seed)
    elif stage == "search":
        load_supernet(ctx)
        node, seed, space = ctx.settings.search, ctx.seed, ctx.model.space
        title = _search_title(ctx)
        constraints, _ = search_constraints(ctx)
        objective = _search_objective(ctx)
    else:
        raise ValueError(f"stage={stage!r}: workers join zero_shot or search")
    strategy = build_configured_strategy(node.strategy, f"{stage}.strategy")
    header = _header(ctx, title, seed, space)
    shared = workers.shared_study(sharing(node), ctx.out / stage, header, worker, parent_pid)
    if not isinstance(strategy, OptunaStrategy):
        raise ConfigError(f"{stage}.workers needs {stage}/strategy=tpe or nsga2")
    strategy.shared = shared
    problem = SearchProblem(space, objective, ctx.cost_model, constraints, seed)
    strategy.run(problem, node.budget)
    return dict(shared.stats)
