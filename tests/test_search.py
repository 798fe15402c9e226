"""Evolution (DE-NAS) and random search: thresholds, determinism, infeasibility."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.search.base import Objective, SearchProblem, build_strategy
from hwnas.search.result import hypervolume_2d, pareto_front
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
    return SearchProblem(
        model.space, BigIsBetter(model), cost, Constraints.from_config(constraints), seed
    ), cost


def _median(model_cost, space, key):
    import random

    rng = random.Random(5)
    return float(np.median([model_cost(space.sample(rng))[key] for _ in range(60)]))


@pytest.mark.parametrize(
    "name,kw",
    [
        ("evolution", dict(iterations=4, population=8, top_k=4, mutations=6, crossovers=6)),
        ("random", dict(samples=40)),
    ],
)
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


@pytest.mark.parametrize(
    "name,kw",
    [
        ("evolution", dict(iterations=1, population=4, top_k=2, max_tries=3)),
        ("nsga2", dict(trials=6, population_size=4, max_tries=2)),
    ],
)
def test_a_cap_few_uniform_samples_meet_is_still_searched(name, kw):
    import random

    probe, cost = _problem({})
    every = sorted(cost(a)["latency_ms"] for a in probe.space.enumerate())
    cap = every[3]  # 4 of the 1764 archs: about 1 uniform sample in 440 is feasible
    problem, cost = _problem({"latency_ms": cap})
    result = build_strategy(name, **kw).run(problem)
    measured = [e for e in result.history if e.metrics]
    assert len({e.arch for e in measured}) >= 2  # found by walks, not by luck
    assert all(cost(e.arch)["latency_ms"] <= cap for e in measured)
    # a walk down from the largest arch ends feasible
    shrunk = problem.shrink_to_feasible(probe.space.max_arch(), random.Random(1))
    assert shrunk is not None and cost(shrunk)["latency_ms"] <= cap
    assert problem.shrink_to_feasible(probe.space.min_arch(), random.Random(1)) == (
        probe.space.min_arch()
    )


def test_evolution_improves_on_its_initial_population():
    problem, _ = _problem({})
    result = build_strategy(
        "evolution", iterations=6, population=8, top_k=4, mutations=6, crossovers=6
    ).run(problem)
    first = max(e.metrics["size"] for e in result.history if e.iteration == 0)
    assert result.best.metrics["size"] >= first
    assert max(e.iteration for e in result.history) >= 1


def test_same_seed_same_search_and_other_seed_differs():
    runs = []
    for seed in (0, 0, 1):
        problem, _ = _problem({}, seed=seed)
        result = build_strategy(
            "evolution", iterations=3, population=6, top_k=3, mutations=4, crossovers=4
        ).run(problem)
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
    result = build_strategy(
        "evolution", iterations=10, population=8, mutations=8, crossovers=8
    ).run(problem, budget=20)
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


# --------------------------------------------------------------- algorithm answer
class RankSum(Objective):
    """Population-relative fitness whose order changes with the population: the sum
    of the ranks of two unrelated raw values (like a two-term DE-Score)."""

    def __init__(self, model):
        self.model = model

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        import hashlib

        return [
            {
                "size": self.model.cost_of(a)["params_m"],
                "noise": int(hashlib.md5(a.to_str().encode()).hexdigest()[:8], 16),
            }
            for a in archs
        ]

    def fitness(self, metrics):
        from scipy.stats import rankdata

        return rankdata([m["size"] for m in metrics]) + rankdata([m["noise"] for m in metrics])


EVO = dict(iterations=4, population=8, top_k=4, mutations=6, crossovers=6)


def test_evolution_returns_the_best_of_its_own_final_top_k(monkeypatch):
    from hwnas.search.evolution import Evolution

    model = tiny_cnn()
    problem = SearchProblem(model.space, RankSum(model), ExactCost(model), Constraints(), 0)
    tops: list[list[tuple[Arch, float]]] = []
    update = Evolution._update_top

    def spy(self, problem, top, population):
        out = update(self, problem, top, population)
        tops.append([(e.arch, e.fitness) for e in out])
        return out

    monkeypatch.setattr(Evolution, "_update_top", spy)
    result = build_strategy("evolution", **EVO).run(problem)
    final = tops[-1]
    assert result.rank == "algorithm"
    assert [(e.arch, e.fitness) for e in result.top] == final  # incl. the last population
    assert result.best.arch == final[0][0] and result.best.fitness == max(f for _, f in final)
    # the whole-history re-ranking stays available, and here it is a different answer
    history = result.ranked()[: EVO["top_k"]]
    assert result.history_best is history[0]
    assert [e.arch for e in history] != [a for a, _ in final]
    assert result.to_json()["rank"] == "algorithm"
    assert result.to_json()["history_best"]["arch"] == result.history_best.arch.to_str()


def test_evolution_rank_history_returns_the_whole_history_ranking():
    model = tiny_cnn()
    problem = SearchProblem(model.space, RankSum(model), ExactCost(model), Constraints(), 0)
    result = build_strategy("evolution", **EVO, rank="history").run(problem)
    assert result.rank == "history"
    assert result.best is result.history_best
    assert result.top == result.ranked()[: EVO["top_k"]]
    with pytest.raises(ValueError, match="rank='best'"):
        build_strategy("evolution", rank="best")


# ------------------------------------------------------------ tie-break and pool
class Given(Objective):
    """The metric ``acc`` as it is (absolute)."""

    relative = False

    def measure(self, archs):
        raise AssertionError("a hand-made history is never measured")

    def fitness(self, metrics):
        return np.asarray([m["acc"] for m in metrics], dtype=float)


def _record(i: int, acc: float, ms: float, params: float, feasible: bool = True):
    from hwnas.search.result import Evaluated

    return Evaluated(Arch({"i": i}), {"acc": acc}, {"latency_ms": ms, "params_m": params},
                     feasible=feasible)  # fmt: skip


def _hand_made():
    from hwnas.spaces.base import Gene, SearchSpace

    space = SearchSpace("ids", [Gene("i", tuple(range(10)))])
    history = [
        _record(0, 1.0, 1.03, 2.0),  # the first record with the best accuracy ...
        _record(1, 1.0, 0.42, 3.0),  # ... ties with a faster one ...
        _record(2, 1.0, 0.42, 1.0),  # ... which ties in latency with a smaller one
        _record(3, 0.9, 0.20, 1.0),
        _record(4, 1.0, 0.10, 1.0, feasible=False),  # never chosen
        _record(5, 0.995, 0.30, 1.0),
        _record(1, 0.0, 0.42, 3.0),  # a repeat: the first record of an arch counts
    ]
    problem = SearchProblem(space, Given(), None, Constraints(), 0)  # type: ignore[arg-type]
    from hwnas.search.base import Strategy

    return Strategy.finalize("hand", problem, history, top_k=3)


def test_best_breaks_accuracy_ties_by_latency_then_params_and_is_on_the_front():
    from hwnas.search.result import choose

    result = _hand_made()
    assert result.best.arch == Arch({"i": 2})
    front = result.pareto()
    assert result.best in front
    best = (result.best.fitness, -result.best.costs["latency_ms"])
    for e in result.unique():  # nothing feasible dominates the choice
        mine = (e.fitness, -e.costs["latency_ms"])
        assert not (e.feasible and mine >= best and mine != best and min(
            a - b for a, b in zip(mine, best)) >= 0)  # fmt: skip
    assert [e.arch["i"] for e in result.top] == [2, 1, 0]
    # a tolerance lets a slightly less accurate, faster arch win; still on the front
    near = result.choose(tol=0.01)
    assert near.arch == Arch({"i": 5}) and near in front
    assert result.choose(tol=0.2).arch == Arch({"i": 3})
    assert choose(result.history, tie_costs=("params_m", "latency_ms")).arch == Arch({"i": 2})
    with pytest.raises(ValueError, match="tol"):
        result.choose(tol=-1.0)


def ranked_pool(result, size: int) -> list[Arch]:
    """The pool as training/callbacks.py chose it before ``SearchResult.pool``."""
    feasible = [e for e in result.unique() if e.feasible]
    feasible.sort(key=lambda e: -e.fitness)
    return [e.arch for e in feasible[:size]]


def test_pool_is_the_old_ranked_pool_with_the_tie_break():
    result = _hand_made()
    assert result.pool(1) == [result.best.arch]
    assert result.pool(10) == [Arch({"i": i}) for i in (2, 1, 0, 5, 3)]
    assert set(result.pool(10)) == set(ranked_pool(result, 10))
    assert ranked_pool(result, 1) == [Arch({"i": 0})]  # the old pool: first of the ties
    model = tiny_cnn()  # without ties the two agree exactly
    problem = SearchProblem(model.space, BigIsBetter(model), ExactCost(model), Constraints(), 0)
    searched = build_strategy("random", samples=20).run(problem)
    sizes = [e.fitness for e in searched.ranked()]
    assert len(set(sizes)) == len(sizes)
    assert searched.pool(6) == ranked_pool(searched, 6)
    with pytest.raises(ValueError, match="pool size"):
        searched.pool(0)


# -------------------------------------------------------- no latency estimate
class FlopsOnlyCost(CostModel):
    """Params and FLOPs only, as ``hardware=analytic`` with ``correction_samples=0``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def _compute(self, arch: Arch) -> dict[str, float]:
        return dict(self.model.cost_of(arch))


@pytest.mark.parametrize("name,kw", [("evolution", EVO), ("random", dict(samples=20))])
def test_search_without_latency_draws_its_front_on_flops(name, kw, tmp_path, monkeypatch):
    import matplotlib.axes

    from hwnas.app.report import plot_pareto, save_pareto

    model = tiny_cnn()
    cost = FlopsOnlyCost(model)
    problem = SearchProblem(model.space, BigIsBetter(model), cost, Constraints(), 0)
    result = build_strategy(name, **kw).run(problem)
    assert all("latency_ms" not in e.costs for e in result.history)
    assert result.cost_key == "flops_m"
    front = result.pareto()
    assert front and front == result.pareto("flops_m")
    flops = [e.costs["flops_m"] for e in front]
    assert flops == sorted(flops)
    for e in result.unique():  # nothing on the front is dominated in (fitness, FLOPs)
        for f in front:
            assert not (e.fitness > f.fitness and e.costs["flops_m"] <= f.costs["flops_m"])
    assert result.history_best in front and result.hypervolume(None, (0.0, 1e9)) > 0
    with pytest.raises(KeyError, match="latency_ms.{0,3} is not reported for"):
        result.pareto("latency_ms")
    # the CSV and the plot say which cost the front was drawn against
    save_pareto(result, tmp_path / "p.csv", gain="size")
    header, *rows = (tmp_path / "p.csv").read_text().splitlines()
    assert header == "arch,size,params_m,flops_m,front_cost" and len(rows) == len(front)
    assert all(r.endswith(",flops_m (no latency estimate)") for r in rows)
    labels: list[str] = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda ax, s, *a, **k: labels.append(s))
    plot_pareto(result, tmp_path / "p.png", Constraints(), "size", chosen=result.best)
    assert labels == ["MFLOPs (no latency estimate)"] and (tmp_path / "p.png").stat().st_size


def test_ties_without_latency_go_to_fewer_flops_and_stay_on_the_front():
    from hwnas.search.base import Strategy
    from hwnas.search.result import Evaluated, choose, tie_costs_for
    from hwnas.spaces.base import Gene, SearchSpace

    def rec(i, acc, flops, params):
        return Evaluated(Arch({"i": i}), {"acc": acc}, {"flops_m": flops, "params_m": params})

    history = [rec(0, 1.0, 9.0, 1.0), rec(1, 1.0, 4.0, 3.0), rec(2, 1.0, 4.0, 2.0),
               rec(3, 0.5, 1.0, 1.0)]  # fmt: skip
    assert tie_costs_for(history) == ("flops_m", "params_m")
    space = SearchSpace("ids", [Gene("i", tuple(range(4)))])
    problem = SearchProblem(space, Given(), None, Constraints(), 0)  # type: ignore[arg-type]
    result = Strategy.finalize("hand", problem, history, top_k=4)
    assert result.best.arch == Arch({"i": 2}) == choose(history).arch
    assert [e.arch["i"] for e in result.ranked()] == [2, 1, 0, 3]
    assert [e.arch["i"] for e in result.pareto()] == [3, 2]
    # with latency reported, ties still go to latency first
    assert tie_costs_for([_record(0, 1.0, 1.0, 1.0)]) == ("latency_ms", "params_m")


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("name,kwargs,match", [
    ("evolution", {"population": "abc"}, "population='abc': expected an integer"),
    ("evolution", {"population": True}, "population=True: expected an integer"),
    ("evolution", {"population": 8.0}, "population=8.0: expected an integer"),
    ("evolution", {"mutation_prob": "0.3"}, "mutation_prob='0.3': expected a number"),
    ("evolution", {"seed": "x"}, "seed='x': expected an integer or null"),
    ("evolution", {"populaton": 8}, r"unknown setting populaton=8; valid settings: \["),
    ("random", {"iterations": 3}, "unknown setting iterations=3"),
    ("nsga2", {"mutation_prob": False}, "mutation_prob=False: expected a number or null"),
    ("nsga2", {"cost_key": 3}, "cost_key=3: expected a string"),
    ("tpe", {"multivariate": "yes"}, "multivariate='yes': expected true or false"),
    ("tpe", {"metric": 1}, "metric=1: expected a string or null"),
])  # fmt: skip
def test_build_strategy_rejects_unknown_keys_and_wrong_types(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        build_strategy(name, **kwargs)
    assert "\n" not in str(err.value) and name in str(err.value)


def test_build_strategy_accepts_well_typed_settings():
    build_strategy("evolution", population=8, mutation_prob=1, seed=None, rank="history")
    build_strategy("nsga2", mutation_prob=None, crossover_prob=1, metric=None)
    build_strategy("tpe", multivariate=False, metric="accuracy", reference_size=5)


def test_random_search_rejects_unknown_keys():
    from hwnas.search.random_search import RandomSearch

    with pytest.raises(TypeError, match="iterations"):
        RandomSearch(samples=5, iterations=3)  # type: ignore[call-arg]


def test_hypervolume_record_names_its_reference_and_is_normalised():
    from hwnas.search.result import Evaluated, SearchResult

    def ev(i, fit, ms, feasible=True):
        return Evaluated(Arch({"i": i}), {"acc": fit}, {"latency_ms": ms}, fitness=fit,
                         feasible=feasible)  # fmt: skip

    history = [ev(0, 0.5, 4.0), ev(1, 0.7, 6.0), ev(2, 0.9, 10.0), ev(3, 0.6, 9.0),
               ev(4, 0.99, 1.0, feasible=False)]  # fmt: skip
    r = SearchResult("random", history, history[2]).hypervolume_record()
    assert r["cost_key"] == "latency_ms" and r["front_size"] == 3
    # the nadir of the feasible records (not the infeasible one) moved out by 10 % of
    # each range: fitness 0.5 - 0.04, latency 10 + 0.6
    assert r["reference"]["fitness"] == pytest.approx(0.46) and r["reference"]["latency_ms"] == (
        pytest.approx(10.6))
    # front (0.5, 4), (0.7, 6), (0.9, 10): 0.04 * 2 + 0.24 * 4 + 0.44 * 0.6; box 0.44 * 6.6
    assert r["value"] == pytest.approx(0.08 + 0.96 + 0.264, rel=1e-9)
    assert r["normalised"] == pytest.approx(1.304 / (0.44 * 6.6), rel=1e-9)
    lone = SearchResult("random", history[:1], history[0]).hypervolume_record()
    assert lone["normalised"] == pytest.approx(1.0) and lone["front_size"] == 1
    assert SearchResult("random", history[4:], history[4]).hypervolume_record() is None
