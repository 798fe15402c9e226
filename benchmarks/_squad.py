"""Shared set-up of the SQuAD benchmarks: ``experiment=squad_minilm`` composed with
Hydra overrides, its data module set up, its task and its elastic BERT (seeded)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from hwnas.data import build_datamodule
from hwnas.elastic import build_model

ROOT = Path(__file__).resolve().parents[1]


def squad_setup(overrides: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(cfg, dm, task, model)`` of ``experiment=squad_minilm`` plus ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=["experiment=squad_minilm", *overrides, "paths.output_dir=/tmp"]
        )
    torch.manual_seed(int(cfg.seed))
    dm = build_datamodule(cfg.data)
    dm.setup()
    model = build_model(cfg.model, tuple(dm.input_shape), dm.num_classes)
    return cfg, dm, dm.task(), model


def schedule(steps: int, warmup: float):
    """LambdaLR factor: linear warm-up over ``warmup`` of the steps, then cosine to 0."""

    def factor(step: int) -> float:
        done = step / steps
        if done < warmup:
            return (step + 1) / (warmup * steps)
        return 0.5 * (1.0 + math.cos(math.pi * (done - warmup) / (1.0 - warmup)))

    return factor


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
