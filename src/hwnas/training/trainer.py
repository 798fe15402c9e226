"""One place that builds Lightning trainers from the ``trainer`` config node, and runs
them so that a killed training resumes where it stopped (:func:`fit`)."""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hwnas.core import atomic
from hwnas.core.checks import first_non_finite
from hwnas.core.progress import use_bars
from hwnas.training.callbacks import ResumableLoader, ResumeCheckpoint
from hwnas.training.settings import (  # noqa: F401  (check_trainer_config re-exported)
    TrainerSettings,
    check_trainer_config,
    multi_process,
)

log = logging.getLogger(__name__)


def _strategy(cfg: TrainerSettings) -> Any:
    """With several processes (:func:`multi_process`; ``strategy=auto`` with several
    devices too): Lightning's DDP tolerating parameters a step leaves unused (the
    subnets of a supernet step use different parts of it), gloo on CPU, NCCL on GPU."""
    if cfg.multi_process:
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return "auto"


class LogProgress(Callback):
    """Progress as log lines (for logs that are not a terminal): epoch, batch, the
    training loss and elapsed time at most every ``interval_s`` seconds, and a line at
    the end of every epoch with the epoch's logged metrics."""

    def __init__(self, title: str, interval_s: float = 30.0):
        self.title, self.interval_s = title, interval_s
        self.start = self.last = 0.0
        self.first_epoch = 0
        self.finished: int | None = None  # the epoch whose line is due

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.last = time.monotonic()
        self.first_epoch = trainer.current_epoch  # > 0 after a resume

    def _eta(self, trainer: L.Trainer, epochs_done: float) -> str:
        """``, eta N s`` for this training (the rate so far, since this process started
        it), or nothing before there is a rate."""
        total = float(trainer.max_epochs or 0) - self.first_epoch
        done = epochs_done - self.first_epoch
        if total <= 0 or done <= 0:
            return ""
        elapsed = time.monotonic() - self.start
        return f", eta {max(0.0, elapsed * (total - done) / done):.0f} s"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return
        self.last = now
        loss = trainer.callback_metrics.get("train/loss_step")
        shown = f", train/loss {float(loss):.4f}" if loss is not None else ""
        batches = trainer.num_training_batches
        fraction = (batch_idx + 1) / batches if isinstance(batches, int) and batches else 0.0
        log.info(
            "%s: epoch %d/%d, batch %d/%d%s, %.0f s%s",
            self.title,
            trainer.current_epoch + 1,
            trainer.max_epochs,
            batch_idx + 1,
            batches,
            shown,
            now - self.start,
            self._eta(trainer, trainer.current_epoch + fraction),
        )

    # Lightning validates inside the training epoch and folds the epoch's training means
    # into ``callback_metrics`` only after ``on_train_epoch_end``: the epoch's line is
    # written when the next epoch starts or the training ends, so it shows this epoch's
    # means (read earlier, they were the previous epoch's).
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.finished = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_line(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_line(trainer)

    def _epoch_line(self, trainer: L.Trainer) -> None:
        """The line of the epoch this process just finished (none after a resume)."""
        if self.finished is None:
            return
        epoch, self.finished = self.finished, None
        metrics = trainer.callback_metrics
        shown = ", ".join(
            f"{k.removesuffix('_epoch')} {float(v):.4f}"
            for k, v in sorted(metrics.items())
            if v.numel() == 1
            and (k.startswith("val/") or (k.startswith("train/") and k.endswith("_epoch")))
        )
        log.info(
            "%s: epoch %d/%d done (%s), %.0f s%s",
            self.title,
            epoch + 1,
            trainer.max_epochs,
            shown,
            time.monotonic() - self.start,
            self._eta(trainer, epoch + 1) if epoch + 1 < (trainer.max_epochs or 0) else "",
        )


# ----------------------------------------------------------- crash-safe files
CHECKPOINT = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint files, written crash-safely and read with a clear error.

    Lightning 2.6 serialises a checkpoint to memory, writes it to a temporary file in
    the system temp folder and moves it over the target: a rename on one file system,
    but a copy (which a kill cuts short) when the temp folder is on another, and never
    fsynced. Here the file goes through :func:`hwnas.core.atomic.torch_save` (temporary file
    beside the target, fsync, ``os.replace``), and loading a truncated checkpoint raises
    :class:`~hwnas.core.atomic.CorruptFileError` naming it and the fix."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic.torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None):
        fix = (
            f"delete {path} and rerun: that training then starts again from its first epoch "
            f"(the stage's other artifacts are kept)"
        )
        return atomic.torch_load(
            path,
            fix,
            map_location=map_location or "cpu",
            weights_only=True if weights_only is None else weights_only,
        )


class _ResumableWriter(ExperimentWriter):
    """Lightning's CSV writer, but it neither deletes an existing ``metrics.csv`` (as
    Lightning's does when it starts) nor leaves it half-written: the file is rewritten
    whole through :func:`hwnas.core.atomic.atomic_open`, or appended to (one fsynced write)
    while the columns stay the same. :meth:`resume_at` keeps the lines of a killed
    training up to its checkpoint; a line cut off by a kill is dropped."""

    def __init__(self, log_dir: str) -> None:  # not super().__init__: it deletes the file
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.hparams: dict[str, Any] = {}
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        os.makedirs(log_dir, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self._written = False  # this run has not written the file yet

    def _previous_rows(self) -> list[dict[str, Any]]:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return []
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # a line cut off by a kill
            text = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(io.StringIO(text, newline="")))

    def resume_at(self, step: int | None, epoch_row: Mapping[str, Any] | None = None) -> None:
        """Keep the lines of the file logged at ``step`` or before (None: none); add
        ``epoch_row`` (the epoch means an epoch-end checkpoint holds) at ``step`` when a
        kill came before Lightning wrote it."""
        if step is None:  # a fresh training: the first save replaces the file
            self.rows, self.metrics_keys, self._written = [], [], False
            return
        keep = self._previous_rows()
        self.rows = [r for r in keep if r.get("step") and int(float(r["step"])) <= step]
        if epoch_row:
            logged = any(
                int(float(r["step"])) == step and all(r.get(k) not in (None, "") for k in epoch_row)
                for r in self.rows
            )
            if not logged:
                self.rows.append({**epoch_row, "step": step})
        self.metrics_keys = sorted({k for r in self.rows for k in r})
        self._rewrite()

    def save(self) -> None:
        if not self.metrics:
            return
        new, self.metrics = self.metrics, []
        self.rows += new
        keys = sorted(set(self.metrics_keys).union(*new))
        if not self._written or keys != self.metrics_keys:
            self.metrics_keys = keys
            self._rewrite()
            return
        buffer = io.StringIO(newline="")
        csv.DictWriter(buffer, fieldnames=keys).writerows(new)
        with open(self.metrics_file_path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def _rewrite(self) -> None:
        with atomic.atomic_open(self.metrics_file_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self.rows)
        self._written = True

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        path = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        tmp = atomic.temporary_path(path)
        save_hparams_to_yaml(tmp, self.hparams)
        atomic.replace_file(tmp, path)


class ResumableCSVLogger(CSVLogger):
    """:class:`CSVLogger` with :class:`_ResumableWriter`: a resumed training appends to
    its ``metrics.csv`` instead of starting it over (:meth:`resume_at`, called by
    :class:`~hwnas.training.callbacks.ResumeCheckpoint`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ResumableWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, step: int | None, epoch_row: Mapping[str, Any] | None = None) -> None:
        self.experiment.resume_at(step, epoch_row)


def _logger(cfg: TrainerSettings, folder: Path, name: str) -> Logger | bool:
    if cfg.logger == "none":
        return False
    if cfg.logger == "tensorboard":
        return TensorBoardLogger(str(folder), name=name, version="")
    return ResumableCSVLogger(str(folder), name=name, version="")


def build_trainer(
    cfg: TrainerSettings | Mapping[str, Any],
    folder: str | Path,
    *,
    max_epochs: int,
    log_name: str = "logs",
    title: str = "training",
    limit_train_batches: float | int = 1.0,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    checkpoint_key: str | None = None,
    mode: str = "auto",
    interval_s: float = 30.0,
) -> L.Trainer:
    """A Trainer from the ``trainer`` node (accelerator, devices, precision, logger,
    log_every_n_steps, deterministic, checkpoint_every_n_steps), writing logs under
    ``folder/log_name``; a rich bar on a terminal, :class:`LogProgress` lines otherwise
    (progress ``mode``, as :func:`hwnas.core.progress.progress_bar` takes it).
    ``strategy``, ``num_nodes`` and ``devices`` spread a training over processes
    (``ddp``; batch norms are synchronised by the callers, :mod:`hwnas.elastic.syncbn`,
    as Lightning's ``sync_batchnorm`` breaks elastic layers and needs GPUs).

    With ``checkpoint`` (a file path) the training keeps that checkpoint
    (:class:`~hwnas.training.callbacks.ResumeCheckpoint`, tagged ``checkpoint_key``)
    and :func:`fit` resumes from it. Checkpoint files are written and read through
    :class:`AtomicCheckpointIO`; Lightning's own ``ModelCheckpoint`` is off."""
    cfg = TrainerSettings.of(cfg)
    cfg.check()
    folder = Path(folder)
    bars = use_bars(mode)
    extra: list[Callback] = [RichProgressBar()] if bars else [LogProgress(title, interval_s)]
    first: list[Callback] = []  # before the others: saved before a phase's search starts
    if checkpoint is not None:
        every = cfg.checkpoint_every_n_steps
        first.append(ResumeCheckpoint(checkpoint, every, key=checkpoint_key))
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=int(cfg.num_nodes),
        strategy=_strategy(cfg),
        precision=cfg.precision,
        limit_train_batches=limit_train_batches,
        log_every_n_steps=int(cfg.log_every_n_steps),
        gradient_clip_val=cfg.gradient_clip_val,
        num_sanity_val_steps=0,
        deterministic=bool(cfg.deterministic),
        enable_model_summary=False,
        enable_checkpointing=False,
        enable_progress_bar=bars,
        logger=_logger(cfg, folder, log_name),
        default_root_dir=str(folder),
        callbacks=[*first, *extra, *callbacks],  # epoch lines before the next phase's search
        plugins=[AtomicCheckpointIO()],
    )


def fit(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
    """``trainer.fit`` on ``datamodule``, resuming from the trainer's checkpoint
    (:func:`build_trainer` ``checkpoint=``) when there is one.

    A checkpoint is checked first: a truncated one is a one-line
    :class:`~hwnas.core.atomic.CorruptFileError`; one tagged with another key (another subnet,
    another initial supernet) is set aside as ``<name>.stale`` and training starts
    afresh. In one process the training data go through
    :class:`~hwnas.training.callbacks.ResumableLoader`, so a mid-epoch resume continues
    the epoch's data where it stopped (with several processes Lightning's distributed
    sampler is left in place and a mid-epoch resume restarts the epoch's data order)."""
    saver = next((c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)
    ckpt = None
    if saver is not None and saver.path.is_file():
        ckpt = saver.path
        fix = f"delete {ckpt} and rerun: that training then starts again from its first epoch"
        state = atomic.torch_load(ckpt, fix, mmap=True)
        _check_finite_checkpoint(ckpt, state, fix)
        if state.get("hwnas_key") != saver.key:
            stale = ckpt.with_name(ckpt.name + ".stale")
            log.warning(
                "%s was written for another training (key %s, expected %s); moved to %s, "
                "training starts from its first epoch",
                ckpt,
                state.get("hwnas_key"),
                saver.key,
                stale.name,
            )
            try:
                ckpt.replace(stale)
            except FileNotFoundError:  # another process of the same training moved it
                pass
            ckpt = None
        else:
            log.info(
                "resuming from %s (step %d, epoch %d)",
                ckpt,
                int(state.get("global_step", 0)),
                int(state.get("epoch", 0)) + 1,
            )
        del state
    if trainer.world_size > 1:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        return
    train = ResumableLoader(datamodule.train_dataloader(), lambda: trainer.current_epoch)
    trainer.fit(
        module,
        train_dataloaders=train,
        val_dataloaders=datamodule.val_dataloader(),
        ckpt_path=ckpt,
        weights_only=True,
    )


def _check_finite_checkpoint(path: Path, state: dict[str, Any], fix: str) -> None:
    """A checkpoint to resume from holds finite weights and logged metrics (a training
    that diverged stops before saving; a file that holds NaN was damaged or edited)."""
    atomic.check_finite_weights(path, state.get("state_dict") or {}, fix)
    bad = first_non_finite(dict(state.get("hwnas_metrics") or {}), "metrics")
    if bad is not None:
        raise atomic.CorruptFileError(f"{path}: logged {bad} is not a finite number; {fix}")


def logged_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's last logged scalar metrics (``callback_metrics``) over those its
    checkpoint held when training resumed: a training resumed from the checkpoint of
    its last epoch runs nothing and logs nothing, yet reports what it had logged."""
    saver = next((c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)
    merged = dict(saver.restored_metrics) if saver is not None else {}
    for k, v in trainer.callback_metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            merged[k] = float(v)
    return merged
