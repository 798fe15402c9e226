"""Shared set-up of the SQuAD benchmarks: ``experiment=squad_minilm`` composed with
Hydra overrides, its data module set up, its task and its elastic BERT (seeded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from hwnas.app.config import CONFIG_DIR
from hwnas.data import build_datamodule
from hwnas.elastic import build_model
from hwnas.training.optim import make_optimizer, warmup_cosine

ROOT = Path(__file__).resolve().parents[1]


def squad_setup(overrides: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(cfg, dm, task, model)`` of ``experiment=squad_minilm`` plus ``overrides``."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["experiment=squad_minilm", *overrides, "paths.output_dir=/tmp"]
        )
    torch.manual_seed(int(cfg.seed))
    dm = build_datamodule(cfg.data)
    dm.setup()
    model = build_model(cfg.model, tuple(dm.input_shape), dm.num_classes)
    return cfg, dm, dm.task(), model


def adamw(net: torch.nn.Module, lr: float, steps: int, warmup: float) -> tuple[Any, Any]:
    """``(optimizer, scheduler)``: AdamW with weight decay 0.01 on the matrices (as the
    demo's), and the supernet phases' schedule over ``steps`` (``warmup`` of them warm-up,
    then cosine decay to 0)."""
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = make_optimizer("adamw", decay, no_decay, lr, momentum=0.9, weight_decay=0.01)

    def factor(step: int) -> float:
        return warmup_cosine(step / steps, warmup, 1.0 / steps)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(net: torch.nn.Module, task: Any, batch: Any, opt: Any, sched: Any) -> float:
    """One optimizer and scheduler step of ``net`` on ``batch``; returns the loss."""
    net.train()
    inputs, targets = task.split_batch(batch)
    loss = task.loss(net(*inputs), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()
