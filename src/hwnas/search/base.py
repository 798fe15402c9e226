"""The one interface every search strategy implements, and what they return."""

from __future__ import annotations

import csv
import json
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)


class Objective(ABC):
    """What a search maximises.

    ``measure`` returns raw metrics per arch (cached by the implementation);
    ``fitness`` turns a list of raw metrics into one higher-is-better number each.
    Fitness may be relative to the list (population-normalised scores such as the
    DE-Score), so strategies always rank a set together.
    """

    name: str = "objective"

    @abstractmethod
    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]: ...

    @abstractmethod
    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray: ...


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
        for _ in range(max_tries):
            arch = self.space.sample(rng)
            if self.feasible(arch):
                return arch
        raise infeasible_error(self)


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


@dataclass
class SearchResult:
    strategy: str
    history: list[Evaluated]
    best: Evaluated
    top: list[Evaluated] = field(default_factory=list)

    def pareto(self, cost_key: str = "latency_ms", feasible_only: bool = True) -> list[Evaluated]:
        """Non-dominated records: higher fitness, lower ``cost_key``; sorted by cost."""
        return pareto_front(
            [e for e in self.unique() if e.feasible or not feasible_only],
            lambda e: e.fitness,
            lambda e: e.costs[cost_key],
        )

    def unique(self) -> list[Evaluated]:
        seen: dict[Arch, Evaluated] = {}
        for e in self.history:
            seen.setdefault(e.arch, e)
        return list(seen.values())

    def hypervolume(self, cost_key: str, ref: tuple[float, float]) -> float:
        """Area dominated by the front w.r.t. ``ref = (worst fitness, worst cost)``."""
        pts = [(e.fitness, e.costs[cost_key]) for e in self.pareto(cost_key)]
        return hypervolume_2d(pts, ref)

    def to_csv(self, path: str | Path) -> None:
        rows = [e.row() for e in self.history]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    def to_json(self) -> dict:
        return {
            "strategy": self.strategy,
            "best": self.best.row(),
            "top": [e.row() for e in self.top],
            "evaluations": len(self.history),
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_csv(folder / "history.csv")
        (folder / "result.json").write_text(json.dumps(self.to_json(), indent=2))


def pareto_front(items, gain: Callable, cost: Callable) -> list:
    """Items not dominated in (maximise ``gain``, minimise ``cost``), sorted by cost."""
    ordered = sorted(items, key=lambda e: (cost(e), -gain(e)))
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
    """A search strategy: ``run(problem, budget)`` evaluates at most ``budget`` archs."""

    name: str = "strategy"

    @abstractmethod
    def run(self, problem: SearchProblem, budget: int | None = None) -> SearchResult: ...

    @staticmethod
    def finalize(
        name: str, problem: SearchProblem, history: list[Evaluated], top_k: int
    ) -> SearchResult:
        """Re-rank every evaluated arch together (fitness may be population-relative),
        and return the best feasible one."""
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
        uniq: dict[Arch, Evaluated] = {}
        for e in scored:
            if e.feasible:
                uniq.setdefault(e.arch, e)
        if not uniq:
            raise infeasible_error(problem)
        ranked = sorted(uniq.values(), key=lambda e: -e.fitness)
        return SearchResult(name, history, ranked[0], ranked[:top_k])


_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return deco


def build_strategy(name: str, **kwargs) -> Strategy:
    import hwnas.search  # noqa: F401  (registers built-ins)

    if name not in _STRATEGIES:
        raise KeyError(f"unknown search strategy {name!r}; choose from {sorted(_STRATEGIES)}")
    return _STRATEGIES[name](**kwargs)


def list_strategies() -> list[str]:
    import hwnas.search  # noqa: F401

    return sorted(_STRATEGIES)
