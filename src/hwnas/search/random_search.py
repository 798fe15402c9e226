"""Random search: feasible archs sampled uniformly, all scored together.

Its own answer is the whole-history ranking (``rank="history"``): the best feasible
sample, equal fitness broken by lower latency, then fewer parameters.
"""

from __future__ import annotations

import random

from hwnas.search.base import SearchProblem, Strategy, register_strategy
from hwnas.search.result import Evaluated, SearchResult


@register_strategy("random")
class RandomSearch(Strategy):
    def __init__(self, samples: int = 100, top_k: int = 10, seed: int | None = None):
        if samples < 1:
            raise ValueError(f"random search needs samples >= 1, got {samples}")
        self.samples, self.top_k, self.seed = samples, top_k, seed

    def run(self, problem: SearchProblem, budget: int | None = None) -> SearchResult:
        rng = random.Random(problem.seed if self.seed is None else self.seed)
        n = min(budget or self.samples, self.samples)
        archs = []
        for _ in range(n):
            archs.append(problem.sample_feasible(rng))
        history: list[Evaluated] = []
        for i, arch in enumerate(archs):
            (metrics,) = problem.objective.measure([arch])
            history.append(Evaluated(arch, metrics, problem.cost_model(arch), iteration=i))
            if problem.progress:
                problem.progress(i + 1, n)
        return self.finalize(self.name, problem, history, self.top_k)
