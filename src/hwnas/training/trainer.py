"""One place that builds Lightning trainers from the ``trainer`` config node."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from hwnas.progress import use_bars

log = logging.getLogger(__name__)

ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
LOGGERS = ("csv", "tensorboard", "none")


def check_trainer_config(cfg: Mapping[str, Any]) -> None:
    """Raise a one-line ``ValueError`` naming the ``trainer.*`` key and the fix."""
    acc = cfg["accelerator"]
    if acc not in ACCELERATORS:
        raise ValueError(f"trainer.accelerator={acc!r}: choose one of {list(ACCELERATORS)}")
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={acc} but no CUDA device is visible: use trainer.accelerator=cpu"
        )
    if cfg["logger"] not in LOGGERS:
        raise ValueError(f"trainer.logger={cfg['logger']!r}: choose one of {list(LOGGERS)}")
    if cfg["logger"] == "tensorboard" and not any(
        importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
    ):
        raise ValueError(
            "trainer.logger=tensorboard needs the tensorboard package: "
            "pip install tensorboard, or use trainer.logger=csv"
        )
    n = cfg["log_every_n_steps"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"trainer.log_every_n_steps={n!r} must be an integer >= 1")


class LogProgress(Callback):
    """Progress as log lines (for logs that are not a terminal): epoch, batch, the
    training loss and elapsed time at most every ``interval_s`` seconds, and a line at
    the end of every epoch with the epoch's logged metrics."""

    def __init__(self, title: str, interval_s: float = 30.0):
        self.title, self.interval_s = title, interval_s
        self.start = self.last = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return
        self.last = now
        loss = trainer.callback_metrics.get("train/loss_step")
        shown = f", train/loss {float(loss):.4f}" if loss is not None else ""
        log.info(
            "%s: epoch %d/%d, batch %d/%d%s, %.0f s",
            self.title,
            trainer.current_epoch + 1,
            trainer.max_epochs,
            batch_idx + 1,
            trainer.num_training_batches,
            shown,
            now - self.start,
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # epoch means of the training metrics and the validation metrics
        metrics = trainer.callback_metrics
        shown = ", ".join(
            f"{k.removesuffix('_epoch')} {float(v):.4f}"
            for k, v in sorted(metrics.items())
            if v.numel() == 1
            and (k.startswith("val/") or (k.startswith("train/") and k.endswith("_epoch")))
        )
        log.info(
            "%s: epoch %d/%d done (%s), %.0f s",
            self.title,
            trainer.current_epoch + 1,
            trainer.max_epochs,
            shown,
            time.monotonic() - self.start,
        )


def _logger(cfg: Mapping[str, Any], folder: Path, name: str) -> Logger | bool:
    if cfg["logger"] == "none":
        return False
    if cfg["logger"] == "tensorboard":
        return TensorBoardLogger(str(folder), name=name, version="")
    return CSVLogger(str(folder), name=name, version="")


def build_trainer(
    cfg: Mapping[str, Any],
    folder: str | Path,
    *,
    max_epochs: int,
    log_name: str = "logs",
    title: str = "training",
    limit_train_batches: float | int = 1.0,
    callbacks: Sequence[Callback] = (),
    checkpointing: bool = False,
    mode: str = "auto",
    interval_s: float = 30.0,
) -> L.Trainer:
    """A Trainer from the ``trainer`` node (accelerator, devices, precision, logger,
    log_every_n_steps, deterministic), writing logs under ``folder/log_name``; a rich
    bar on a terminal, :class:`LogProgress` lines otherwise (progress ``mode``, as
    :func:`hwnas.progress.progress_bar` takes it)."""
    check_trainer_config(cfg)
    folder = Path(folder)
    bars = use_bars(mode)
    extra: list[Callback] = [RichProgressBar()] if bars else [LogProgress(title, interval_s)]
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=cfg["accelerator"],
        devices=cfg["devices"],
        precision=cfg["precision"],
        limit_train_batches=limit_train_batches,
        log_every_n_steps=int(cfg["log_every_n_steps"]),
        num_sanity_val_steps=0,
        deterministic=bool(cfg["deterministic"]),
        enable_model_summary=False,
        enable_checkpointing=checkpointing,
        enable_progress_bar=bars,
        logger=_logger(cfg, folder, log_name),
        default_root_dir=str(folder),
        callbacks=[*callbacks, *extra],
    )
