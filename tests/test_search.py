"""Evolution (DE-NAS) and random search: thresholds, determinism, infeasibility."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.search import SearchProblem, build_strategy
from hwnas.search.base import Objective, hypervolume_2d, pareto_front
from hwnas.spaces.base import Arch
from tests.conftest import tiny_cnn


class ExactCost(CostModel):
    """Params/FLOPs from the supernet; latency as a deterministic function of FLOPs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def _compute(self, arch: Arch) -> dict[str, float]:
        cost = self.model.cost_of(arch)
        return {**cost, "latency_ms": 0.05 + 0.2 * cost["flops_m"]}


class BigIsBetter(Objective):
    """A cheap objective that prefers big nets, so thresholds actually bind."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        self.calls += len(archs)
        return [{"size": self.model.cost_of(a)["params_m"]} for a in archs]

    def fitness(self, metrics):
        return np.asarray([m["size"] for m in metrics])


def _problem(constraints: dict, seed=0):
    model = tiny_cnn()
    cost = ExactCost(model)
    return SearchProblem(model.space, BigIsBetter(model), cost,
                         Constraints.from_config(constraints), seed), cost


def _median(model_cost, space, key):
    import random

    rng = random.Random(5)
    return float(np.median([model_cost(space.sample(rng))[key] for _ in range(60)]))


@pytest.mark.parametrize("name,kw", [
    ("evolution", dict(iterations=4, population=8, top_k=4, mutations=6, crossovers=6)),
    ("random", dict(samples=40)),
])
def test_returned_archs_respect_params_and_latency_thresholds(name, kw):
    probe, cost = _problem({})
    ts = _median(cost, probe.space, "params_m")
    tl = _median(cost, probe.space, "latency_ms")
    problem, cost = _problem({"params_m": ts, "latency_ms": tl})
    result = build_strategy(name, **kw).run(problem)
    for e in [result.best, *result.top, *result.pareto("latency_ms")]:
        assert cost(e.arch)["params_m"] <= ts and cost(e.arch)["latency_ms"] <= tl
    # the thresholds bind: the unconstrained best would violate them
    assert cost(probe.space.max_arch())["params_m"] > ts
    if name == "evolution":  # children are filtered inside mutation and crossover
        assert all(e.feasible for e in result.history)


def test_evolution_improves_on_its_initial_population():
    problem, _ = _problem({})
    result = build_strategy("evolution", iterations=6, population=8, top_k=4, mutations=6,
                            crossovers=6).run(problem)
    first = max(e.metrics["size"] for e in result.history if e.iteration == 0)
    assert result.best.metrics["size"] >= first
    assert max(e.iteration for e in result.history) >= 1


def test_same_seed_same_search_and_other_seed_differs():
    runs = []
    for seed in (0, 0, 1):
        problem, _ = _problem({}, seed=seed)
        result = build_strategy("evolution", iterations=3, population=6, top_k=3, mutations=4,
                                crossovers=4).run(problem)
        runs.append([e.arch for e in result.history])
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_infeasible_constraints_name_the_smallest_achievable():
    problem, cost = _problem({"params_m": 1e-6})
    smallest = cost(problem.space.min_arch())["params_m"]
    with pytest.raises(InfeasibleError, match="smallest achievable") as err:
        build_strategy("evolution", iterations=1, population=4).run(problem)
    assert str(round(smallest, 4)) in str(err.value)


def test_budget_caps_evaluations():
    problem, _ = _problem({})
    result = build_strategy("evolution", iterations=10, population=8, mutations=8,
                            crossovers=8).run(problem, budget=20)
    assert len(result.history) <= 20


def test_pareto_front_and_hypervolume():
    pts = [(0.9, 5.0), (0.8, 3.0), (0.7, 4.0), (0.6, 1.0)]
    front = pareto_front(pts, gain=lambda p: p[0], cost=lambda p: p[1])
    assert front == [(0.6, 1.0), (0.8, 3.0), (0.9, 5.0)]
    # area above gain 0.5 and left of cost 6 dominated by the front
    assert hypervolume_2d(pts, (0.5, 6.0)) == pytest.approx(0.1 * 2 + 0.3 * 2 + 0.4 * 1)


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(KeyError, match="evolution"):
        build_strategy("annealing")
