"""Bayesian optimisation with Optuna's Tree-structured Parzen Estimator.

Single objective: the fitness (see :mod:`hwnas.search.optuna.base` for how the value
told to Optuna is formed, and for the shared budget, constraint and repeat rules).
Hardware costs act through the constraints (Optuna's constraint handling: violating
trials rank below every feasible one) and, for the DE-Score, through its latency term.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna

from hwnas.search.base import register_strategy
from hwnas.search.optuna.base import OptunaStrategy
from hwnas.search.optuna.codec import sampler_constraints

MIN_REFERENCE = 10


@register_strategy("tpe")
class TPE(OptunaStrategy):
    """TPE over the space's genes (categorical), ``trials`` evaluations of which the
    first ``n_startup_trials`` are random; ``multivariate`` models genes jointly. With
    ``metric=None`` the fitness is scored against the first ``reference_size`` archs
    (default ``max(n_startup_trials, 10)``), which are all sampled at random."""

    directions = ("maximize",)

    def __init__(
        self,
        trials: int = 100,
        top_k: int = 10,
        metric: str | None = None,
        n_startup_trials: int = 10,
        multivariate: bool = True,
        max_tries: int = 50,
        seed: int | None = None,
        reference_size: int | None = None,
    ):
        super().__init__(trials, top_k, metric, max_tries, seed, reference_size)
        if n_startup_trials < 0:
            raise ValueError(f"tpe needs n_startup_trials >= 0, got {n_startup_trials}")
        self.n_startup_trials, self.multivariate = n_startup_trials, bool(multivariate)

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            n_startup_trials=self.n_startup_trials,
            multivariate=self.multivariate,
            # workers sharing a study: running trials count as bad, so they spread out
            constant_liar=self.shared is not None,
            seed=seed,
            **sampler_constraints(),
        )

    def default_reference_size(self) -> int:
        return max(self.n_startup_trials, MIN_REFERENCE)

    def values(self, fitness: float, costs: Mapping[str, float]) -> list[float]:
        return [fitness]
