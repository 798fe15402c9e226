"""Search results: the evaluated archs of a search, their ranking, the chosen arch under
a latency cap, the Pareto front and its hypervolume, and how a result is saved."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.core.atomic import atomic_open, write_json
from hwnas.spaces.base import Arch


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

    def hypervolume_record(self) -> dict[str, object] | None:
        """The front's hypervolume with the reference point it used: the nadir of the
        search's own feasible records (their worst fitness and worst cost) moved out by
        :data:`HV_MARGIN` of each range (of the value itself when the range is empty),
        so the extreme points count too; ``normalised`` divides it by the box between
        that reference and the ideal point (best fitness, lowest cost): 1 would be one
        record best in both. None: nothing feasible."""
        key = self.cost_key
        feasible = [e for e in self.unique() if e.feasible and key in e.costs]
        if not feasible:
            return None
        fits = [float(e.fitness) for e in feasible]
        costs = [float(e.costs[key]) for e in feasible]
        ref = (min(fits) - _margin(fits), max(costs) + _margin(costs))
        box = (max(fits) - ref[0]) * (ref[1] - min(costs))
        value = self.hypervolume(key, ref)
        return {
            "value": value,
            "normalised": value / box if box > 0 else 1.0,
            "cost_key": key,
            "reference": {"fitness": ref[0], key: ref[1]},
            "front_size": len(self.pareto(key)),
        }

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
            "hypervolume": self.hypervolume_record(),
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_csv(folder / "history.csv")
        write_json(folder / "result.json", self.to_json())


HV_MARGIN = 0.1  # the hypervolume's reference lies this share of a range beyond the nadir


def _margin(values: Sequence[float]) -> float:
    spread = max(values) - min(values)
    return HV_MARGIN * (spread if spread > 0 else max(abs(max(values)), 1e-12))


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
