"""Schema of the ``search`` group (stage 3: the search on the trained supernet).

Candidates are scored by validation accuracy with inherited weights after exact BN
recalibration, and by the hardware cost model. The chosen subnet is the most accurate
feasible one whose latency is at most ``max_latency_ratio`` x the largest subnet's (on
top of ``constraints``); accuracy ties go to the lower latency, so the choice is always
on ``search/pareto.csv``. The strategy is its own group (``search/strategy=evolution |
random | nsga2 | tpe``) and stays free-form here (checked when it is built).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwnas.app.schema.base import check_finite, check_int, check_shared_search, is_number


@dataclass
class SearchConfig:
    """The search on the trained supernet (``search.*``).

    - ``max_latency_ratio``: the chosen subnet's latency is at most this times the
      largest subnet's, in (0, 1]; null = ``constraints`` only.
    - ``val_samples``: validation samples per candidate.
    - ``calib_samples``: samples for exact BN re-estimation per candidate.
    - ``seed_with_zero_shot``: best zero-shot archs evaluated as well, those within the
      constraints and the latency cap (0 = none).
    - ``budget``: max evaluations, whatever the strategy; null = the strategy's own.
    - ``workers``: processes evaluating candidates (tpe, nsga2): > 1 shares one Optuna
      study between them (hwnas.search.optuna.workers).
    - ``storage``: the shared study's storage: null = ``search/study.journal``; a
      journal file, or an RDB URL (``postgresql://user@host/db``).
    - ``study_name``: null = derived from the search (seed, space, weights).
    - ``strategy``: the search strategy's keys (group ``search/strategy``; ``name``
      picks it), free-form here.
    """

    max_latency_ratio: float | None = 0.6
    val_samples: int = 2000
    calib_samples: int = 1000
    seed_with_zero_shot: int = 10
    budget: int | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    strategy: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """ValueError naming ``search.<key>`` for the first value out of range (the
        strategy's keys are checked when it is built)."""
        ratio = self.max_latency_ratio
        if ratio is not None:
            if is_number(ratio):
                check_finite("search.max_latency_ratio", ratio)
            if not is_number(ratio) or not 0 < ratio <= 1:
                raise ValueError(
                    f"search.max_latency_ratio={ratio!r} must be in (0, 1] or null; "
                    "use e.g. 0.6, or null for the constraints only"
                )
        check_int("search.val_samples", self.val_samples, 1)
        check_int("search.calib_samples", self.calib_samples, 1)
        check_int("search.seed_with_zero_shot", self.seed_with_zero_shot, 0, "use 0 (none) or more")
        check_shared_search("search", self.budget, self.workers, self.storage, self.study_name)
