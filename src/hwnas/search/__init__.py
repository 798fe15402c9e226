"""Search strategies behind one interface (see :mod:`hwnas.search.base`)."""

from hwnas.search import evolution, nsga2, random_search, tpe  # noqa: F401  (registration)
from hwnas.search.base import (
    RANKS,
    TIE_COSTS,
    Evaluated,
    Objective,
    SearchProblem,
    SearchResult,
    Strategy,
    build_strategy,
    choose,
    list_strategies,
    rank_records,
    register_strategy,
)
from hwnas.search.optuna_base import GeneCodec, OptunaStrategy, quiet_optuna, violations
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
