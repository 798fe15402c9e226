"""The Lightning trainer settings (the ``trainer`` config group) as one typed object that
owns their defaults and checks; :func:`hwnas.training.trainer.build_trainer` reads it."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from hwnas.core.checks import check_bool, check_choice, check_finite, is_int
from hwnas.core.types import to_plain

ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
LOGGERS = ("csv", "tensorboard", "none")
STRATEGIES = ("auto", "ddp")
# Lightning's precisions (bf16-mixed also runs on the CPU; 16-mixed needs a GPU, Lightning
# turns it into bf16-mixed on the CPU) and their historical aliases
PRECISIONS = (
    "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
    "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16",
)  # fmt: skip


@dataclass
class TrainerSettings:
    """Lightning settings shared by the supernet and final trainings.

    ``accelerator``: cpu | gpu | auto (gpu needs a visible CUDA device); ``devices``:
    processes per node with ``strategy=ddp`` (GPUs, or CPU processes); ``strategy``:
    auto (one process) | ddp (one process per device; gloo on CPU, NCCL on GPU; started
    by Lightning, torchrun or SLURM); ``num_nodes``: machines with ddp;
    ``sync_batchnorm``: with ddp, batch statistics over the global batch; ``logger``:
    csv | tensorboard (needs the tensorboard package) | none; ``gradient_clip_val``:
    clip the gradient norm to this (None: no clipping); ``precision``: Lightning's
    (``32-true``; ``bf16-mixed`` autocasts on the CPU or a GPU); ``log_every_n_steps``:
    training-step metrics every n steps (epoch means always); ``checkpoint_every_n_steps``:
    the trainings keep ``<stage>/checkpoints/last*.ckpt`` (model, optimizer, phase,
    pools, data position, every RNG state), written atomically at every epoch end and
    every n optimizer steps, so a run killed (even with kill -9) resumes with the same
    results; 0 or None: epoch ends only (it may change between resumes)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    sync_batchnorm: bool = True
    precision: int | str = "32-true"
    logger: str = "csv"
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    deterministic: bool = True
    checkpoint_every_n_steps: int | None = 50

    @classmethod
    def of(cls, cfg: TrainerSettings | Mapping[str, Any]) -> TrainerSettings:
        """``cfg`` itself, or the settings of a ``trainer`` mapping (a config node);
        an unknown key is a one-line ``ValueError`` listing the valid ones."""
        if isinstance(cfg, TrainerSettings):
            return cfg
        raw = to_plain(cfg)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown trainer key(s) {unknown}; valid keys are {known}")
        return cls(**raw)

    @property
    def multi_process(self) -> bool:
        """Whether the trainings run as several processes."""
        return (
            self.strategy == "ddp"
            or str(self.devices) not in ("1", "[0]")
            or int(self.num_nodes) > 1
        )

    def validate(self) -> None:
        """ValueError naming ``trainer.<key>`` for the first value out of range (whether
        a GPU is visible and the tensorboard package installed: :meth:`check`)."""
        check_choice("trainer.accelerator", self.accelerator, ACCELERATORS)
        if is_int(self.devices) and self.devices < 1:
            raise ValueError(
                f"trainer.devices={self.devices!r} must be >= 1; use 1, a count, or auto"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"trainer.strategy={self.strategy!r}: choose one of {list(STRATEGIES)} "
                "(ddp: one process per device, started by Lightning, torchrun or SLURM)"
            )
        if not is_int(self.num_nodes) or self.num_nodes < 1:
            raise ValueError(f"trainer.num_nodes={self.num_nodes!r} must be an integer >= 1")
        check_bool("trainer.sync_batchnorm", self.sync_batchnorm)
        if str(self.precision) not in PRECISIONS:
            raise ValueError(
                f"trainer.precision={self.precision!r}: choose one of {list(PRECISIONS[:6])} "
                "(bf16-mixed runs on the CPU too)"
            )
        check_choice("trainer.logger", self.logger, LOGGERS)
        clip = self.gradient_clip_val
        if clip is not None:
            check_finite("trainer.gradient_clip_val", clip)
            if clip <= 0:
                raise ValueError(
                    f"trainer.gradient_clip_val={clip!r} must be a number > 0 or null; "
                    "use null for no clipping"
                )
        if not is_int(self.log_every_n_steps) or self.log_every_n_steps < 1:
            raise ValueError(
                f"trainer.log_every_n_steps={self.log_every_n_steps!r} must be an integer >= 1"
            )
        check_bool("trainer.deterministic", self.deterministic)
        n = self.checkpoint_every_n_steps
        if n is not None and (not is_int(n) or n < 0):
            raise ValueError(
                f"trainer.checkpoint_every_n_steps={n!r} must be an integer >= 0 "
                "(0 or null: checkpoints at epoch ends only)"
            )

    def check(self) -> None:
        """:meth:`validate`, then what the machine must offer: a visible CUDA device for
        a GPU accelerator, the tensorboard package for its logger."""
        self.validate()
        if self.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"trainer.accelerator={self.accelerator} but no CUDA device is visible: "
                "use trainer.accelerator=cpu"
            )
        if self.logger == "tensorboard" and not any(
            importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
        ):
            raise ValueError(
                "trainer.logger=tensorboard needs the tensorboard package: "
                "pip install tensorboard, or use trainer.logger=csv"
            )


def multi_process(cfg: TrainerSettings | Mapping[str, Any]) -> bool:
    """Whether the ``trainer`` settings train with several processes."""
    return TrainerSettings.of(cfg).multi_process


def check_trainer_config(cfg: TrainerSettings | Mapping[str, Any]) -> None:
    """Raise a one-line ``ValueError`` naming the ``trainer.*`` key and the fix."""
    TrainerSettings.of(cfg).check()
