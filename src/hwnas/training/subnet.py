"""Final training of one exported subnet (a plain ``nn.Module``)."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from hwnas.tasks.base import Task
from hwnas.tasks.classification import Classification
from hwnas.training.finite import agreement, check_loss
from hwnas.training.hidden import captured, hidden_layers, hidden_loss
from hwnas.training.optim import batch_size, check_optimizer, detach, make_optimizer


class SubnetModule(L.LightningModule):
    """Fine-tunes a standalone subnet with cross-entropy, SGD (Nesterov) and a per-step
    cosine schedule; logs ``val/acc`` and ``test/acc``. With a ``teacher`` (frozen) and
    ``kd_alpha > 0`` the loss is ``kd_alpha * distillation + (1 - kd_alpha) * task loss``
    (the task's ``distill_loss`` at ``kd_temperature``); ``kd_hidden > 0`` adds
    ``kd_hidden`` times the hidden-state distillation of a transformer's encoder layers
    (:mod:`hwnas.training.hidden`)."""

    def __init__(
        self,
        net: nn.Module,
        epochs: int,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 3e-5,
        label_smoothing: float = 0.0,
        warmup_fraction: float = 0.0,
        task: Task | None = None,
        optimizer: str = "sgd",
        teacher: nn.Module | None = None,
        kd_alpha: float = 0.0,
        kd_temperature: float = 1.0,
        kd_hidden: float = 0.0,
        stage: str = "final",
    ):
        super().__init__()
        self.stage = stage  # the config group a divergence message names (final.lr)
        if epochs < 0 or lr <= 0:
            raise ValueError(f"final training needs epochs >= 0 and lr > 0, got {epochs}, {lr}")
        if not 0.0 <= kd_alpha <= 1.0 or kd_temperature <= 0:
            raise ValueError(
                f"final.kd_alpha={kd_alpha} must be in [0, 1] and final.kd_temperature="
                f"{kd_temperature} > 0"
            )
        if kd_hidden < 0:
            raise ValueError(f"final.kd_hidden={kd_hidden} must be >= 0")
        if kd_hidden > 0:
            if teacher is None:
                raise ValueError("final.kd_hidden > 0 needs a teacher to distil from")
            hidden_layers(net, "final.kd_hidden")
            hidden_layers(teacher, "final.kd_hidden")
        self.kd_hidden = float(kd_hidden)
        # the teacher is frozen and kept out of the module (no state dict, no optimizer)
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.kd_alpha, self.kd_temperature = float(kd_alpha), float(kd_temperature)
        self.net = net
        self.epochs, self.lr, self.momentum = epochs, lr, momentum
        self.weight_decay, self.label_smoothing = weight_decay, label_smoothing
        self.warmup_fraction = warmup_fraction
        self.task = task or Classification((), 0, label_smoothing=label_smoothing)
        self.optimizer = check_optimizer(optimizer)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def on_fit_start(self) -> None:
        # A subnet handed over after BN recalibration is in eval mode; train it as a whole.
        self.net.train()
        for t in self._teacher:
            t.to(self.device).eval()

    def _set_lr(self, batch_idx: int) -> float:
        steps = max(1, self.trainer.num_training_batches)
        done = (self.current_epoch + batch_idx / steps) / max(1, self.epochs)
        if done < self.warmup_fraction:
            lr = self.lr * (done / self.warmup_fraction)
        else:
            lr = self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        task = self.task
        inputs, targets = task.split_batch(batch)
        lr = self._set_lr(batch_idx)
        hidden = bool(self._teacher) and self.kd_hidden > 0
        with captured(self.net, hidden) as mine:
            outputs = self.net(*inputs)
        loss = task.loss(outputs, targets)
        logged = {"train/loss": loss}
        if self._teacher and (self.kd_alpha > 0 or hidden):
            with torch.no_grad(), captured(self._teacher[0], hidden) as theirs:
                taught = self._teacher[0](*inputs)
            if self.kd_alpha > 0:
                kd = task.distill_loss(outputs, taught, self.kd_temperature)
                logged["train/kd"] = kd
                loss = self.kd_alpha * kd + (1.0 - self.kd_alpha) * loss
            if hidden:
                kd_hidden = hidden_loss(mine, theirs)
                logged["train/kd_hidden"] = kd_hidden
                loss = loss + self.kd_hidden * kd_hidden
        check_loss(
            loss,
            lambda: (
                f"{self.stage} training, epoch {self.current_epoch}, step "
                f"{self.trainer.global_step}",
                f"lower {self.stage}.lr (now {self.lr:g}) or check the data",
            ),
            agreement(self),
        )
        # a task may leave out what teacher-forced training outputs cannot give (WER)
        primary = task.batch_metrics(detach(outputs), targets).get(task.primary_metric)
        if primary is not None:
            logged[f"train/{task.primary_metric}"] = primary
        # Step values every trainer.log_every_n_steps, and the epoch means.
        self.log_dict(
            logged,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch_size(inputs),
        )
        self.log("lr", lr, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        inputs, targets = self.task.split_batch(batch)
        metrics = self.task.batch_metrics(self.net(*inputs), targets)
        for name, value in metrics.items():
            self.log(
                f"{stage}/{name}",
                value,
                prog_bar=name == self.task.primary_metric,
                batch_size=batch_size(inputs),
                sync_dist=True,
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        return make_optimizer(
            self.optimizer, decay, no_decay, self.lr, self.momentum, self.weight_decay
        )
