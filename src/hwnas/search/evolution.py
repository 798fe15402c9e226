"""DE-NAS's hardware-aware evolutionary search.

Inputs: N iterations, K initial archs, space S, Nm mutations, Nc crossovers, mutation
probability p, thresholds (here: any :class:`Constraints`, e.g. params Ts, latency Tl).
P0 = K feasible random archs; every iteration scores the population, updates the
top-k, then makes Nm mutants (each gene resampled with probability p) and Nc uniform
crossovers of top-k members, keeping only children that meet the thresholds. The best
of the top-k is returned.

``rank="algorithm"`` (default) returns exactly that: ``result.top`` is the final top-k
(every population, the last one included, merged into it, ranked as the iterations
ranked it) and ``result.best`` its first member; equal fitness goes to lower latency,
then fewer parameters. ``rank="history"`` returns the whole history re-ranked together
instead (``result.history_best``, always available). With a population-relative
fitness (DE-Score) the two may differ; with an absolute one (accuracy) they agree.
"""

from __future__ import annotations

import logging
import random

from hwnas.search.base import (
    SHRINK_AFTER,
    SearchProblem,
    Strategy,
    infeasible_error,
    register_strategy,
)
from hwnas.search.result import RANKS, Evaluated, SearchResult, rank_records
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)


@register_strategy("evolution")
class Evolution(Strategy):
    def __init__(
        self,
        iterations: int = 10,
        population: int = 20,
        top_k: int = 10,
        mutations: int = 10,
        crossovers: int = 10,
        mutation_prob: float = 0.3,
        max_tries: int = 200,
        seed: int | None = None,
        rank: str = "algorithm",
    ):
        if iterations < 0 or population < 1 or top_k < 1 or mutations < 0 or crossovers < 0:
            raise ValueError(
                "evolution needs iterations>=0, population>=1, top_k>=1, "
                "mutations>=0, crossovers>=0"
            )
        if not 0.0 < mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in (0, 1], got {mutation_prob}")
        self.iterations, self.population, self.top_k = iterations, population, top_k
        self.mutations, self.crossovers, self.mutation_prob = mutations, crossovers, mutation_prob
        if rank not in RANKS:
            raise ValueError(f"evolution rank={rank!r}: choose one of {list(RANKS)}")
        self.max_tries, self.seed, self.rank = max_tries, seed, rank

    def budget_needed(self) -> int:
        return self.population + self.iterations * (self.mutations + self.crossovers)

    def run(self, problem: SearchProblem, budget: int | None = None) -> SearchResult:
        rng = random.Random(problem.seed if self.seed is None else self.seed)
        total = min(budget or self.budget_needed(), self.budget_needed())
        history: list[Evaluated] = []
        seen: set[Arch] = set()

        def evaluate(archs: list[Arch], iteration: int) -> list[Evaluated]:
            archs = archs[: max(0, total - len(history))]
            metrics = problem.objective.measure(archs)
            out = [
                Evaluated(a, m, problem.cost_model(a), iteration=iteration)
                for a, m in zip(archs, metrics)
            ]
            history.extend(out)
            seen.update(archs)
            if problem.progress:
                problem.progress(len(history), total)
            return out

        population = evaluate(self._initial(problem, rng), 0)
        top = self._update_top(problem, [], population)
        for it in range(1, self.iterations + 1):
            if len(history) >= total:
                break
            children = [
                self._child(problem, rng, top, seen, mutate=True) for _ in range(self.mutations)
            ]
            children += [
                self._child(problem, rng, top, seen, mutate=False) for _ in range(self.crossovers)
            ]
            population = evaluate(children, it)
            top = self._update_top(problem, top, population)
            best = top[0]
            log.debug("iteration %d: best fitness %.4f (%s)", it, best.fitness, best.arch.to_str())
        answer = top if self.rank == "algorithm" else None
        return self.finalize(self.name, problem, history, self.top_k, answer)

    def _initial(self, problem: SearchProblem, rng: random.Random) -> list[Arch]:
        archs: list[Arch] = []
        misses = 0
        for _ in range(self.population * self.max_tries):
            if len(archs) == self.population:
                break
            arch = problem.space.sample(rng)
            if misses >= SHRINK_AFTER and not problem.feasible(arch):
                arch = problem.shrink_to_feasible(arch, rng) or arch  # a tight cap
            if arch not in archs and problem.feasible(arch):
                archs.append(arch)
                misses = 0
            else:
                misses += 1
        if not archs:
            raise infeasible_error(problem)
        return archs

    def _update_top(
        self, problem: SearchProblem, top: list[Evaluated], population: list[Evaluated]
    ) -> list[Evaluated]:
        pool: dict[Arch, Evaluated] = {e.arch: e for e in top}
        for e in population:
            pool.setdefault(e.arch, e)
        members = list(pool.values())
        # Fitness may be population-relative: rank the candidates together.
        for e, f in zip(members, problem.objective.fitness([e.metrics for e in members])):
            e.fitness = float(f)
        return rank_records(members)[: self.top_k]

    def _child(
        self,
        problem: SearchProblem,
        rng: random.Random,
        top: list[Evaluated],
        seen: set[Arch],
        mutate: bool,
    ) -> Arch:
        fallback = None
        for _ in range(self.max_tries):
            if mutate or len(top) < 2:
                child = problem.space.mutate(rng.choice(top).arch, rng, self.mutation_prob)
            else:
                a, b = rng.sample(top, 2)
                child = problem.space.crossover(a.arch, b.arch, rng)
            if not problem.feasible(child):
                continue
            if child not in seen:
                return child
            fallback = fallback or child
        # Thresholds hold for every child; only novelty is given up.
        return fallback if fallback is not None else rng.choice(top).arch
