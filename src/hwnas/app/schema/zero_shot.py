"""Schema of the ``zero_shot`` group (stage 1, and the between-phase searches of stage
``supernet``): the train-free DE-Score search.

The strategy is its own group (``zero_shot/strategy=evolution | random | nsga2 | tpe``)
and stays free-form here: each strategy's keys are its constructor's arguments, checked
when it is built (hwnas.app.config.build_configured_strategy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwnas.app.schema.base import check_int, check_shared_search

INPUTS = ("gaussian", "data")  # zero_shot.inputs
DEVICES = ("auto", "cpu", "cuda")  # zero_shot.device


@dataclass
class ZeroShotConfig:
    """The train-free search (``zero_shot.*``).

    - ``inputs``: gaussian (data-free) | data (a batch from the datamodule).
    - ``batch_size``: the proxy batch.
    - ``device``: auto (CUDA when a GPU is visible, else CPU) | cpu | cuda.
    - ``pool_size``: candidates saved as the zero-shot pool.
    - ``budget``: max evaluations, whatever the strategy; null = the strategy's own.
    - ``workers``: processes scoring candidates (tpe, nsga2): > 1 shares one Optuna
      study between them (hwnas.search.optuna.workers).
    - ``storage``: the shared study's storage: null = ``zero_shot/study.journal``; a
      journal file, or an RDB URL (``postgresql://user@host/db``).
    - ``study_name``: null = derived from the search (seed, space, weights).
    - ``strategy``: the search strategy's keys (group ``zero_shot/strategy``; ``name``
      picks it), free-form here.
    """

    inputs: str = "gaussian"
    batch_size: int = 16
    device: str = "auto"
    pool_size: int = 20
    budget: int | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    strategy: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """ValueError naming ``zero_shot.<key>`` for the first value out of range
        (whether CUDA is visible for ``device=cuda`` is checked when the run starts; the
        strategy's keys when it is built)."""
        if self.inputs not in INPUTS:
            raise ValueError(f"zero_shot.inputs={self.inputs!r}: use gaussian or data")
        check_int("zero_shot.batch_size", self.batch_size, 1)
        if self.device not in DEVICES:
            raise ValueError(f"zero_shot.device={self.device!r}: use auto, cpu or cuda")
        check_int("zero_shot.pool_size", self.pool_size, 1)
        check_shared_search("zero_shot", self.budget, self.workers, self.storage, self.study_name)
