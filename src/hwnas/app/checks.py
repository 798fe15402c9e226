"""Every check that can be made before a run writes anything.

:func:`validate` looks at the composed config alone: each group's typed schema checks
its own values (:func:`hwnas.app.schema.validate_config`); what is left here spans
several groups or the machine (a strategy that cannot share a study, a CUDA device that
is not there). :func:`preflight` looks at the built :class:`~hwnas.app.context.Context`
(the space, the cost model) and refuses constraints no arch can meet, per stage, before
any search or training starts. Both raise :class:`~hwnas.app.config.ConfigError` with
one line naming the key and the fix.
"""

from __future__ import annotations

import logging
import math

import torch
from omegaconf import DictConfig, OmegaConf

from hwnas.app.config import ConfigError, build_configured_strategy, sharing
from hwnas.app.context import Context
from hwnas.app.data import check_data
from hwnas.app.schema import validate_config
from hwnas.app.schema.run import STAGES
from hwnas.hardware.constraints import Constraints
from hwnas.search.optuna.workers import SEARCH_STAGES, check_sharing
from hwnas.spaces.base import SearchSpace
from hwnas.training.hidden import hidden_layers
from hwnas.training.importance import check_importance
from hwnas.training.settings import TrainerSettings

log = logging.getLogger(__name__)

__all__ = ["STAGES", "preflight", "search_constraints", "tighten", "unreachable", "validate"]


def non_finite(cfg: DictConfig) -> None:
    """Refuse NaN and infinite numbers anywhere in the config (every group, the data's
    and the model's keys too): ``<` and ``>`` checks are false for NaN, so one would
    otherwise pass every range check."""

    def walk(node: object, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{key}={node}: not a finite number; give a finite value")

    walk(OmegaConf.to_container(cfg, resolve=False), "")


def validate(cfg: DictConfig) -> None:
    """Reject invalid values with one-line messages (Hydra already rejects unknown keys
    and values of the wrong type when it composes)."""
    non_finite(cfg)
    try:
        validate_config(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_data(cfg)  # a user's own data module: data._target_ imports, data.task exists
    for key in SEARCH_STAGES:  # a shared search needs a strategy that can share
        node = cfg[key]
        strategy = build_configured_strategy(node.strategy, f"{key}.strategy")
        try:
            check_sharing(sharing(node), key, strategy)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if "quantize" in cfg:
        build_configured_strategy(cfg.quantize.strategy, "quantize.strategy")
    if cfg.zero_shot.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("zero_shot.device=cuda but no CUDA device is visible: use cpu")
    try:  # the machine: a GPU for a GPU accelerator, tensorboard for its logger
        TrainerSettings.of(cfg.trainer).check()
    except ValueError as err:
        raise ConfigError(str(err)) from err


# ------------------------------------------------------------------ preflight
def tighten(constraints: Constraints, metric: str, cap: float) -> Constraints:
    """``constraints`` with ``metric`` capped at ``cap`` (the lower of both maxima)."""
    windows = dict(constraints.windows)
    lo, hi = windows.get(metric, (None, None))
    windows[metric] = (lo, cap if hi is None else min(hi, cap))
    if lo is not None and lo > windows[metric][1]:
        raise ConfigError(
            f"constraints.{metric}.min={lo:g} is above the cap {cap:.4g} from "
            "search.max_latency_ratio: lower the min or raise the ratio"
        )
    return Constraints(windows)


def _reach(ctx: Context, space: SearchSpace) -> dict[str, tuple[float, float]]:
    """Each cost's range over ``space``, from its smallest and largest arch (costs grow
    with every elastic choice)."""
    small, big = ctx.cost_model(space.min_arch()), ctx.cost_model(space.max_arch())
    return {k: (small[k], big[k]) for k in small if k in big}


def unreachable(
    ctx: Context, space: SearchSpace, constraints: Constraints
) -> list[tuple[str, str, float, float]]:
    """``(metric, side, bound, achievable)`` for every window side no arch of ``space``
    can meet: a max below the smallest arch's cost, a min above the largest arch's."""
    reach = _reach(ctx, space)
    out = []
    for metric, (lo, hi) in constraints.windows.items():
        if metric not in reach:
            raise ConfigError(
                f"constraints.{metric}: the cost model ({ctx.cost_model.describe()}) does not "
                f"report {metric}; remove the constraint or pick a hardware target that does"
            )
        least, most = reach[metric]
        if hi is not None and least > hi:
            out.append((metric, "max", hi, least))
        if lo is not None and most < lo:
            out.append((metric, "min", lo, most))
    return out


def _refusal(metric: str, side: str, bound: float, achievable: float, where: str) -> str:
    if side == "max":
        return (
            f"constraints.{metric}.max={bound:g} is below {where}'s smallest achievable "
            f"{metric}={achievable:.4g}: raise the max to at least {achievable:.4g}"
        )
    return (
        f"constraints.{metric}.min={bound:g} is above {where}'s largest achievable "
        f"{metric}={achievable:.4g}: lower the min to at most {achievable:.4g}"
    )


def search_constraints(ctx: Context) -> tuple[Constraints, float]:
    """The constraints of stage ``search``: ``constraints`` plus the latency cap of
    ``search.max_latency_ratio``; and the largest subnet's latency."""
    costs = ctx.cost_model(ctx.model.space.max_arch())
    largest = costs.get("latency_ms", float("nan"))
    ratio = ctx.cfg.search.max_latency_ratio
    if ratio is None:
        return ctx.constraints, largest
    if "latency_ms" not in costs:
        raise ConfigError(
            f"search.max_latency_ratio={ratio} needs latency, which the cost model "
            f"({ctx.cost_model.describe()}) does not estimate: set it to null or choose "
            "a hardware target with latency"
        )
    return tighten(ctx.constraints, "latency_ms", float(ratio) * largest), largest


# stage -> (the file it reads, the stage that writes it)
NEEDS = {
    "search": ("supernet/supernet.pt", "supernet"),
    "final": ("search/chosen.json", "search"),
    "quantize": ("final/subnet.pt", "final"),
}


def _inputs_of_earlier_stages(ctx: Context, stages: list[str]) -> None:
    """A stage whose input no listed stage writes needs it in the run folder already
    (a resumed run): refuse before anything is written otherwise."""
    for stage, (path, writer) in NEEDS.items():
        if stage in stages and writer not in stages and not (ctx.out / path).exists():
            raise ConfigError(
                f"stages={stages}: {stage} reads {path}, which no listed stage writes and "
                f"{ctx.out} does not hold: add {writer} to stages or resume the run folder "
                "where it finished (hydra.run.dir=...)"
            )


def preflight(ctx: Context) -> list[str]:
    """Refuse, before anything runs, constraints that no arch of a stage can meet.

    Returns warnings (progressive-shrinking phases whose restricted space has no
    feasible arch: their between-phase search is skipped and the phase samples its
    space uniformly, as the sandwich rule trains every size anyway)."""
    stages = list(ctx.cfg.stages)
    _inputs_of_earlier_stages(ctx, stages)
    space = ctx.model.space
    has_latency = "latency_ms" in ctx.cost_model(space.min_arch())
    if ctx.descore.needs_latency and not has_latency and {"zero_shot", "supernet"} & set(stages):
        raise ConfigError(
            f"the DE-Score weighs latency but the cost model ({ctx.cost_model.describe()}) "
            "estimates none: set proxy.weights.latency=0 or give the hardware target a "
            "latency method (hardware.correction_samples > 0)"
        )
    for i, ph in enumerate(ctx.cfg.supernet.phases):
        unknown = [g for g in ph.elastic if g not in space.groups]
        if unknown:
            raise ConfigError(
                f"supernet.phases[{i}] ({ph.name}): elastic must be a subset of the "
                f"{space.name} groups {space.groups}, got {list(ph.elastic)}"
            )
    for stage in ("supernet", "final"):
        key = f"{stage}.kd_hidden"
        if stage in stages and ctx.cfg[stage].kd_hidden > 0:
            try:
                hidden_layers(ctx.model, key)
            except ValueError as err:
                raise ConfigError(str(err)) from None
    if "supernet" in stages:
        try:
            check_importance(ctx.cfg.supernet.importance, ctx.model)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    listed = {g for ph in ctx.cfg.supernet.phases for g in ph.elastic}
    untrained = sorted({g.group for g in space.genes if len(g.choices) > 1} - listed - {""})
    if "supernet" in stages and untrained:
        # restrict() keeps such genes at their largest choice in every phase, yet the
        # searches (zero-shot, on the supernet) would pick smaller, never-trained choices
        raise ConfigError(
            f"supernet.phases never make the {space.name} groups {untrained} elastic: they "
            "would train only at their largest choice while the searches pick any; add a "
            "phase listing them (model=bootstrap with model.kernel=true: a kernel phase, "
            "see conf/supernet/bootstrap.yaml) or build the model without them"
        )
    if {"zero_shot", "search"} & set(stages):
        miss = unreachable(ctx, space, ctx.constraints)
        if miss:
            raise ConfigError(_refusal(*miss[0], where=f"space {space.name!r}"))
    if "search" in stages:
        constraints, largest = search_constraints(ctx)
        miss = unreachable(ctx, space, constraints)
        if miss:
            metric, side, bound, achievable = miss[0]
            if metric == "latency_ms" and side == "max" and ctx.cfg.search.max_latency_ratio:
                need = achievable / largest
                raise ConfigError(
                    f"search.max_latency_ratio={ctx.cfg.search.max_latency_ratio} caps latency "
                    f"at {bound:.4g} ms, below the smallest subnet's {achievable:.4g} ms "
                    f"({ctx.cost_model.describe()}): raise it to at least {need:.3f} or "
                    "set it to null"
                )
            raise ConfigError(_refusal(metric, side, bound, achievable, "the space"))
    warnings: list[str] = []
    if "supernet" in stages:
        for i, ph in enumerate(ctx.cfg.supernet.phases):
            sub = space.restrict(list(ph.elastic))
            if sub.size() <= 1:
                continue
            miss = unreachable(ctx, sub, ctx.constraints)
            if miss:
                metric, side, bound, achievable = miss[0]
                warnings.append(
                    f"supernet phase {i} ({ph.name}): no arch of its space meets "
                    f"constraints.{metric}.{side}={bound:g} (it reaches {achievable:.4g}); "
                    "its zero-shot search is skipped and it samples its space uniformly"
                )
    for w in warnings:
        log.warning("%s", w)
    return warnings
