"""A training that diverges stops at once: the first non-finite loss raises
:class:`NonFiniteLossError` in the training step, before the optimizer steps on it and
before any checkpoint of that step is written, and the run exits with one line saying
where and which setting to change."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; the message names where and the fix."""


def check_loss(loss: torch.Tensor, message: Callable[[], tuple[str, str]]) -> None:
    """Raise :class:`NonFiniteLossError` unless ``loss`` is finite; ``message()`` gives
    (where, fix) for its one line (built only then: it may read the trainer's step)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        where, fix = message()
        raise NonFiniteLossError(
            f"{where}: the training loss is {value}, so the training diverged or its data "
            f"holds NaN/inf; {fix} (a run with changed settings needs a new folder: "
            "hydra.run.dir=...)"
        )
