"""Final training of one exported subnet (a plain ``nn.Module``)."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class SubnetModule(L.LightningModule):
    """Fine-tunes a standalone subnet with cross-entropy, SGD (Nesterov) and a per-step
    cosine schedule; logs ``val/acc`` and ``test/acc``."""

    def __init__(
        self,
        net: nn.Module,
        epochs: int,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 3e-5,
        label_smoothing: float = 0.0,
        warmup_fraction: float = 0.0,
    ):
        super().__init__()
        if epochs < 0 or lr <= 0:
            raise ValueError(f"final training needs epochs >= 0 and lr > 0, got {epochs}, {lr}")
        self.net = net
        self.epochs, self.lr, self.momentum = epochs, lr, momentum
        self.weight_decay, self.label_smoothing = weight_decay, label_smoothing
        self.warmup_fraction = warmup_fraction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        # A subnet handed over after BN recalibration is in eval mode; train it as a whole.
        self.net.train()

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
        x, y = batch
        lr = self._set_lr(batch_idx)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        # Step values every trainer.log_every_n_steps, and the epoch means.
        self.log_dict(
            {"train/loss": loss, "train/acc": acc},
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=len(y),
        )
        self.log("lr", lr, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        x, y = batch
        logits = self.net(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)
        self.log(
            f"{stage}/acc",
            (logits.argmax(1) == y).float().mean(),
            prog_bar=True,
            batch_size=len(y),
            sync_dist=True,
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        return torch.optim.SGD(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            momentum=self.momentum,
            nesterov=self.momentum > 0,
        )
