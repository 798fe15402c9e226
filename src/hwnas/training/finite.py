"""A training that diverges stops at once: the first non-finite loss raises
:class:`NonFiniteLossError` in the training step, before the optimizer steps on it and
before any checkpoint of that step is written, and the run exits with one line saying
where and which setting to change."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; the message names where and the fix."""


def check_loss(
    loss: torch.Tensor,
    message: Callable[[], tuple[str, str]],
    agree: Callable[[bool], bool] | None = None,
) -> None:
    """Raise :class:`NonFiniteLossError` unless ``loss`` is finite; ``message()`` gives
    (where, fix) for its one line (built only then: it may read the trainer's step).

    ``agree``: with several processes (DDP), whether every process's loss is finite,
    given this one's (Lightning's ``strategy.reduce_boolean_decision``): all stop at the
    same step, where one process alone stopping would leave the others waiting in the
    next gradient all-reduce."""
    value = float(loss.detach())
    finite = math.isfinite(value)
    if agree is not None:
        everywhere = agree(finite)
        if finite and not everywhere:
            where, fix = message()
            raise NonFiniteLossError(
                f"{where}: the training loss of another process is not finite, so the "
                f"training diverged or its data holds NaN/inf; {fix}"
            )
    if not finite:
        where, fix = message()
        raise NonFiniteLossError(
            f"{where}: the training loss is {value}, so the training diverged or its data "
            f"holds NaN/inf; {fix}, and rerun the same command with the fix: it resumes "
            "from the last good checkpoint"
        )


def agreement(module: Any) -> Callable[[bool], bool] | None:
    """``check_loss``'s ``agree`` for a LightningModule: None in one process."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None or getattr(trainer, "world_size", 1) <= 1:
        return None
    return lambda ok: bool(trainer.strategy.reduce_boolean_decision(ok, all=True))
