"""Optuna-backed strategies, and NSGA-II: maximise fitness, minimise a hardware cost.

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
  is better, e.g. ``"accuracy"``); with ``metric=None``, the objective's fitness of
  the new arch ranked together with every arch measured so far (for the
  population-normalised DE-Score: its standing among the evaluated archs). The result
  re-ranks all evaluated archs together (:meth:`Strategy.finalize`).
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import optuna

from hwnas.hardware.constraints import Constraints
from hwnas.search.base import (
    Evaluated,
    SearchProblem,
    SearchResult,
    Strategy,
    infeasible_error,
    register_strategy,
)
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
    ):
        if trials < 1 or top_k < 1 or max_tries < 1:
            raise ValueError(f"{self.name} needs trials>=1, top_k>=1, max_tries>=1")
        self.trials, self.top_k, self.metric = trials, top_k, metric
        self.max_tries, self.seed = max_tries, seed

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    @abstractmethod
    def values(self, fitness: float, costs: Mapping[str, float]) -> list[float]: ...

    def iteration(self, evaluated: int) -> int:
        return evaluated

    def run(self, problem: SearchProblem, budget: int | None = None) -> SearchResult:
        seed = problem.seed if self.seed is None else self.seed
        total = min(budget or self.trials, self.trials)
        rng, codec = random.Random(seed), GeneCodec(problem.space)
        history: list[Evaluated] = []
        measured: list[Evaluated] = []
        told: dict[Arch, list[float]] = {}
        rejected: set[Arch] = set()
        misses = 0
        with quiet_optuna():
            study = optuna.create_study(
                directions=list(self.directions), sampler=self.sampler(seed)
            )
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
                        history.append(
                            Evaluated(
                                arch,
                                {},
                                costs,
                                math.nan,
                                self.iteration(len(measured)),
                                feasible=False,
                            )
                        )
                    misses += 1
                elif arch in told:
                    study.tell(trial, told[arch])
                    misses += 1
                else:
                    record = self._measure(problem, arch, costs, measured)
                    history.append(record)
                    told[arch] = self.values(self._fitness(problem, record, measured), costs)
                    study.tell(trial, told[arch])
                    misses = 0
                    if problem.progress:
                        problem.progress(len(measured), total)
                if misses >= self.max_tries:
                    fresh = _unseen_feasible(problem, rng, told, self.max_tries * 20)
                    if fresh is None:
                        log.info(
                            "%s: no unseen feasible arch left after %d evaluations",
                            self.name,
                            len(measured),
                        )
                        break
                    study.enqueue_trial(codec.encode(fresh))
                    misses = 0
        if not measured:
            raise infeasible_error(problem)
        result = self.finalize(self.name, problem, measured, self.top_k)
        result.history = history
        return result

    def _measure(
        self, problem: SearchProblem, arch: Arch, costs: dict[str, float], measured: list[Evaluated]
    ) -> Evaluated:
        (metrics,) = problem.objective.measure([arch])
        record = Evaluated(arch, metrics, costs, iteration=self.iteration(len(measured)))
        measured.append(record)
        return record

    def _fitness(
        self, problem: SearchProblem, record: Evaluated, measured: list[Evaluated]
    ) -> float:
        if self.metric is not None:
            if self.metric not in record.metrics:
                raise ValueError(
                    f"{self.name}: metric={self.metric!r} is not measured by the "
                    f"objective; choose one of {sorted(record.metrics)} or null"
                )
            value = float(record.metrics[self.metric])
        else:
            value = float(problem.objective.fitness([e.metrics for e in measured])[-1])
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
    for _ in range(tries):
        arch = problem.space.sample(rng)
        if arch not in seen and problem.feasible(arch):
            return arch
    return None


@register_strategy("nsga2")
class NSGA2(OptunaStrategy):
    """NSGA-II (Optuna's ``NSGAIISampler``): maximise fitness and minimise
    ``cost_key`` (default ``latency_ms``) together; ``trials`` evaluations in
    generations of ``population_size``."""

    directions = ("maximize", "minimize")

    def __init__(
        self,
        trials: int = 100,
        population_size: int = 20,
        top_k: int = 10,
        cost_key: str = "latency_ms",
        metric: str | None = None,
        mutation_prob: float | None = None,
        crossover_prob: float = 0.9,
        max_tries: int = 50,
        seed: int | None = None,
    ):
        super().__init__(trials, top_k, metric, max_tries, seed)
        if population_size < 2:
            raise ValueError(f"nsga2 needs population_size >= 2, got {population_size}")
        if mutation_prob is not None and not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in [0, 1] or null, got {mutation_prob}")
        if not 0.0 <= crossover_prob <= 1.0:
            raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob}")
        self.population_size, self.cost_key = population_size, cost_key
        self.mutation_prob, self.crossover_prob = mutation_prob, crossover_prob

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(
            population_size=self.population_size,
            mutation_prob=self.mutation_prob,
            crossover_prob=self.crossover_prob,
            seed=seed,
            **sampler_constraints(),
        )

    def values(self, fitness: float, costs: Mapping[str, float]) -> list[float]:
        if self.cost_key not in costs:
            raise ValueError(
                f"nsga2 minimises cost_key={self.cost_key!r} but the cost model "
                f"reports only {sorted(costs)}; set cost_key to one of them"
            )
        return [fitness, float(costs[self.cost_key])]

    def iteration(self, evaluated: int) -> int:
        return evaluated // self.population_size
