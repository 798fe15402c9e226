"""Loss-based importance of attention heads and feed-forward units (DynaBERT's network
rewiring), measured on training batches before width first shrinks.

Progressive shrinking keeps the *first* heads and hidden units of every layer, so the
order decides what a narrower subnet inherits. ``magnitude`` ranks them by their
weights' L1 norms; ``loss`` ranks them by how much the loss would change without them,
the first-order Taylor estimate ``|Σ W ⊙ ∂L/∂W|`` over each unit's weights (Molchanov
et al. 2017; Michel et al. 2019), summed over batches of the task's own loss with the
largest subnet active, as DynaBERT does before it trains its width-adaptive BERT.
Embedding channels keep the magnitude order either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from hwnas.elastic.base import ElasticModel
from hwnas.tasks.base import Task

log = logging.getLogger(__name__)

IMPORTANCE = ("magnitude", "loss")


def check_importance(mode: str, model: ElasticModel | None = None) -> str:
    """``mode`` when it is known and ``model`` (if given) supports it; ValueError
    otherwise."""
    if mode not in IMPORTANCE:
        raise ValueError(f"supernet.importance={mode!r}: choose one of {list(IMPORTANCE)}")
    if mode == "loss" and model is not None and not _units(model):
        raise ValueError(
            f"supernet.importance=loss ranks attention heads and feed-forward units: "
            f"{type(model).__name__} has none; set supernet.importance=magnitude"
        )
    return mode


def _units(model: ElasticModel) -> list[nn.Module]:
    return model.importance_units()


def loss_saliency(
    model: ElasticModel,
    task: Task,
    batches: Iterable,
    device: str | torch.device = "cpu",
) -> dict[nn.Module, torch.Tensor]:
    """Per attention module its heads' saliency ``(max_heads,)``, per MLP its hidden
    units' ``(max_hidden,)``: the absolute first-order loss change of cutting each,
    summed over ``batches`` (one absolute value per batch, as DynaBERT accumulates).

    The largest arch is active and dropout off (eval mode) while it runs; gradients go
    through ``torch.autograd.grad``, so no parameter's ``.grad`` is touched and the
    weights, the active arch and the train/eval mode are as before afterwards."""
    units = _units(model)
    if not units:
        raise ValueError(f"{type(model).__name__} has no attention heads or MLP units to rank")
    weights = [unit.importance_weights() for unit in units]
    params = [p for ws in weights for p in ws]
    scores: dict[nn.Module, torch.Tensor] = {}
    was_training, seen = model.training, 0
    model.eval()
    try:
        with model.active(model.space.max_arch()):
            for batch in batches:
                inputs, targets = task.split_batch(move_data_to_device(batch, device))
                loss = task.loss(model(*inputs), targets)
                grads = iter(torch.autograd.grad(loss, params))
                for unit, ws in zip(units, weights, strict=True):
                    s = unit.importance_saliency([next(grads) for _ in ws])
                    scores[unit] = scores[unit] + s if unit in scores else s
                seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("loss-based importance got no batches: check its loader")
    log.info("importance: heads and feed-forward units ranked by the loss on %d batches", seen)
    return scores
