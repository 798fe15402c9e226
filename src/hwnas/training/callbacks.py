"""Zero-shot search between progressive-shrinking phases."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L

from hwnas.search.base import SearchResult
from hwnas.spaces.base import SearchSpace
from hwnas.training.supernet import SupernetModule

log = logging.getLogger(__name__)

# search(space, phase_index) -> result, or None when the phase's space has no feasible
# arch (the phase then samples its space uniformly)
SearchFn = Callable[[SearchSpace, int], "SearchResult | None"]


class ZeroShotSearchCallback(L.Callback):
    """At the first epoch of every phase that opens new elastic dimensions, search the
    phase's space train-free (``search(space, phase_index)``) and hand the phase the
    ``pool_size`` best feasible candidates to sample its random subnets from.

    Results go to ``<out_dir>/phase<i>_<name>/`` (``history.csv``, ``result.json``,
    ``pool.json``). Phases whose space has a single arch (e.g. "largest") are skipped.
    Pools travel in the supernet's checkpoints, so a resumed run does not search again.
    """

    def __init__(self, search: SearchFn, pool_size: int, out_dir: str | Path | None = None):
        if pool_size < 1:
            raise ValueError(f"supernet.pool_size must be >= 1, got {pool_size}")
        self.search, self.pool_size = search, pool_size
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.results: dict[int, SearchResult] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, SupernetModule):
            raise TypeError("ZeroShotSearchCallback works with a SupernetModule")
        i = pl_module.phase_index(trainer.current_epoch)
        if trainer.current_epoch != pl_module.phase_start(i) or i in pl_module.pools:
            return
        # Reorder channels first (width phase) so the pool is scored on the weights the
        # phase will train.
        pl_module.enter_phase(i)
        space = pl_module.phase_space(i)
        if space.size() <= 1:
            return
        phase = pl_module.phases[i]
        log.info("phase %d (%s): zero-shot search over %s", i, phase.name, "+".join(phase.elastic))
        was_training = pl_module.model.training
        result = self.search(space, i)
        pl_module.model.train(was_training)
        if result is None:
            pl_module.pools[i] = []  # searched once: no pool, uniform sampling
            return
        pool = result.pool(self.pool_size)
        pl_module.pools[i] = pool
        self.results[i] = result
        log.info(
            "phase %d (%s): pool of %d candidates, best DE-Score %.3f",
            i,
            phase.name,
            len(pool),
            result.best.fitness,
        )
        if self.out_dir is not None and trainer.is_global_zero:
            folder = self.out_dir / f"phase{i}_{phase.name}"
            result.save(folder)
            (folder / "pool.json").write_text(json.dumps([a.to_dict() for a in pool], indent=1))
