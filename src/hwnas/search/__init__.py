"""Search strategies behind one interface (see :mod:`hwnas.search.base`)."""

from hwnas.search import evolution, nsga2, random_search, tpe  # noqa: F401  (registration)
from hwnas.search.base import (
    Evaluated,
    Objective,
    SearchProblem,
    SearchResult,
    Strategy,
    build_strategy,
    list_strategies,
    register_strategy,
)

__all__ = [
    "Evaluated",
    "Objective",
    "SearchProblem",
    "SearchResult",
    "Strategy",
    "build_strategy",
    "list_strategies",
    "register_strategy",
]
