"""The device of a run's evaluation work, one for every stage: where the subnets of the
trained supernet are scored (BN recalibration and the task's metrics, stage search),
the final stage's test metrics, the export of the front's points and the quantize
stage's Hessian traces. It follows ``trainer.accelerator`` (the trainings' device):
``cpu`` is the CPU; ``gpu`` / ``cuda`` the process's CUDA device (``LOCAL_RANK`` picks it
in a multi-process run, or indexes ``trainer.devices`` when that lists the GPUs);
``auto`` a CUDA device when one is visible, else the CPU. Train-free scoring keeps its
own setting (``zero_shot.device``), and whatever runs ONNX Runtime or times a CPU target
stays on the CPU: networks come back to the CPU after each evaluation here."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from hwnas.tasks.base import Task
from hwnas.training.settings import TrainerSettings

log = logging.getLogger(__name__)


def _local_index(devices: Any) -> int:
    """The CUDA index of this process: its local rank, through ``devices`` when that
    lists the GPUs (``[2, 3]`` or ``"2,3"``)."""
    env = os.environ
    local = int(env.get("LOCAL_RANK") or env.get("SLURM_LOCALID") or 0)
    if isinstance(devices, str) and "," in devices:
        devices = [int(d) for d in devices.strip("[]").split(",") if d.strip()]
    if isinstance(devices, (list, tuple)) and devices:
        return int(devices[local % len(devices)])
    return local


def eval_device(trainer: TrainerSettings | Any) -> torch.device:
    """The evaluation device of the ``trainer`` settings (see the module doc); ``gpu``
    without a visible CUDA device is refused earlier, by ``TrainerSettings.check``."""
    s = TrainerSettings.of(trainer)
    accelerator = str(s.accelerator)
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", _local_index(s.devices))


def run_device(ctx: Any) -> torch.device:
    """The evaluation device of a run (its :class:`~hwnas.app.context.Context`)."""
    return eval_device(ctx.settings.trainer)


def stage_device(ctx: Any, stage: str, what: str = "evaluations", note: str = "") -> torch.device:
    """:func:`run_device`, logged once for ``stage`` (``stage search: evaluations on
    cuda:0``, then ``note``: ``benchmarks/gpu_check.sh`` reads these lines)."""
    device = run_device(ctx)
    log.info("stage %s: %s on %s%s", stage, what, device, note)
    return device


def training_note(ctx: Any) -> str:
    """Where the run's Lightning trainings run, for the stage lines: ``; training on
    cuda:0 (precision bf16-mixed)``."""
    return f"; training on {run_device(ctx)} (precision {ctx.settings.trainer.precision})"


def evaluate(
    task: Task, net: nn.Module, loader: Iterable, device: str | torch.device
) -> dict[str, float]:
    """``task.evaluate(net, loader, device)``; ``net`` is back on the CPU afterwards
    (ONNX export, saving and CPU timing come next), in eval mode."""
    try:
        return task.evaluate(net, loader, device)
    finally:
        net.to("cpu")


__all__ = ["eval_device", "evaluate", "run_device", "stage_device", "training_note"]
