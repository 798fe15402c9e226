"""The one interface every search strategy implements, and what they return."""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace

import numpy as np

from hwnas.core.registry import Registry
from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.search.result import Evaluated, SearchResult, choose, rank_records
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


STRATEGIES: Registry[type[Strategy]] = Registry("search strategy", builtins=("hwnas.search",))


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        STRATEGIES.register(name, cls)
        return cls

    return deco


def build_strategy(name: str, **kwargs) -> Strategy:
    """The registered strategy ``name`` built with ``kwargs``; an unknown setting or a
    value of the wrong type is a one-line ``ValueError`` (:func:`check_settings`)."""
    if name not in STRATEGIES:
        raise KeyError(f"unknown search strategy {name!r}; choose from {STRATEGIES.names()}")
    cls = STRATEGIES.get(name)
    check_settings(cls, kwargs, f"search strategy {name!r}")
    return cls(**kwargs)


def list_strategies() -> list[str]:
    return STRATEGIES.names()
