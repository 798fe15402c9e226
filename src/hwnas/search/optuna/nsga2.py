"""NSGA-II: maximise fitness and minimise a hardware cost together.

The ask-and-tell loop, budget, constraint and repeat rules are shared with TPE
(:mod:`hwnas.search.optuna.base`). Each objective is counted once: with
``metric=None`` the fitness told to Optuna leaves out the objective's own term for
``cost_key`` (e.g. the DE-Score's latency term when ``cost_key="latency_ms"``), since
that cost is the second objective; hard limits (constraints, a DE-Score latency
limit) still apply.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna

from hwnas.search.base import register_strategy

# GeneCodec, violations and quiet_optuna are re-exported for older imports.
from hwnas.search.optuna.base import OptunaStrategy
from hwnas.search.optuna.codec import sampler_constraints


@register_strategy("nsga2")
class NSGA2(OptunaStrategy):
    """NSGA-II (Optuna's ``NSGAIISampler``): maximise fitness and minimise
    ``cost_key`` (default ``latency_ms``) together; ``trials`` evaluations in
    generations of ``population_size``. With ``metric=None`` the fitness is scored
    against the first generation (``reference_size`` defaults to
    ``population_size``), and excludes the objective's ``cost_key`` term."""

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
        reference_size: int | None = None,
    ):
        super().__init__(trials, top_k, metric, max_tries, seed, reference_size)
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

    def default_reference_size(self) -> int:
        return self.population_size

    def exclude_costs(self) -> tuple[str, ...]:
        return (self.cost_key,)

    def values(self, fitness: float, costs: Mapping[str, float]) -> list[float]:
        if self.cost_key not in costs:
            raise ValueError(
                f"nsga2 minimises cost_key={self.cost_key!r} but the cost model "
                f"reports only {sorted(costs)}; set cost_key to one of them"
            )
        return [fitness, float(costs[self.cost_key])]

    def iteration(self, evaluated: int) -> int:
        return evaluated // self.population_size
