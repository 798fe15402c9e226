"""The one interface every search strategy implements, and what they return."""

from __future__ import annotations

import csv
import logging
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np

from hwnas.atomic import atomic_open, write_json
from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.search.settings import check_settings
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)


class Objective(ABC):
    """What a search maximises.

    ``measure`` returns raw metrics per arch (cached by the implementation);
    ``fitness`` turns a list of raw metrics into one higher-is-better number each.
    Fitness may be relative to the list (``relative``: population-normalised scores
    such as the DE-Score), so strategies always rank a set together.
    :meth:`stable_fitness` scores archs against a fixed reference instead, for samplers
    that remember every value told to them. ``cost_terms`` names the hardware costs
    (e.g. ``"latency_ms"``) the fitness already contains as a term.
    """

    name: str = "objective"
    relative: bool = True
    cost_terms: frozenset[str] = frozenset()

    @abstractmethod
    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]: ...

    @abstractmethod
    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray: ...

    def stable_fitness(
        self,
        reference: Sequence[dict[str, float]],
        metrics: Sequence[dict[str, float]],
        exclude_costs: Collection[str] = (),
    ) -> np.ndarray:
        """Fitness of each of ``metrics`` scored against the fixed ``reference``
        population, never among themselves: an arch's value depends only on the arch
        and the reference, so it stays valid however many archs follow.

        Default: an absolute objective (``relative = False``) ignores the reference; a
        relative one scores each arch within ``reference + [arch]``. ``exclude_costs``
        names costs the caller optimises separately, whose term must be left out of the
        fitness; an objective with such a term (``cost_terms``) overrides this method.
        """
        clash = sorted(set(exclude_costs) & set(self.cost_terms))
        if clash:
            raise NotImplementedError(
                f"objective {self.name!r} cannot leave out its {clash} term(s)"
            )
        if not self.relative:
            return np.asarray(self.fitness(metrics), dtype=float)
        reference = list(reference)
        return np.asarray([float(self.fitness([*reference, m])[-1]) for m in metrics], dtype=float)


# uniform samples missed in a row before misses are walked down to feasibility
SHRINK_AFTER = 20


@dataclass
class SearchProblem:
    space: SearchSpace
    objective: Objective
    cost_model: CostModel
    constraints: Constraints = field(default_factory=Constraints)
    seed: int = 0
    progress: Callable[[int, int], None] | None = None  # (done, total) callback

    def feasible(self, arch: Arch) -> bool:
        return self.constraints.feasible(self.cost_model(arch))

    def sample_feasible(self, rng: random.Random, max_tries: int = 2000) -> Arch:
        """A random feasible arch: uniform samples first; after ``SHRINK_AFTER`` misses
        in a row each miss is walked down to feasibility (:meth:`shrink_to_feasible`),
        so tight caps that few uniform samples meet are still searched."""
        for i in range(max_tries):
            arch = self.space.sample(rng)
            if self.feasible(arch):
                return arch
            if i >= SHRINK_AFTER:
                shrunk = self.shrink_to_feasible(arch, rng)
                if shrunk is not None:
                    return shrunk
        raise infeasible_error(self)

    def shrink_to_feasible(self, arch: Arch, rng: random.Random) -> Arch | None:
        """Walk ``arch`` down until it meets the constraints: each step moves one random
        gene (among those that can still shrink) to its next smaller choice. The walk
        ends on the feasible side of the constraint boundary, where the accuracy/cost
        front lies; None when even the smallest arch it reaches is infeasible."""
        space = self.space
        current = space.canonical(arch)
        while not self.feasible(current):
            movable = [
                g
                for g in space.genes
                if space.is_active(g, current) and g.ordered.index(current[g.name]) > 0
            ]
            if not movable:
                return None
            gene = rng.choice(movable)
            smaller = gene.ordered[gene.ordered.index(current[gene.name]) - 1]
            current = space.canonical(current.replace(**{gene.name: smaller}))
        return current


def infeasible_error(problem: SearchProblem) -> InfeasibleError:
    """The error for constraints no arch meets, naming the smallest achievable costs."""
    smallest = problem.cost_model(problem.space.min_arch())
    shown = {k: round(v, 4) for k, v in smallest.items()}
    return InfeasibleError(
        f"no architecture of space {problem.space.name!r} meets the constraints "
        f"({problem.constraints.describe()}); the smallest achievable is {shown} "
        f"(the space's smallest arch): relax the constraints"
    )


@dataclass
class Evaluated:
    arch: Arch
    metrics: dict[str, float]
    costs: dict[str, float]
    fitness: float = float("nan")
    iteration: int = 0
    feasible: bool = True

    def row(self) -> dict[str, object]:
        return {
            "arch": self.arch.to_str(),
            "iteration": self.iteration,
            "fitness": self.fitness,
            "feasible": self.feasible,
            **{f"metric.{k}": v for k, v in self.metrics.items()},
            **{f"cost.{k}": v for k, v in self.costs.items()},
        }


RANKS = ("algorithm", "history")
TIE_COSTS = ("latency_ms", "params_m")
# The cost a front is drawn against and ties go to: the first of these every record
# reports. Without a latency estimate (``hardware=analytic`` with
# ``correction_samples=0``) the cost model reports no ``latency_ms``: FLOPs stand in.
FRONT_COSTS = ("latency_ms", "flops_m")


def front_cost_key(records: Iterable[Evaluated]) -> str:
    """``latency_ms`` when every record with costs reports it, else ``flops_m`` (see
    :data:`FRONT_COSTS`); ``KeyError`` naming the reported costs when neither is."""
    costed = [e.costs for e in records if e.costs]
    for key in FRONT_COSTS:
        if all(key in c for c in costed):
            return key
    reported = sorted(set().union(*costed))
    raise KeyError(
        f"the cost model reports neither of {list(FRONT_COSTS)} for every arch (it "
        f"reports {reported}); pass one of those as the cost key"
    )


def tie_costs_for(records: Iterable[Evaluated]) -> tuple[str, ...]:
    """:data:`TIE_COSTS` with ``latency_ms`` replaced by :func:`front_cost_key` of
    ``records`` (``TIE_COSTS`` itself when latency is reported or neither key is)."""
    try:
        key = front_cost_key(records)
    except KeyError:
        return TIE_COSTS
    return (key, *(k for k in TIE_COSTS if k not in FRONT_COSTS))


@dataclass
class SearchResult:
    """What a strategy returns.

    ``history``: every record in evaluation order; its ``fitness`` is every measured
    arch re-ranked together (one common scale; NaN for infeasible suggestions that were
    never measured). :meth:`pareto`, :meth:`ranked`, :meth:`pool`, :meth:`choose` and
    :attr:`history_best` read it.

    ``best`` and ``top`` are the strategy's answer, formed as ``rank`` says:

    - ``"history"``: ``top`` is :meth:`ranked` cut at the strategy's ``top_k`` and
      ``best`` is :meth:`choose` (the best feasible record, equal fitness broken by
      lower latency -- FLOPs when the cost model gives no latency -- then fewer
      parameters; it lies on :meth:`pareto`).
    - ``"algorithm"``: the strategy's own final top-k (evolution, as DE-NAS states
      it), best first, as copies carrying the fitness the algorithm ranked them by;
      ``best`` is its first member (same tie-break). With a population-relative
      fitness it may differ from :attr:`history_best`.
    """

    strategy: str
    history: list[Evaluated]
    best: Evaluated
    top: list[Evaluated] = field(default_factory=list)
    rank: str = "history"
    # proxy -> candidates it failed on (zero-shot searches; they ranked last on its term)
    proxy_failures: dict[str, int] = field(default_factory=dict)

    @property
    def cost_key(self) -> str:
        """The cost the front is drawn against by default: ``latency_ms``, or
        ``flops_m`` when the cost model gave no latency (:func:`front_cost_key`)."""
        return front_cost_key(self.history)

    def pareto(self, cost_key: str | None = None, feasible_only: bool = True) -> list[Evaluated]:
        """Non-dominated records: higher fitness, lower ``cost_key`` (default
        :attr:`cost_key`); sorted by cost. Records equal in both keep the one with lower
        remaining tie costs (:func:`tie_costs_for`)."""
        key = self.cost_key if cost_key is None else cost_key
        records = [e for e in self.unique() if e.feasible or not feasible_only]
        lacking = next((e for e in records if key not in e.costs), None)
        if lacking is not None:
            raise KeyError(
                f"pareto: cost {key!r} is not reported for {lacking.arch.to_str()} (costs: "
                f"{sorted(lacking.costs)}); leave cost_key unset for latency_ms, or "
                f"flops_m when there is no latency estimate"
            )
        others = tuple(k for k in tie_costs_for(records) if k != key)
        return pareto_front(
            records,
            lambda e: e.fitness,
            lambda e: e.costs[key],
            tie=lambda e: _cost_tuple(e, others),
        )

    def unique(self) -> list[Evaluated]:
        seen: dict[Arch, Evaluated] = {}
        for e in self.history:
            seen.setdefault(e.arch, e)
        return list(seen.values())

    def ranked(self) -> list[Evaluated]:
        """Distinct feasible measured records by history fitness, best first; equal
        fitness broken by lower latency (FLOPs without latency), then fewer parameters
        (:func:`rank_records`)."""
        return rank_records(self.unique())

    def choose(self, tol: float = 0.0) -> Evaluated:
        """The best feasible record of the history, fitness within ``tol`` of the best
        counting as a tie, ties going to the lower cost (:func:`choose`); it lies on
        :meth:`pareto`."""
        return choose(self.unique(), tol)

    @property
    def history_best(self) -> Evaluated:
        """The whole-history answer, :meth:`choose` with exact ties (``best`` when
        ``rank == "history"``)."""
        return self.choose()

    def pool(self, size: int) -> list[Arch]:
        """The ``size`` best distinct feasible archs of the history, best first (same
        order as :meth:`ranked`, so ``pool(1) == [history_best.arch]``)."""
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        return [e.arch for e in self.ranked()[:size]]

    def hypervolume(self, cost_key: str | None, ref: tuple[float, float]) -> float:
        """Area dominated by the front w.r.t. ``ref = (worst fitness, worst cost)``
        (``cost_key=None``: :attr:`cost_key`)."""
        key = self.cost_key if cost_key is None else cost_key
        pts = [(e.fitness, e.costs[key]) for e in self.pareto(key)]
        return hypervolume_2d(pts, ref)

    def to_csv(self, path: str | Path) -> None:
        rows = [e.row() for e in self.history]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with atomic_open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    def to_json(self) -> dict:
        return {
            "strategy": self.strategy,
            "rank": self.rank,
            "best": self.best.row(),
            "top": [e.row() for e in self.top],
            "history_best": self.history_best.row(),
            "evaluations": len(self.history),
            "proxy_failures": self.proxy_failures,
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_csv(folder / "history.csv")
        write_json(folder / "result.json", self.to_json())


def _cost_tuple(e: Evaluated, keys: Sequence[str]) -> tuple[float, ...]:
    return tuple(float(e.costs.get(k, math.inf)) for k in keys)


def rank_records(
    records: Iterable[Evaluated], tie_costs: Sequence[str] | None = None
) -> list[Evaluated]:
    """Distinct feasible measured records (first record per arch; NaN fitness left
    out), by fitness high to low; equal fitness goes to lower ``tie_costs`` in turn
    (default :func:`tie_costs_for` the records: latency, or FLOPs without latency,
    then parameters; a missing cost counts as infinite), then to the earlier record."""
    seen: dict[Arch, Evaluated] = {}
    for e in records:
        seen.setdefault(e.arch, e)
    if tie_costs is None:
        tie_costs = tie_costs_for(seen.values())
    kept = [e for e in seen.values() if e.feasible and not math.isnan(e.fitness)]
    return sorted(kept, key=lambda e: (-e.fitness, _cost_tuple(e, tie_costs)))


def choose(
    records: Iterable[Evaluated], tol: float = 0.0, tie_costs: Sequence[str] | None = None
) -> Evaluated:
    """The best feasible record, never a dominated one.

    Candidates are the distinct feasible measured records whose fitness is within
    ``tol`` (>= 0; 0: exactly equal) of the best; among them the lowest
    ``tie_costs[0]`` wins (default :func:`tie_costs_for` the records: ``latency_ms``,
    or ``flops_m`` without latency), then the higher fitness, then the lower remaining
    ``tie_costs`` (``params_m``), then the earlier record. The choice is on
    :meth:`SearchResult.pareto` for ``tie_costs[0]`` (given a finite fitness).
    Raises ``ValueError`` when no record is feasible and measured.
    """
    if not tol >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    records = list(records)
    if tie_costs is None:
        tie_costs = tie_costs_for(records)
    ranked = rank_records(records, tie_costs)
    if not ranked:
        raise ValueError("no feasible measured record to choose from")
    floor = ranked[0].fitness - tol
    first, rest = tuple(tie_costs[:1]), tuple(tie_costs[1:])
    candidates = [e for e in ranked if e.fitness >= floor]
    # sorted() is stable: equal keys keep the ranked (earlier-record) order
    return sorted(
        candidates,
        key=lambda e: (_cost_tuple(e, first), -e.fitness, _cost_tuple(e, rest)),
    )[0]


def pareto_front(items, gain: Callable, cost: Callable, tie: Callable | None = None) -> list:
    """Items not dominated in (maximise ``gain``, minimise ``cost``), sorted by cost.
    Of items equal in both, the first by ``tie`` (then input order) is kept."""
    ordered = sorted(items, key=lambda e: (cost(e), -gain(e), tie(e) if tie else 0))
    front, best_gain = [], -np.inf
    for e in ordered:
        if gain(e) > best_gain:
            front.append(e)
            best_gain = gain(e)
    return front


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Hypervolume of (gain, cost) points (maximise gain, minimise cost) above
    ``ref``'s gain and below its cost."""
    ref_gain, ref_cost = ref
    pts = sorted((c, g) for g, c in points if g > ref_gain and c < ref_cost)
    area = 0.0
    front = pareto_front([(g, c) for c, g in pts], lambda p: p[0], lambda p: p[1])
    for i, (g, c) in enumerate(front):
        next_c = front[i + 1][1] if i + 1 < len(front) else ref_cost
        area += (g - ref_gain) * (next_c - c)
    return float(area)


class Strategy(ABC):
    """A search strategy: ``run(problem, budget)`` evaluates at most ``budget`` archs.

    Every strategy returns a :class:`SearchResult` whose history is re-ranked together
    (:meth:`finalize`); ``result.rank`` says whether ``best``/``top`` are the
    strategy's own final answer (``"algorithm"``) or that whole-history ranking
    (``"history"``).
    """

    name: str = "strategy"

    @abstractmethod
    def run(self, problem: SearchProblem, budget: int | None = None) -> SearchResult: ...

    @staticmethod
    def finalize(
        name: str,
        problem: SearchProblem,
        history: list[Evaluated],
        top_k: int,
        answer: Sequence[Evaluated] | None = None,
    ) -> SearchResult:
        """Re-rank every measured arch of ``history`` together (fitness may be
        population-relative; each record's ``fitness`` is overwritten) and form the
        result.

        Without ``answer``: ``rank="history"``, ``best`` = :func:`choose` over the
        history, ``top`` = its ``top_k`` best. With ``answer`` (the strategy's own final
        top-k, best first, carrying the fitness it ranked them by): ``rank="algorithm"``,
        ``top`` = copies of its feasible members (taken before the re-ranking),
        ``best`` = its first member after the same tie-break.
        """
        own = [dc_replace(e) for e in answer if e.feasible] if answer is not None else None
        # Infeasible suggestions some strategies record without measuring them have no
        # metrics: they keep a NaN fitness and are never returned.
        scored = [e for e in history if e.metrics]
        if not scored:
            raise infeasible_error(problem)
        fit = problem.objective.fitness([e.metrics for e in scored])
        for e in history:
            e.fitness = float("nan")
        for e, f in zip(scored, fit):
            e.fitness = float(f)
        ranked = rank_records(scored)
        if not ranked:
            raise infeasible_error(problem)
        if own:
            top = rank_records(own)
            return SearchResult(name, history, top[0], top, rank="algorithm")
        return SearchResult(name, history, choose(ranked), ranked[:top_k], rank="history")


_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return deco


def build_strategy(name: str, **kwargs) -> Strategy:
    """The registered strategy ``name`` built with ``kwargs``; an unknown setting or a
    value of the wrong type is a one-line ``ValueError`` (:func:`check_settings`)."""
    import hwnas.search  # noqa: F401  (registers built-ins)

    if name not in _STRATEGIES:
        raise KeyError(f"unknown search strategy {name!r}; choose from {sorted(_STRATEGIES)}")
    cls = _STRATEGIES[name]
    check_settings(cls, kwargs, f"search strategy {name!r}")
    return cls(**kwargs)


def list_strategies() -> list[str]:
    import hwnas.search  # noqa: F401

    return sorted(_STRATEGIES)
