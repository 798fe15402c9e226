"""Every check that can be made before a run writes anything.

:func:`validate` looks at the composed config alone (values, types, names);
:func:`preflight` looks at the built :class:`~hwnas.context.Context` (the space, the
cost model) and refuses constraints no arch can meet, per stage, before any search or
training starts. Both raise :class:`~hwnas.context.ConfigError` with one line naming the
key and the fix.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hwnas.context import ConfigError, Context
from hwnas.hardware.constraints import KNOWN_METRICS, Constraints
from hwnas.progress import MODES
from hwnas.search.base import Strategy, build_strategy, list_strategies
from hwnas.search.workers import SEARCH_STAGES, check_sharing
from hwnas.spaces.base import SearchSpace
from hwnas.training.hidden import hidden_layers
from hwnas.training.importance import check_importance
from hwnas.training.optim import OPTIMIZERS
from hwnas.training.supernet import TEACHERS, check_sandwich
from hwnas.training.trainer import check_trainer_config

log = logging.getLogger(__name__)

STAGES = ("zero_shot", "supernet", "search", "final", "quantize")
KD_TEACHERS = ("inherited", "finetuned")  # final.kd_teacher

# (key, kind, lowest allowed); kind: int | number | fraction (a number in (0, 1] or an
# int count: Lightning's limit_*_batches)
NUMERIC: tuple[tuple[str, str, float | None], ...] = (
    ("seed", "int", None),
    ("progress_interval_s", "number", 0.0),
    ("zero_shot.batch_size", "int", 1),
    ("zero_shot.pool_size", "int", 1),
    ("supernet.num_random", "int", 0),
    ("supernet.pool_size", "int", 1),
    ("supernet.search_budget", "int", 1),
    ("supernet.kd_temperature", "number", 1e-12),
    ("supernet.kd_alpha", "number", 0.0),
    ("supernet.kd_hidden", "number", 0.0),
    ("supernet.label_smoothing", "number", 0.0),
    ("supernet.momentum", "number", 0.0),
    ("supernet.weight_decay", "number", 0.0),
    ("supernet.calib_samples", "int", 1),
    ("supernet.importance_samples", "int", 1),
    ("supernet.warmup_fraction", "number", 0.0),
    ("supernet.limit_train_batches", "fraction", None),
    ("search.val_samples", "int", 1),
    ("search.calib_samples", "int", 1),
    ("search.seed_with_zero_shot", "int", 0),
    ("final.epochs", "int", 0),
    ("final.lr", "number", 1e-12),
    ("final.momentum", "number", 0.0),
    ("final.weight_decay", "number", 0.0),
    ("final.label_smoothing", "number", 0.0),
    ("final.limit_train_batches", "fraction", None),
    ("final.warmup_fraction", "number", 0.0),
    ("final.throughput_batch", "int", 1),
    ("final.kd_alpha", "number", 0.0),
    ("final.kd_temperature", "number", 1e-12),
    ("final.kd_hidden", "number", 0.0),
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_number(key: str, value: Any, kind: str = "number", low: float | None = None) -> None:
    """One-line ConfigError unless ``value`` is of ``kind`` and at least ``low``."""
    if kind == "int" and not _is_int(value):
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if kind in ("number", "fraction") and not _is_number(value):
        raise ConfigError(f"{key}={value!r}: expected a number")
    if kind == "fraction" and not (_is_int(value) and value >= 1 or 0 < value <= 1):
        raise ConfigError(f"{key}={value!r}: use a fraction in (0, 1] or a batch count >= 1")
    if low is not None and value < low:
        raise ConfigError(f"{key}={value!r} must be >= {low:g}")


def build_configured_strategy(node: Any, key: str) -> Strategy:
    """The strategy of a ``<stage>.strategy`` node; bad names, unknown keys and
    wrongly typed values raise a ConfigError naming ``key``."""
    kwargs = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    name = kwargs.pop("name", None)
    if name not in list_strategies():
        raise ConfigError(f"{key}.name={name!r}: choose one of {list_strategies()}")
    try:
        return build_strategy(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key} ({name}): {err}") from err


def _check_constraints(cfg: DictConfig) -> None:
    for metric, spec in (cfg.constraints or {}).items():
        if metric not in KNOWN_METRICS:
            raise ConfigError(
                f"constraints.{metric}: unknown metric; use one of {list(KNOWN_METRICS)}"
            )
        if spec is None or _is_number(spec):
            continue
        for side, value in spec.items():
            if side not in ("min", "max"):
                raise ConfigError(f"constraints.{metric}.{side}: unknown key; use min or max")
            if value is not None and not _is_number(value):
                raise ConfigError(
                    f"constraints.{metric}.{side}={value!r}: expected a number or null"
                )


def validate(cfg: DictConfig) -> None:
    """Reject invalid values with one-line messages (Hydra already rejects unknown keys)."""
    stages = list(cfg.stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ConfigError(f"stages={stages}: use a non-empty subset of {list(STAGES)}")
    if stages != [s for s in STAGES if s in stages]:
        raise ConfigError(f"stages={stages} must keep the order {list(STAGES)}")
    absent = object()
    for key, kind, low in NUMERIC:
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent:  # absent: the saved config of a run made before that key
            check_number(key, value, kind, low)
    for key in SEARCH_STAGES:
        node = cfg[key]
        strategy = build_configured_strategy(node.strategy, f"{key}.strategy")
        try:
            check_sharing(node, key, strategy)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if "quantize" in cfg:  # run folders of older versions have no quantize node
        from hwnas.quantize.stage import check_quantize_config

        try:
            check_quantize_config(OmegaConf.to_container(cfg.quantize, resolve=True))
        except (ValueError, KeyError) as err:
            raise ConfigError(str(err).strip("'\"")) from None
        build_configured_strategy(cfg.quantize.strategy, "quantize.strategy")
    for i, ph in enumerate(cfg.supernet.phases):
        where = f"supernet.phases[{i}]"
        check_number(f"{where}.epochs", ph.epochs, "int", 0)
        check_number(f"{where}.lr", ph.lr, "number", 1e-12)
    ratio = cfg.search.max_latency_ratio
    if ratio is not None and (not _is_number(ratio) or not 0 < ratio <= 1):
        raise ConfigError(f"search.max_latency_ratio={ratio!r} must be in (0, 1] or null")
    for key in ("zero_shot.budget", "search.budget"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (not _is_int(value) or value < 1):
            raise ConfigError(f"{key}={value!r} must be null (the strategy's own) or >= 1")
    if cfg.zero_shot.inputs not in ("gaussian", "data"):
        raise ConfigError(f"zero_shot.inputs={cfg.zero_shot.inputs!r}: use gaussian or data")
    if cfg.zero_shot.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"zero_shot.device={cfg.zero_shot.device!r}: use auto, cpu or cuda")
    if cfg.zero_shot.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("zero_shot.device=cuda but no CUDA device is visible: use cpu")
    threads = cfg.threads
    if threads != "auto" and (not _is_int(threads) or threads < 1):
        raise ConfigError(f"threads={threads!r}: use auto or an integer >= 1")
    for key in ("supernet.optimizer", "final.optimizer"):
        if OmegaConf.select(cfg, key) not in OPTIMIZERS:
            raise ConfigError(
                f"{key}={OmegaConf.select(cfg, key)!r}: choose one of {list(OPTIMIZERS)}"
            )
    teacher = OmegaConf.select(cfg, "supernet.teacher", default="inplace")
    if teacher not in TEACHERS:
        raise ConfigError(f"supernet.teacher={teacher!r}: choose one of {list(TEACHERS)}")
    try:
        check_importance(OmegaConf.select(cfg, "supernet.importance", default="magnitude"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key in ("supernet.smallest", "supernet.pool_within_cap"):
        flag = OmegaConf.select(cfg, key, default=None)
        if flag is not None and not isinstance(flag, bool):
            raise ConfigError(f"{key}={flag!r}: use true or false")
    try:
        check_sandwich(
            OmegaConf.select(cfg, "supernet.smallest", default=True), cfg.supernet.num_random
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    kd_teacher = OmegaConf.select(cfg, "final.kd_teacher", default="inherited")
    if kd_teacher not in KD_TEACHERS:
        raise ConfigError(f"final.kd_teacher={kd_teacher!r}: choose one of {list(KD_TEACHERS)}")
    if kd_teacher == "finetuned" and not cfg.final.finetune_largest:
        raise ConfigError(
            "final.kd_teacher=finetuned needs final.finetune_largest=true (the teacher is "
            "the fine-tuned largest subnet): set it, or kd_teacher=inherited"
        )
    if OmegaConf.select(cfg, "supernet.pool_within_cap", default=False) and (
        cfg.search.max_latency_ratio is None
    ):
        raise ConfigError(
            "supernet.pool_within_cap=true needs search.max_latency_ratio (the cap the pool "
            "keeps to): set a ratio or pool_within_cap=false"
        )
    if cfg.progress not in MODES:
        raise ConfigError(f"progress={cfg.progress!r}: choose one of {list(MODES)}")
    try:
        check_trainer_config(cfg.trainer)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _check_constraints(cfg)


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


def preflight(ctx: Context) -> list[str]:
    """Refuse, before anything runs, constraints that no arch of a stage can meet.

    Returns warnings (progressive-shrinking phases whose restricted space has no
    feasible arch: their between-phase search is skipped and the phase samples its
    space uniformly, as the sandwich rule trains every size anyway)."""
    stages = list(ctx.cfg.stages)
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
    for key, stage in (("supernet.kd_hidden", "supernet"), ("final.kd_hidden", "final")):
        if stage in stages and OmegaConf.select(ctx.cfg, key, default=0.0) > 0:
            try:
                hidden_layers(ctx.model, key)
            except ValueError as err:
                raise ConfigError(str(err)) from None
    if "supernet" in stages:
        try:
            check_importance(
                OmegaConf.select(ctx.cfg, "supernet.importance", default="magnitude"), ctx.model
            )
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
