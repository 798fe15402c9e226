"""The four pipeline stages; each takes the run :class:`~hwnas.context.Context` and
returns a summary (JSON-serialisable, with a ``metrics`` dict) after writing its
artifacts under ``<run>/<stage>/``."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from hwnas import atomic
from hwnas.checks import build_configured_strategy, search_constraints
from hwnas.context import ConfigError, Context
from hwnas.elastic import syncbn
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.progress import progress_bar
from hwnas.report import final_report, finetune_budget, plot_pareto, save_pareto
from hwnas.runtime import resolve_threads
from hwnas.search import workers
from hwnas.search.base import Evaluated, SearchProblem, SearchResult, Strategy
from hwnas.search.distributed import open_storage
from hwnas.search.journal import (
    JOURNAL_NAME,
    JournaledObjective,
    journal_header,
    weights_digest,
)
from hwnas.search.objectives import TaskObjective, ZeroShotObjective
from hwnas.search.optuna_base import OptunaStrategy
from hwnas.spaces.base import SearchSpace
from hwnas.subnet_io import save_subnet
from hwnas.training.bn import inherited_label
from hwnas.training.callbacks import ZeroShotSearchCallback
from hwnas.training.evaluate import SubnetEvaluator, first_samples
from hwnas.training.subnet import SubnetModule
from hwnas.training.supernet import Phase, SupernetModule
from hwnas.training.trainer import CHECKPOINT, build_trainer, fit, logged_metrics

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
    strategy = build_configured_strategy(ctx.cfg.zero_shot.strategy, "zero_shot.strategy")
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
    asks for workers or a storage (:mod:`hwnas.search.workers`), else alone."""
    node = ctx.cfg[stage]
    if not workers.wants_sharing(node):
        return strategy.run(problem, budget)
    if not isinstance(strategy, OptunaStrategy):  # validate() refused this already
        raise ConfigError(f"{stage}.workers needs {stage}/strategy=tpe or nsga2")
    folder = ctx.stage_dir(stage)
    n = int(node.get("workers", 1))
    strategy.shared = workers.shared_study(node, folder, header, worker=0)
    open_storage(strategy.shared.storage)  # an RDB's tables made before workers open it
    threads = max(1, resolve_threads(ctx.cfg.threads) // n)
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
    return TaskObjective(evaluator(ctx, int(ctx.cfg.search.val_samples)), ctx.task)


def work(ctx: Context, stage: str, worker: int | None, parent_pid: int | None = None) -> dict:
    """Join stage ``stage``'s shared search as worker ``worker`` (``python -m
    hwnas.search.worker``): the same objective, constraints and study as the stage's
    own process; writes nothing but the study. Returns the worker's counts."""
    if stage == "zero_shot":
        node, seed, space = ctx.cfg.zero_shot, ctx.seed, ctx.model.space
        title, constraints = ZERO_SHOT_TITLE, ctx.constraints
        objective: Any = ZeroShotObjective(
            ctx.model, ctx.descore, ctx.inputs, ctx.cost_model, seed
        )
    elif stage == "search":
        load_supernet(ctx)
        node, seed, space = ctx.cfg.search, ctx.seed, ctx.model.space
        title = _search_title(ctx)
        constraints, _ = search_constraints(ctx)
        objective = _search_objective(ctx)
    else:
        raise ValueError(f"stage={stage!r}: workers join zero_shot or search")
    strategy = build_configured_strategy(node.strategy, f"{stage}.strategy")
    header = _header(ctx, title, seed, space)
    shared = workers.shared_study(node, ctx.out / stage, header, worker, parent_pid)
    if not isinstance(strategy, OptunaStrategy):
        raise ConfigError(f"{stage}.workers needs {stage}/strategy=tpe or nsga2")
    strategy.shared = shared
    problem = SearchProblem(space, objective, ctx.cost_model, constraints, seed)
    strategy.run(problem, node.budget)
    return dict(shared.stats)


# ------------------------------------------------------------------ 1. zero-shot
def zero_shot(ctx: Context) -> dict[str, Any]:
    folder = ctx.stage_dir("zero_shot")
    start = time.perf_counter()
    budget = ctx.cfg.zero_shot.budget
    journal = folder / JOURNAL_NAME
    result = _zero_shot_search(
        ctx, ctx.model.space, ctx.seed, ZERO_SHOT_TITLE, journal, budget, share=True
    )
    seconds = time.perf_counter() - start
    result.save(folder)
    pool = result.pool(int(ctx.cfg.zero_shot.pool_size))
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


# ------------------------------------------------------------------- 2. supernet
def supernet(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg.supernet
    folder = ctx.stage_dir("supernet")
    phases = [Phase(p.name, tuple(p.elastic), int(p.epochs), float(p.lr)) for p in cfg.phases]
    calib = list(ctx.dm.calibration_loader(int(cfg.calib_samples)))
    module = SupernetModule(
        ctx.model,
        phases,
        num_random=cfg.num_random,
        kd_temperature=cfg.kd_temperature,
        kd_alpha=cfg.kd_alpha,
        label_smoothing=cfg.label_smoothing,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        seed=ctx.seed,
        calibration=lambda: calib,
        calib_samples=int(cfg.calib_samples),
        task=ctx.dm.task(label_smoothing=float(cfg.label_smoothing)),
        optimizer=str(cfg.optimizer),
        teacher=str(cfg.get("teacher", "inplace")),
        teacher_path=folder / "teacher.pt",
        sync_batchnorm=bool(ctx.cfg.trainer.get("sync_batchnorm", True)),
        warmup_fraction=float(cfg.get("warmup_fraction", 0.0)),
        smallest=bool(cfg.get("smallest", True)),
        kd_hidden=float(cfg.get("kd_hidden", 0.0)),
        importance=str(cfg.get("importance", "magnitude")),
        importance_data=lambda: ctx.dm.calibration_loader(int(cfg.get("importance_samples", 256))),
    )
    # the pool may keep to stage search's latency cap: each step then trains subnets of
    # the region the final choice comes from
    pool_constraints = (
        search_constraints(ctx)[0] if cfg.get("pool_within_cap", False) else ctx.constraints
    )

    def search(space: SearchSpace, i: int) -> SearchResult | None:
        journal = folder / f"phase{i}_{phases[i].name}" / JOURNAL_NAME
        try:
            return _zero_shot_search(
                ctx,
                space,
                ctx.seed + i,
                f"phase {i} zero-shot search",
                journal,
                int(cfg.search_budget),
                constraints=pool_constraints,
            )
        except InfeasibleError as err:
            log.warning("phase %d: %s; the phase samples its space uniformly", i, err)
            return None

    trainer = build_trainer(
        ctx.cfg.trainer,
        folder,
        max_epochs=module.total_epochs,
        title="supernet",
        limit_train_batches=cfg.limit_train_batches,
        callbacks=[ZeroShotSearchCallback(search, int(cfg.pool_size), folder)],
        checkpoint=folder / "checkpoints" / CHECKPOINT,
        checkpoint_key=f"supernet:{weights_digest(ctx.model)}",  # the initial weights
        **ctx.progress,
    )
    fit(trainer, module, ctx.dm)
    if not trainer.is_global_zero:  # the other processes of a DDP training stop here
        return {}
    atomic.torch_save(ctx.model.state_dict(), folder / "supernet.pt")
    metrics = {k: v for k, v in logged_metrics(trainer).items() if k.startswith("val/")}
    last = module.pools.get(len(phases) - 1, [])
    return {
        "epochs": module.total_epochs,
        "pools": {str(i): len(p) for i, p in module.pools.items()},
        # the subnets the last phase trained (stage search measures them with
        # pool_within_cap: they are the best-trained ones under its cap)
        "last_pool": [a.to_dict() for a in last],
        "metrics": {f"supernet/{k[4:]}": v for k, v in metrics.items()},
    }


def load_supernet(ctx: Context) -> None:
    path = ctx.out / "supernet" / "supernet.pt"
    if not path.exists():
        raise ConfigError(
            f"no trained supernet in {path.parent}: add supernet to stages "
            "or resume the run folder where it finished (hydra.run.dir=...)"
        )
    done = path.parent / "DONE.json"
    fix = f"delete {path} and {done} and rerun to redo the supernet stage from its checkpoint"
    ctx.model.load_state_dict(atomic.torch_load(path, fix))


def evaluator(ctx: Context, val_samples: int) -> SubnetEvaluator:
    calib_samples = int(ctx.cfg.search.calib_samples)
    return SubnetEvaluator(
        ctx.model,
        ctx.task,
        ctx.dm.calibration_loader(calib_samples),
        first_samples(ctx.dm.val_dataloader(), val_samples),
        calib_samples,
    )


# --------------------------------------------------------------------- 3. search
def search(ctx: Context) -> dict[str, Any]:
    load_supernet(ctx)
    sel = ctx.cfg.search
    folder = ctx.stage_dir("search")
    space = ctx.model.space
    largest = space.max_arch()
    constraints, largest_latency = search_constraints(ctx)
    metric, title = ctx.task.primary_metric, _search_title(ctx)
    journal = folder / JOURNAL_NAME
    objective = _journaled(ctx, _search_objective(ctx), journal, title, ctx.seed, space)
    strategy = build_configured_strategy(sel.strategy, "search.strategy")
    zs = ctx.results.get("zero_shot", {}).get("pool", [])[: int(sel.seed_with_zero_shot)]
    if ctx.cfg.supernet.get("pool_within_cap", False):
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
    return {
        "chosen": chosen.arch.to_dict(),
        "largest_latency_ms": largest_latency,
        "metrics": {
            f"search/val_{metric}": chosen.metrics[metric],
            **(
                {"search/latency_ms": chosen.costs["latency_ms"]}
                if "latency_ms" in chosen.costs
                else {}
            ),
        },
    }


# ---------------------------------------------------------------------- 4. final
def _finetune(
    ctx: Context, net: torch.nn.Module, folder: Path, tag: str, arch, teacher=None
) -> dict[str, float]:
    """Fine-tune ``net`` for final.epochs (distilled from ``teacher`` when given, with
    final.kd_alpha) and return every test metric of the task (``Task.evaluate``, as the
    inherited weights are scored). The training keeps ``checkpoints/last_<tag>.ckpt``
    and resumes from it."""
    f = ctx.cfg.final
    module = SubnetModule(
        net,
        int(f.epochs),
        lr=f.lr,
        momentum=f.momentum,
        weight_decay=f.weight_decay,
        warmup_fraction=float(f.warmup_fraction),
        task=ctx.dm.task(label_smoothing=float(f.label_smoothing)),
        optimizer=str(f.optimizer),
        teacher=teacher,
        kd_alpha=float(f.get("kd_alpha", 0.0)),
        kd_temperature=float(f.get("kd_temperature", 1.0)),
        kd_hidden=float(f.get("kd_hidden", 0.0)) if teacher is not None else 0.0,
    )
    trainer = build_trainer(
        ctx.cfg.trainer,
        folder,
        max_epochs=int(f.epochs),
        log_name=f"logs_{tag}",
        title=f"final ({tag})",
        limit_train_batches=f.limit_train_batches,
        checkpoint=folder / "checkpoints" / f"last_{tag}.ckpt",
        checkpoint_key=f"{tag}:{arch.to_str()}:{weights_digest(net)}",
        **ctx.progress,
    )
    sync = bool(ctx.cfg.trainer.get("sync_batchnorm", True))
    with syncbn.plain_batch_norms_synced(net), syncbn.synchronised(sync):
        fit(trainer, module, ctx.dm)
    return ctx.task.evaluate(net, ctx.dm.test_dataloader(), module.device)


def final(ctx: Context) -> dict[str, Any]:
    load_supernet(ctx)
    folder = ctx.stage_dir("final")
    chosen_path = ctx.out / "search" / "chosen.json"
    if not chosen_path.exists():
        raise ConfigError(
            f"no chosen subnet in {chosen_path.parent}: add search to stages "
            "or resume the run folder where it finished"
        )
    fix = (
        f"delete {chosen_path.parent / 'DONE.json'} and rerun to redo the search stage "
        "(its journal replays what it measured)"
    )
    chosen = ctx.model.space.validate(atomic.read_json(chosen_path, fix)["arch"])
    largest = ctx.model.space.max_arch()
    f = ctx.cfg.final
    epochs = int(f.epochs)
    ev = evaluator(ctx, 1)
    kd_alpha, kd_hidden = float(f.get("kd_alpha", 0.0)), float(f.get("kd_hidden", 0.0))
    kd = kd_alpha > 0 or kd_hidden > 0
    # final.kd_teacher=finetuned: the largest is fine-tuned first and then teaches
    after = str(f.get("kd_teacher", "inherited")) == "finetuned"
    sides = {}
    nets = {}
    order = [
        ("subnet", chosen, epochs > 0),
        ("largest", largest, epochs > 0 and bool(f.finetune_largest)),
    ]
    for tag, arch, tune in order[::-1] if after else order:
        net = ev.subnet(arch)
        inherited = ctx.task.evaluate(net, ctx.dm.test_dataloader())
        # final.kd_alpha or kd_hidden > 0: the chosen subnet learns from the supernet's
        # largest too (its logits, its encoder layers' outputs), as inherited or as
        # fine-tuned just before (a copy: the reference itself is not touched)
        teacher = None
        if tag == "subnet" and kd and tune:
            teacher = copy.deepcopy(nets["largest"]) if after else ev.subnet(largest)
        tuned = _finetune(ctx, net, folder, tag, arch, teacher) if tune else None
        sides[tag] = {
            "inherited": ctx.task.primary(inherited),
            "finetuned": None if tuned is None else ctx.task.primary(tuned),
            "all": {"inherited": inherited, "finetuned": tuned},
        }
        nets[tag] = net.eval()
    if ctx.rank != 0:  # the other processes of a DDP training stop after the trainings
        return {}
    save_subnet(folder, nets["subnet"], chosen, ctx, onnx=bool(f.onnx))
    kd_note = ""
    if kd:
        parts = []
        if kd_alpha > 0:
            parts.append(f"kd_alpha {kd_alpha:g}")
        if kd_hidden > 0:
            parts.append(f"hidden states weighted {kd_hidden:g}")
        whom = "the fine-tuned largest" if after else "the largest"
        kd_note = f" (the chosen subnet also distilled from {whom}: {', '.join(parts)})"
    return final_report(
        ctx,
        folder,
        nets["subnet"],
        nets["largest"],
        chosen,
        largest,
        sides["subnet"],
        sides["largest"],
        finetune_budget(epochs, f.limit_train_batches) + kd_note,
    )
