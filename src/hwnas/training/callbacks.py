"""Training callbacks: the zero-shot search between progressive-shrinking phases, and
the checkpoints (with every RNG state and an exactly resumable data order) that let a
killed training resume where it stopped."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from hwnas.core import atomic
from hwnas.search.result import SearchResult
from hwnas.spaces.base import Arch, SearchSpace
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
        result = None
        if trainer.is_global_zero:  # one search; its pool goes to every process
            log.info(
                "phase %d (%s): zero-shot search over %s", i, phase.name, "+".join(phase.elastic)
            )
            was_training = pl_module.model.training
            result = self.search(space, i)
            pl_module.model.train(was_training)
        pool = result.pool(self.pool_size) if result is not None else []
        if trainer.world_size > 1:
            shared = trainer.strategy.broadcast([a.to_str() for a in pool], src=0)
            pool = [Arch.from_str(a) for a in shared]
        pl_module.pools[i] = pool  # empty: searched once, no pool, uniform sampling
        if result is None:
            return
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
            atomic.write_json(folder / "pool.json", [a.to_dict() for a in pool], indent=1)


# ------------------------------------------------------------------ checkpoints
def rng_state() -> dict[str, Any]:
    """Every global RNG state (python ``random``, numpy, torch CPU and, when CUDA is in
    use, every CUDA device), in types ``torch.load(weights_only=True)`` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda, device)


class ResumeCheckpoint(L.Callback):
    """Keeps ``path`` (``last.ckpt``) a checkpoint a killed training resumes from exactly.

    It is written (atomically, by the trainer's :class:`~hwnas.training.trainer.
    AtomicCheckpointIO`) at the end of every training epoch, after its validation, and
    every ``every_n_steps`` optimizer steps within an epoch (0 or None: epoch ends
    only). A mid-epoch save is skipped on an epoch's last batch (the epoch-end save
    follows) and moved to the next step when the step writes a training log line (that
    line is written after this hook), so the CSV log never holds a line the checkpoint
    has not seen, nor misses one it has. The line of an epoch's training means, which
    Lightning writes just after the epoch-end hooks, is held by the epoch-end
    checkpoint and written on resume when a kill came before it.

    Besides Lightning's own state (model, optimizer, loop progress, the
    :class:`ResumableLoader` position) it holds every global RNG state
    (:func:`rng_state`, restored when training starts again), the trainer's logged
    metrics, a ``key`` naming what it belongs to, and the last log step it covers: a
    resumed training keeps the CSV log's lines up to that step and logs the rest again.
    Lightning does not checkpoint the running sums behind the epoch means of the
    training metrics; a mid-epoch checkpoint holds them (:func:`_epoch_sums`) and they
    are added back after the first resumed batch, so the ``train/*_epoch`` means of an
    epoch resumed mid-way are those of the whole epoch.
    """

    def __init__(self, path: str | Path, every_n_steps: int | None = None, key: str | None = None):
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or every_n_steps < 0):
            raise ValueError(f"checkpoint_every_n_steps must be >= 0 or null, got {every_n_steps}")
        self.path, self.every_n_steps = Path(path), int(every_n_steps or 0)
        self.key = key  # what the checkpoint belongs to (checked before resuming)
        self._saved_at = 0  # global step of the last checkpoint
        self._restored: dict[str, Any] | None = None
        # the trainer's logged metrics when the checkpoint was saved (a training resumed
        # from its last checkpoint has nothing left to run, and so logs nothing)
        self.restored_metrics: dict[str, float] = {}
        self._sums: dict[str, list[torch.Tensor]] | None = None  # to add back after resuming
        self._mid_epoch = False  # what the checkpoint being saved is

    # -- when to save -------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._sums is not None:  # the first batch after a mid-epoch resume
            _add_epoch_sums(trainer, self._sums)
            self._sums = None
        n, step = self.every_n_steps, trainer.global_step
        if not n or step - self._saved_at < n:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end checkpoint follows
        if trainer.log_every_n_steps > 1 and step % trainer.log_every_n_steps == 0:
            return  # this step writes a log line after this hook: save at the next one
        self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, mid_epoch=False)

    def _save(self, trainer: L.Trainer, mid_epoch: bool = True) -> None:
        self._mid_epoch = mid_epoch
        trainer.save_checkpoint(self.path)
        self._saved_at = trainer.global_step
        log.debug("checkpoint %s at step %d", self.path, trainer.global_step)

    # -- what it holds ------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["hwnas_rng"] = rng_state()
        # the log lines this state has written have steps up to here: those of the
        # batches run (step = global step - 1 for the last one), the epoch's validation
        # and, at an epoch's end, its means (written at the epoch's last step)
        checkpoint["hwnas_log_step"] = trainer.global_step - 1
        checkpoint["hwnas_key"] = self.key
        if self._mid_epoch:
            checkpoint["hwnas_epoch_sums"] = _epoch_sums(trainer)
        else:
            checkpoint["hwnas_epoch_row"] = _pending_epoch_row(trainer)
        checkpoint["hwnas_metrics"] = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, torch.Tensor) and v.numel() == 1
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._restored = {k: v for k, v in checkpoint.items() if k.startswith("hwnas_")}
        self._saved_at = int(checkpoint.get("global_step", 0))
        self.restored_metrics = dict(checkpoint.get("hwnas_metrics", {}))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the RNG states right before training goes on (after Lightning's own
        restore and data set-up), and cut the CSV log back to the checkpoint; a fresh
        training (no checkpoint) starts the log afresh."""
        restored, self._restored = self._restored, None
        if restored is not None:
            if "hwnas_rng" in restored:
                set_rng_state(restored["hwnas_rng"])
            self._sums = restored.get("hwnas_epoch_sums") or None
        _resume_log(trainer, restored)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A checkpoint of a finished training leaves nothing to run (no
        ``on_train_start``): its log still gets the lines a kill cut off."""
        restored, self._restored = self._restored, None
        if restored is not None:
            _resume_log(trainer, restored)


def _resume_log(trainer: L.Trainer, restored: dict[str, Any] | None) -> None:
    """Cut the trainer's CSV log back to what ``restored`` (a checkpoint, None for a
    fresh training) covers (:meth:`~hwnas.training.trainer.ResumableCSVLogger.resume_at`)."""
    resume_at = getattr(trainer.logger, "resume_at", None)
    if not callable(resume_at):
        return
    if restored is None:
        resume_at(None)
    else:
        resume_at(int(restored.get("hwnas_log_step", -1)), restored.get("hwnas_epoch_row"))


def _epoch_sums(trainer: L.Trainer) -> dict[str, list[torch.Tensor]]:
    """The running sums (value, batch count) behind the epoch means of the training
    metrics logged so far in this epoch. They live in Lightning's private result
    collection: where it has changed shape, nothing is saved (the resumed epoch's means
    then cover the batches after the resume)."""
    results = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_results", None)
    sums: dict[str, list[torch.Tensor]] = {}
    for key, metric in dict(results or {}).items():
        meta = getattr(metric, "meta", None)
        value = getattr(metric, "value", None)
        count = getattr(metric, "cumulated_batch_size", None)
        if not (isinstance(value, torch.Tensor) and isinstance(count, torch.Tensor)):
            continue
        if meta is not None and meta.on_epoch and (meta.is_mean_reduction or meta.is_sum_reduction):
            sums[key] = [value.detach().cpu().clone(), count.detach().cpu().clone()]
    return sums


def _pending_epoch_row(trainer: L.Trainer) -> dict[str, float]:
    """The line of epoch means Lightning logs right after the epoch-end hooks (its
    ``epoch`` included; private API: empty where it has changed)."""
    try:
        metrics = trainer._logger_connector.metrics["log"]
    except (AttributeError, AssertionError, KeyError, TypeError):
        return {}
    row = {
        k: float(v) for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1
    }
    return {**row, "epoch": trainer.current_epoch} if row else {}


def _add_epoch_sums(trainer: L.Trainer, sums: dict[str, list[torch.Tensor]]) -> None:
    """Add the sums :func:`_epoch_sums` saved to the resumed epoch's own (IEEE addition
    commutes, so the means equal an uninterrupted epoch's bit for bit)."""
    results = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_results", None) or {}
    for key, (value, count) in sums.items():
        metric = results.get(key)
        if metric is None or not isinstance(getattr(metric, "value", None), torch.Tensor):
            continue
        metric.value += value.to(metric.value.device, metric.value.dtype)
        metric.cumulated_batch_size += count.to(metric.cumulated_batch_size.device)
        if hasattr(metric, "_computed"):
            metric._computed = None  # torchmetrics' cached compute() is stale now


class ResumableLoader:
    """A training ``DataLoader`` that resumes mid-epoch where it stopped.

    Lightning saves and restores the state of loaders that have ``state_dict`` /
    ``load_state_dict``; a plain ``DataLoader`` has none, so a training resumed from a
    mid-epoch checkpoint would start the epoch's data from its first batch again. This
    wrapper records the epoch and how many batches it served; after a restore it skips
    that many batches of the same epoch. The skipping happens in the batch sampler (the
    skipped batches are never loaded) when the loader has one, else by drawing them.
    Exact as long as the sampler's order depends only on its epoch (``set_epoch``), as
    :class:`~hwnas.data.base.EpochSampler` does (a batch sampler with ``set_epoch`` of
    its own is given the epoch too). ``epoch_fn`` gives the epoch being trained
    (``lambda: trainer.current_epoch``).
    """

    def __init__(self, loader: DataLoader, epoch_fn: Callable[[], int]):
        self.loader, self.epoch_fn = loader, epoch_fn
        self._epoch, self._served = -1, 0
        self._skip: tuple[int, int] | None = None

    # what Lightning looks at on a loader (set_epoch goes to these samplers)
    @property
    def sampler(self):
        return self.loader.sampler

    @property
    def batch_sampler(self):
        return self.loader.batch_sampler

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def worker_init_fn(self):
        return self.loader.worker_init_fn

    @worker_init_fn.setter
    def worker_init_fn(self, fn) -> None:
        self.loader.worker_init_fn = fn

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # runs at the first next(), after Lightning called set_epoch on the sampler
        epoch = int(self.epoch_fn())
        # Lightning sets the epoch of ``loader.sampler`` and ``batch_sampler.sampler``
        # only; a batch sampler with its own order (length buckets) gets it here
        set_epoch = getattr(self.loader.batch_sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        skip = self._skip[1] if self._skip is not None and self._skip[0] == epoch else 0
        self._skip = None
        self._epoch, self._served = epoch, skip
        if skip:
            log.info("data: epoch %d continues after its batch %d", epoch + 1, skip)
        for batch in self._source(skip):
            self._served += 1
            yield batch

    def _source(self, skip: int) -> Iterator[Any]:
        loader = self.loader
        if not skip:
            yield from loader
            return
        if loader.batch_sampler is None:  # an iterable dataset: draw and drop
            for i, batch in enumerate(loader):
                if i >= skip:
                    yield batch
            return
        yield from DataLoader(
            loader.dataset,
            batch_sampler=_Skip(loader.batch_sampler, skip),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
        )

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = (int(state["epoch"]), int(state["batches"]))


class _Skip:
    """A batch sampler without its first ``n`` batches (iterated, never loaded)."""

    def __init__(self, batch_sampler, n: int):
        self.batch_sampler, self.n = batch_sampler, n

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.n:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.n)
