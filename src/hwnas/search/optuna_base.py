"""What the Optuna-backed strategies (NSGA-II, TPE) share.

:class:`OptunaStrategy` maps every gene of the space to a categorical distribution and
drives an Optuna study with ask-and-tell; subclasses pick the sampler and the
objective values. Shared rules:

- **Budget** = number of objective evaluations (distinct feasible archs measured).
- **Constraints**: every suggestion's costs are checked before it is measured. An
  infeasible one is never measured; it is told to Optuna with its constraint
  violations (Optuna constraints, so the sampler learns to avoid the region) and a
  placeholder value, and recorded once in the history with ``feasible=False``, empty
  metrics and NaN fitness. Only feasible archs can be returned.
- **Repeats**: a suggestion already measured is told its earlier values and not
  counted. After ``max_tries`` suggestions in a row without a new feasible arch, a
  random unseen feasible arch is enqueued instead (the search stops early when none
  is left).
- **Fitness told to Optuna**: with ``metric`` set, that raw measured metric (higher
  is better, e.g. ``"accuracy"``). With ``metric=None``, the objective's
  :meth:`~hwnas.search.base.Objective.stable_fitness` of the arch against a frozen
  reference: the first ``reference_size`` archs measured (the sampler's random start;
  see the subclasses for the default). Those first trials are held untold until the
  reference is complete (so the sampler keeps sampling at random), then every arch,
  those included, is told its value against that same reference, which never changes
  afterwards. An absolute objective (``relative = False``) needs no reference and is
  told at once.
- **Result**: every measured arch re-ranked together (``rank="history"``,
  :meth:`Strategy.finalize`); the study is kept as ``self.study`` after :meth:`run`.
- **Shared**: with ``self.shared`` set, the search is one worker of a study that many
  processes share through an Optuna storage (:mod:`hwnas.search.distributed`).
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import optuna

from hwnas.hardware.constraints import Constraints
from hwnas.search.base import (
    SHRINK_AFTER,
    Evaluated,
    SearchProblem,
    SearchResult,
    Strategy,
    infeasible_error,
)
from hwnas.search.distributed import SharedStudy, run_shared
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)

_PLAIN = (type(None), bool, int, float, str)
_CONSTRAINT_ATTR = "hwnas_violation"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial log lines and experimental-feature warnings."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)


class GeneCodec:
    """Genes <-> Optuna categorical parameters (choice values when they are plain
    scalars, else choice indices)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.by_index = {
            g.name for g in space.genes if not all(isinstance(c, _PLAIN) for c in g.choices)
        }
        self.distributions = {
            g.name: optuna.distributions.CategoricalDistribution(
                list(range(len(g.choices))) if g.name in self.by_index else list(g.choices)
            )
            for g in space.genes
        }

    def decode(self, params: Mapping[str, Any]) -> Arch:
        values = {
            g.name: g.choices[params[g.name]] if g.name in self.by_index else params[g.name]
            for g in self.space.genes
        }
        return self.space.canonical(values)

    def encode(self, arch: Arch) -> dict[str, Any]:
        return {
            g.name: g.choices.index(arch[g.name]) if g.name in self.by_index else arch[g.name]
            for g in self.space.genes
        }


def violations(constraints: Constraints, costs: Mapping[str, float]) -> dict[str, float]:
    """``{"<metric>.min" / "<metric>.max": amount}``, relative to the bound, one per
    window side; all ``<= 0`` iff feasible."""
    out = {}
    for key, (lo, hi) in constraints.windows.items():
        value = costs[key]
        if lo is not None:
            out[f"{key}.min"] = (lo - value) / max(abs(lo), 1e-12)
        if hi is not None:
            out[f"{key}.max"] = (value - hi) / max(abs(hi), 1e-12)
    return out


def set_constraints(trial: optuna.trial.Trial, amounts: Mapping[str, float]) -> None:
    """Attach constraint values to a trial before it is told (Optuna >= 5 reads
    ``set_constraint``; older releases read a user attribute via :func:`constraints_func`)."""
    if hasattr(trial, "set_constraint"):
        for key, value in amounts.items():
            trial.set_constraint(key, value)
    else:  # pragma: no cover - optuna < 5
        trial.set_user_attr(_CONSTRAINT_ATTR, list(amounts.values()) or [0.0])


def constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Constraint values stored by :func:`set_constraints` (Optuna < 5)."""
    return list(trial.user_attrs.get(_CONSTRAINT_ATTR, [0.0]))


def sampler_constraints() -> dict[str, Any]:
    """Sampler keyword arguments for constraint handling on this Optuna version."""
    if hasattr(optuna.trial.Trial, "set_constraint"):
        return {}
    return {"constraints_func": constraints_func}  # pragma: no cover - optuna < 5


class OptunaStrategy(Strategy):
    """Ask-and-tell loop shared by the Optuna strategies (see the module doc)."""

    directions: tuple[str, ...] = ("maximize",)

    def __init__(
        self,
        trials: int = 100,
        top_k: int = 10,
        metric: str | None = None,
        max_tries: int = 50,
        seed: int | None = None,
        reference_size: int | None = None,
    ):
        if trials < 1 or top_k < 1 or max_tries < 1:
            raise ValueError(f"{self.name} needs trials>=1, top_k>=1, max_tries>=1")
        if reference_size is not None and reference_size < 1:
            raise ValueError(f"{self.name} needs reference_size >= 1 or null")
        self.trials, self.top_k, self.metric = trials, top_k, metric
        self.max_tries, self.seed, self.reference_size = max_tries, seed, reference_size
        self.study: optuna.Study | None = None
        # set to join a study shared by many workers (hwnas.search.distributed)
        self.shared: SharedStudy | None = None

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    @abstractmethod
    def values(self, fitness: float, costs: Mapping[str, float]) -> list[float]: ...

    @abstractmethod
    def default_reference_size(self) -> int:
        """How many archs form the frozen reference when ``reference_size`` is null."""

    def exclude_costs(self) -> tuple[str, ...]:
        """Costs optimised as objectives of their own, left out of the fitness told."""
        return ()

    def iteration(self, evaluated: int) -> int:
        return evaluated

    def run(self, problem: SearchProblem, budget: int | None = None) -> SearchResult:
        seed = problem.seed if self.seed is None else self.seed
        total = min(budget or self.trials, self.trials)
        if self.shared is not None:
            return run_shared(self, problem, total, self.shared)
        rng, codec = random.Random(seed), GeneCodec(problem.space)
        history: list[Evaluated] = []
        measured: dict[Arch, Evaluated] = {}
        told: dict[Arch, list[float]] = {}
        rejected: set[Arch] = set()
        held: list[tuple[optuna.trial.Trial, Arch]] = []
        reference: list[dict[str, float]] | None = None
        if self.metric is not None or not problem.objective.relative:
            reference = []  # absolute values: nothing to hold
        ref_size = min(self.reference_size or self.default_reference_size(), total)
        misses = 0

        def tell(trial: optuna.trial.Trial, arch: Arch) -> None:
            if arch not in told:
                record = measured[arch]
                told[arch] = self.values(self._value(problem, record, reference), record.costs)
            study.tell(trial, told[arch])

        with quiet_optuna():
            study = optuna.create_study(
                directions=list(self.directions), sampler=self.sampler(seed)
            )
            self.study = study
            while len(measured) < total:
                trial = study.ask(codec.distributions)
                arch = codec.decode(trial.params)
                costs = problem.cost_model(arch)
                amounts = violations(problem.constraints, costs)
                set_constraints(trial, amounts)
                if any(v > 0 for v in amounts.values()):
                    study.tell(trial, self._placeholder(told, costs))
                    if arch not in rejected:
                        rejected.add(arch)
                        it = self.iteration(len(measured))
                        history.append(Evaluated(arch, {}, costs, math.nan, it, feasible=False))
                    misses += 1
                else:
                    if arch in measured:
                        misses += 1
                    else:
                        (metrics,) = problem.objective.measure([arch])
                        it = self.iteration(len(measured))
                        measured[arch] = Evaluated(arch, metrics, costs, iteration=it)
                        history.append(measured[arch])
                        misses = 0
                        if problem.progress:
                            problem.progress(len(measured), total)
                    if reference is None:
                        held.append((trial, arch))
                        if len(measured) >= ref_size:
                            reference = [e.metrics for e in list(measured.values())[:ref_size]]
                    else:
                        tell(trial, arch)
                if reference is not None and held:
                    for waiting, waiting_arch in held:
                        tell(waiting, waiting_arch)
                    held.clear()
                if misses >= self.max_tries:
                    fresh = _unseen_feasible(problem, rng, measured, self.max_tries * 20)
                    if fresh is None:
                        log.info(
                            "%s: no unseen feasible arch left after %d evaluations",
                            self.name,
                            len(measured),
                        )
                        break
                    study.enqueue_trial(codec.encode(fresh))
                    misses = 0
            if held:  # stopped early: the reference is what was measured
                reference = [e.metrics for e in measured.values()]
                for waiting, waiting_arch in held:
                    tell(waiting, waiting_arch)
        if not measured:
            raise infeasible_error(problem)
        result = self.finalize(self.name, problem, list(measured.values()), self.top_k)
        result.history = history
        return result

    def _value(
        self,
        problem: SearchProblem,
        record: Evaluated,
        reference: Sequence[dict[str, float]] | None,
    ) -> float:
        if self.metric is not None:
            if self.metric not in record.metrics:
                raise ValueError(
                    f"{self.name}: metric={self.metric!r} is not measured by the "
                    f"objective; choose one of {sorted(record.metrics)} or null"
                )
            value = float(record.metrics[self.metric])
        else:
            (value,) = problem.objective.stable_fitness(
                reference or [], [record.metrics], self.exclude_costs()
            )
            value = float(value)
        return value if math.isfinite(value) else -1e12

    def _placeholder(
        self, told: Mapping[Arch, list[float]], costs: Mapping[str, float]
    ) -> list[float]:
        """Values for a trial that is never measured: below the worst fitness told so far
        (Optuna's constraint handling ranks it below every feasible trial anyway)."""
        return self.values(min((v[0] for v in told.values()), default=0.0) - 1.0, costs)


def _unseen_feasible(
    problem: SearchProblem, rng: random.Random, seen: Mapping[Arch, Any], tries: int
) -> Arch | None:
    for i in range(tries):
        arch = problem.space.sample(rng)
        if i >= SHRINK_AFTER and not problem.feasible(arch):
            arch = problem.shrink_to_feasible(arch, rng) or arch
        if arch not in seen and problem.feasible(arch):
            return arch
    return None
