"""What several stages share: journaled and shared (multi-worker) searches, the
zero-shot search of a space, loading the trained supernet, the subnet evaluator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hwnas.app.checks import build_configured_strategy
from hwnas.app.config import sharing
from hwnas.app.context import ConfigError, Context
from hwnas.app.device import run_device
from hwnas.core import atomic
from hwnas.core.progress import progress_bar
from hwnas.core.runtime import resolve_threads
from hwnas.hardware.constraints import Constraints
from hwnas.search.base import SearchProblem, Strategy
from hwnas.search.journal import JournaledObjective, journal_header, weights_digest
from hwnas.search.objectives import TaskObjective, ZeroShotObjective
from hwnas.search.optuna import workers
from hwnas.search.optuna.base import OptunaStrategy
from hwnas.search.optuna.distributed import open_storage
from hwnas.search.result import SearchResult
from hwnas.spaces.base import SearchSpace
from hwnas.training.evaluate import SubnetEvaluator, first_samples

log = logging.getLogger(__name__)


def _journaled(
    ctx: Context, objective, journal: Path, title: str, seed: int, space: SearchSpace
) -> JournaledObjective:
    """``objective`` journaled to ``journal`` (replayed on resume, see
    :mod:`hwnas.search.journal`); the header ties it to the weights being scored."""
    return JournaledObjective(objective, journal, _header(ctx, title, seed, space), ctx.cost_model)


def _header(ctx: Context, title: str, seed: int, space: SearchSpace) -> dict[str, Any]:
    """What identifies a search: its journal's header and its shared study's header."""
    return journal_header(title, seed, space, weights=weights_digest(ctx.model))


ZERO_SHOT_TITLE = "zero-shot search"


def _search_title(ctx: Context) -> str:
    return f"subnet search ({ctx.task.primary_metric})"


def _zero_shot_search(
    ctx: Context,
    space: SearchSpace,
    seed: int,
    title: str,
    journal: Path,
    budget: int | None = None,
    share: bool = False,
    constraints: Constraints | None = None,
) -> SearchResult:
    """DE-Score search of ``space`` under ``constraints`` (default: the run's)."""
    constraints = ctx.constraints if constraints is None else constraints
    inner = ZeroShotObjective(ctx.model, ctx.descore, ctx.inputs, ctx.cost_model, seed)
    objective = _journaled(ctx, inner, journal, title, seed, space)
    strategy = build_configured_strategy(ctx.settings.zero_shot.strategy, "zero_shot.strategy")
    with progress_bar(title, **ctx.progress) as update:
        problem = SearchProblem(space, objective, ctx.cost_model, constraints, seed, update)
        if share:
            result = _shared_run(ctx, "zero_shot", strategy, problem, budget, objective.header)
        else:
            result = strategy.run(problem, budget)
    if inner.failures:
        log.warning("%s: proxy failures (candidates): %s", title, dict(inner.failures))
    result.proxy_failures = dict(inner.failures)
    return result


def _shared_run(
    ctx: Context,
    stage: str,
    strategy: Strategy,
    problem: SearchProblem,
    budget: int | None,
    header: dict[str, Any],
) -> SearchResult:
    """``strategy.run`` as worker 0 of the stage's shared study when the stage's config
    asks for workers or a storage (:mod:`hwnas.search.optuna.workers`), else alone."""
    node = sharing({"zero_shot": ctx.settings.zero_shot, "search": ctx.settings.search}[stage])
    if not workers.wants_sharing(node):
        return strategy.run(problem, budget)
    if not isinstance(strategy, OptunaStrategy):  # validate() refused this already
        raise ConfigError(f"{stage}.workers needs {stage}/strategy=tpe or nsga2")
    folder = ctx.stage_dir(stage)
    n = int(node.workers)
    strategy.shared = workers.shared_study(node, folder, header, worker=0)
    open_storage(strategy.shared.storage)  # an RDB's tables made before workers open it
    threads = max(1, resolve_threads(ctx.settings.threads) // n)
    procs = workers.start_workers(ctx.out, stage, folder, n, threads) if n > 1 else []
    try:
        result = strategy.run(problem, budget)
    except BaseException:
        for _, proc in procs:
            proc.kill()
        raise
    workers.finish_workers(procs, folder)
    stats = strategy.shared.stats
    log.info(
        "%s: %d workers, study %r in %s; this process measured %d of %d",
        stage,
        n,
        strategy.shared.study_name,
        strategy.shared.storage,
        stats.get("measured", 0),
        len(result.unique()),
    )
    return result


def _search_objective(ctx: Context) -> TaskObjective:
    return TaskObjective(evaluator(ctx, int(ctx.settings.search.val_samples)), ctx.task)


def load_supernet(ctx: Context) -> None:
    path = ctx.out / "supernet" / "supernet.pt"
    if not path.exists():
        raise ConfigError(
            f"no trained supernet in {path.parent}: add supernet to stages "
            "or resume the run folder where it finished (hydra.run.dir=...)"
        )
    done = path.parent / "DONE.json"
    fix = f"delete {path} and {done} and rerun to redo the supernet stage from its checkpoint"
    ctx.model.load_state_dict(atomic.check_finite_weights(path, atomic.torch_load(path, fix), fix))


def evaluator(ctx: Context, val_samples: int) -> SubnetEvaluator:
    """Inherited-weight scores of the supernet's subnets on the run's evaluation device
    (:mod:`hwnas.app.device`)."""
    calib_samples = int(ctx.settings.search.calib_samples)
    return SubnetEvaluator(
        ctx.model,
        ctx.task,
        ctx.dm.calibration_loader(calib_samples),
        first_samples(ctx.dm.val_dataloader(), val_samples),
        calib_samples,
        device=run_device(ctx),
    )
