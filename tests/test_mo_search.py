"""Every search strategy under hardware constraints, NSGA-II and TPE specifics."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.hardware.analytic import AnalyticCost
from hwnas.hardware.base import CompositeCost, CostModel
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.search.base import Objective, SearchProblem, build_strategy, list_strategies
from hwnas.search.optuna.codec import GeneCodec, violations
from hwnas.spaces.base import Arch, Gene, SearchSpace

TINY = dict(in_channels=1, image_size=16, stem_channels=8, stage_channels=(8, 16),
            stage_strides=(2, 2), max_depth=(2, 2), depth_choices=(1, 2))  # fmt: skip
BUDGET = 30
SMALL = {
    "evolution": {"iterations": 4, "population": 10, "mutations": 5, "crossovers": 5},
    "random": {"samples": BUDGET},
    "nsga2": {"trials": BUDGET, "population_size": 8},
    "tpe": {"trials": BUDGET, "n_startup_trials": 8},
}


class ParamsObjective(Objective):
    """Cheap deterministic objective: more parameters is better, 7x7 kernels cost a
    little (so the best arch is not simply the largest)."""

    name = "params"

    def __init__(self, cost: CostModel):
        self.cost, self.calls = cost, 0

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        self.calls += len(archs)
        out = []
        for a in archs:
            sevens = sum(1 for k, v in a.items() if k.startswith("k") and v == 7)
            out.append({"score": 1e3 * self.cost(a)["params_m"] - 0.3 * sevens})
        return out

    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray:
        return np.array([m["score"] for m in metrics], dtype=float)


class FlopsLatencyFake(CostModel):
    """Deterministic stand-in for a latency model: proportional to FLOPs."""

    def __init__(self, model: ElasticCNN):
        super().__init__()
        self.model = model

    def _compute(self, arch: Arch) -> dict[str, float]:
        return {"latency_ms": 0.1 + 2.0 * self.model.cost_of(arch)["flops_m"]}


@pytest.fixture(scope="module")
def model() -> ElasticCNN:
    return ElasticCNN(**TINY)


def _problem(model: ElasticCNN, constraints: Constraints | None = None) -> SearchProblem:
    cost = CompositeCost([AnalyticCost(model), FlopsLatencyFake(model)])
    if constraints is None:
        lo, hi = cost(model.space.min_arch()), cost(model.space.max_arch())
        constraints = Constraints(
            {
                "params_m": (None, 0.5 * (lo["params_m"] + hi["params_m"])),
                "latency_ms": (
                    None,
                    lo["latency_ms"] + 0.6 * (hi["latency_ms"] - lo["latency_ms"]),
                ),
            }
        )
    return SearchProblem(model.space, ParamsObjective(cost), cost, constraints, seed=0)


def test_every_strategy_is_covered() -> None:
    assert set(SMALL) == set(list_strategies())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_strategy_never_returns_an_infeasible_arch(model, name) -> None:
    problem = _problem(model)
    seen: list[tuple[int, int]] = []
    problem.progress = lambda done, total: seen.append((done, total))
    result = build_strategy(name, **SMALL[name]).run(problem, budget=BUDGET)
    assert problem.feasible(result.best.arch)
    assert not problem.feasible(problem.space.max_arch())  # the constraints bite
    for e in result.top + result.pareto():
        assert e.feasible and problem.feasible(e.arch)
    for e in result.history:  # the feasible flag tells the truth
        assert e.feasible == problem.feasible(e.arch)
    measured = [e for e in result.history if e.feasible]
    assert 0 < len(measured) <= BUDGET and problem.objective.calls <= BUDGET
    assert seen and seen[-1] == (BUDGET, BUDGET)
    assert result.best.fitness == max(e.fitness for e in measured)
    worst_cost = max(e.costs["latency_ms"] for e in measured) * 1.01
    ref = (min(e.fitness for e in measured) - 1.0, worst_cost)
    assert result.hypervolume("latency_ms", ref) > 0
    front = result.pareto("latency_ms")
    assert front and [e.costs["latency_ms"] for e in front] == sorted(
        e.costs["latency_ms"] for e in front
    )
    assert all(b.fitness > a.fitness for a, b in zip(front, front[1:], strict=False))


@pytest.mark.parametrize("name", ["nsga2", "tpe"])
def test_optuna_strategies_are_seeded_and_quiet(model, name, capsys, caplog) -> None:
    runs = [build_strategy(name, **SMALL[name], seed=3).run(_problem(model)) for _ in range(2)]
    assert [e.arch for e in runs[0].history] == [e.arch for e in runs[1].history]
    out = capsys.readouterr()
    assert "Trial" not in out.out + out.err
    assert not [r for r in caplog.records if "Trial" in r.getMessage()]


@pytest.mark.parametrize("name", ["nsga2", "tpe"])
def test_optuna_strategies_beat_most_random_feasible_archs(model, name) -> None:
    problem = _problem(model)
    result = build_strategy(name, **SMALL[name]).run(problem)
    rng = random.Random(11)
    pool = [problem.sample_feasible(rng) for _ in range(200)]
    scores = [m["score"] for m in problem.objective.measure(pool)]
    assert result.best.metrics["score"] >= np.percentile(scores, 75)


@pytest.mark.parametrize("name", ["nsga2", "tpe"])
def test_optuna_strategies_raise_when_nothing_is_feasible(model, name) -> None:
    problem = _problem(model, Constraints({"params_m": (None, 1e-9)}))
    with pytest.raises(InfeasibleError, match="relax the constraints"):
        build_strategy(name, **SMALL[name], max_tries=5).run(problem)


def test_nsga2_checks_its_cost_key_and_metric(model) -> None:
    with pytest.raises(ValueError, match="cost_key='energy_mj'"):
        build_strategy("nsga2", trials=5, cost_key="energy_mj").run(_problem(model))
    with pytest.raises(ValueError, match="metric='accuracy' is not measured"):
        build_strategy("tpe", trials=5, metric="accuracy").run(_problem(model))
    result = build_strategy("nsga2", trials=12, population_size=4, metric="score").run(
        _problem(model)
    )
    assert len([e for e in result.history if e.feasible]) == 12


def test_nsga2_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="population_size >= 2"):
        build_strategy("nsga2", population_size=1)
    with pytest.raises(ValueError, match="crossover_prob"):
        build_strategy("nsga2", crossover_prob=1.5)


def test_gene_codec_round_trips_non_scalar_choices() -> None:
    space = SearchSpace("toy", [Gene("op", (("conv", 3), ("pool", 2))), Gene("w", (8, 16))])
    codec = GeneCodec(space)
    assert codec.distributions["op"].choices == (0, 1)
    assert codec.distributions["w"].choices == (8, 16)
    for arch in space.enumerate():
        assert codec.decode(codec.encode(arch)) == arch


def test_violations_are_relative_and_signed() -> None:
    cons = Constraints({"params_m": (1.0, 2.0), "latency_ms": (None, 4.0)})
    amounts = violations(cons, {"params_m": 3.0, "latency_ms": 2.0})
    assert amounts == {"params_m.min": -2.0, "params_m.max": 0.5, "latency_ms.max": -0.5}
    assert violations(Constraints(), {"params_m": 1.0}) == {}


def test_optuna_strategies_share_one_base_and_one_codec() -> None:
    from hwnas.search import optuna as optuna_pkg
    from hwnas.search.optuna import base as optuna_base
    from hwnas.search.optuna import codec, nsga2, tpe

    assert issubclass(nsga2.NSGA2, optuna_base.OptunaStrategy)
    assert issubclass(tpe.TPE, optuna_base.OptunaStrategy)
    assert codec.GeneCodec is GeneCodec and codec.violations is violations
    assert optuna_base.quiet_optuna is codec.quiet_optuna
    assert optuna_pkg.__name__ == "hwnas.search.optuna"


# ------------------------------------------------------- stable values told to Optuna
class RankedScore(ParamsObjective):
    """Purely population-relative: each arch's rank among the archs scored together."""

    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray:
        from scipy.stats import rankdata

        return rankdata([m["score"] for m in metrics]) / len(metrics)


def _told(strategy, result, space: SearchSpace) -> dict[Arch, float]:
    """Arch -> the fitness told to Optuna for its feasible (measured) trials."""
    codec = GeneCodec(space)
    feasible = {e.arch for e in result.history if e.feasible}
    told: dict[Arch, float] = {}
    for trial in strategy.study.trials:
        arch = codec.decode(trial.params)
        if arch in feasible:
            assert told.setdefault(arch, trial.values[0]) == trial.values[0]  # repeats too
    assert set(told) == feasible
    return told


@pytest.mark.parametrize("name", ["nsga2", "tpe"])
def test_told_fitness_is_stable_against_a_frozen_reference(model, name) -> None:
    problem = _problem(model)
    problem.objective = RankedScore(problem.cost_model)
    strategy = build_strategy(name, **SMALL[name])
    result = strategy.run(problem, budget=BUDGET)
    told = _told(strategy, result, model.space)
    measured = [e for e in result.history if e.feasible]
    size = SMALL[name].get("population_size", max(SMALL[name].get("n_startup_trials", 0), 10))
    reference = [e.metrics for e in measured[:size]]
    for e in measured:  # recomputed now, after every later arch: the value told
        (now,) = problem.objective.stable_fitness(reference, [e.metrics])
        assert told[e.arch] == pytest.approx(now)
    # so told values are comparable across the run: they follow the true score
    for a in measured:
        for b in measured:
            if a.metrics["score"] > b.metrics["score"]:
                assert told[a.arch] >= told[b.arch]
    # and the same arch is told the same value however long the search runs
    longer = build_strategy(name, **{**SMALL[name], "trials": BUDGET + 10})
    again = longer.run(_problem_like(problem), budget=BUDGET + 10)
    told_longer = _told(longer, again, model.space)
    common = set(told) & set(told_longer)
    assert len(common) >= size
    assert all(told[a] == told_longer[a] for a in common)


def _problem_like(problem: SearchProblem) -> SearchProblem:
    return SearchProblem(problem.space, problem.objective, problem.cost_model,
                         problem.constraints, problem.seed)  # fmt: skip


class HashLatency(CostModel):
    """Latency unrelated to size (a hash of the arch), so a latency term shows."""

    def __init__(self, model: ElasticCNN):
        super().__init__()
        self.model = model

    def _compute(self, arch: Arch) -> dict[str, float]:
        import hashlib

        h = int(hashlib.md5(arch.to_str().encode()).hexdigest()[:8], 16) / 16**8
        return {**self.model.cost_of(arch), "latency_ms": 0.1 + h}


def _descore_problem(model: ElasticCNN, **descore_kw) -> SearchProblem:
    from hwnas.proxies.descore import DEScore
    from hwnas.search.objectives import ZeroShotObjective

    class FakeZeroShot(ZeroShotObjective):
        """The real DE-Score combination over cheap stand-in raws."""

        def measure(self, archs):
            return [{"saliency": self.cost_model(a)["params_m"],
                     "latency": self.cost_model(a)["latency_ms"]} for a in archs]  # fmt: skip

    cost = HashLatency(model)
    descore = DEScore({"saliency": 1.0, "latency": 1.0}, **descore_kw)
    objective = FakeZeroShot(None, descore, None, cost)  # type: ignore[arg-type]
    return SearchProblem(model.space, objective, cost, Constraints(), seed=0)


def _follows_saliency(told: dict[Arch, float], result) -> bool:
    measured = [e for e in result.history if e.feasible]
    return all(
        told[a.arch] >= told[b.arch]
        for a in measured
        for b in measured
        if a.metrics["saliency"] > b.metrics["saliency"]
    )


def test_nsga2_counts_latency_once(model) -> None:
    kw = {"trials": BUDGET, "population_size": 8}
    problem = _descore_problem(model)
    assert problem.objective.cost_terms == {"latency_ms"}
    nsga2 = build_strategy("nsga2", **kw)
    result = nsga2.run(problem)
    told = _told(nsga2, result, model.space)
    # fitness told leaves the latency term out: it follows saliency alone ...
    assert _follows_saliency(told, result)
    for trial in nsga2.study.trials:  # ... while latency is the second objective
        arch = GeneCodec(model.space).decode(trial.params)
        assert trial.values[1] == problem.cost_model(arch)["latency_ms"]
    # whereas TPE (single objective) and NSGA-II on params keep the latency term
    for name, extra in (
        ("tpe", {"n_startup_trials": 8}),
        ("nsga2", {"cost_key": "params_m", "population_size": 8}),
    ):
        other = build_strategy(name, trials=BUDGET, **extra)
        again = other.run(_descore_problem(model))
        assert not _follows_saliency(_told(other, again, model.space), again)


def test_nsga2_keeps_a_hard_latency_limit(model) -> None:
    limit = 0.6
    nsga2 = build_strategy("nsga2", trials=BUDGET, population_size=8)
    result = nsga2.run(_descore_problem(model, latency_limit_ms=limit))
    told = _told(nsga2, result, model.space)
    slow = [e for e in result.history if e.feasible and e.costs["latency_ms"] > limit]
    fast = [e for e in result.history if e.feasible and e.costs["latency_ms"] <= limit]
    assert slow and fast
    assert all(told[e.arch] == -1e12 for e in slow)
    assert all(told[e.arch] >= 0.0 for e in fast)
