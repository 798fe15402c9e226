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
  processes share through an Optuna storage (:mod:`hwnas.search.optuna.distributed`).
"""

from __future__ import annotations

import logging
import math
import random
from abc import abstractmethod
from collections.abc import Mapping, Sequence

import optuna

from hwnas.search.base import SearchProblem, Strategy, infeasible_error
from hwnas.search.optuna.codec import (
    GeneCodec,
    _unseen_feasible,
    quiet_optuna,
    set_constraints,
    violations,
)
from hwnas.search.optuna.distributed import SharedStudy, run_shared
from hwnas.search.result import Evaluated, SearchResult
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)

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
        # set to join a study shared by many workers (hwnas.search.optuna.distributed)
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
