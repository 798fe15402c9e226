"""Search strategies behind one interface (see :mod:`hwnas.search.base`)."""

from hwnas.search import evolution, random_search  # noqa: F401  (registration)
from hwnas.search.base import (
    Objective,
    SearchProblem,
    Strategy,
    build_strategy,
    list_strategies,
    register_strategy,
)
from hwnas.search.optuna import nsga2, tpe  # noqa: F401  (registration)
from hwnas.search.optuna.base import OptunaStrategy
from hwnas.search.optuna.codec import GeneCodec, quiet_optuna, violations
from hwnas.search.result import RANKS, TIE_COSTS, Evaluated, SearchResult, choose, rank_records
from hwnas.search.settings import check_settings

__all__ = [
    "RANKS",
    "TIE_COSTS",
    "Evaluated",
    "GeneCodec",
    "Objective",
    "OptunaStrategy",
    "SearchProblem",
    "SearchResult",
    "Strategy",
    "build_strategy",
    "check_settings",
    "choose",
    "list_strategies",
    "quiet_optuna",
    "rank_records",
    "register_strategy",
    "violations",
]
