"""Progressive-shrinking supernet training with the sandwich rule.

Phases (from config) open elastic dimensions one at a time, e.g. largest net ->
+kernel -> +depth -> +width. Every step trains the largest subnet of the phase's space
on the labels, then the smallest (``smallest=False`` leaves it out) and ``num_random``
random subnets (drawn from the phase's zero-shot pool when the
:class:`ZeroShotSearchCallback` provided one) on the largest's soft predictions
(in-place distillation; with ``kd_hidden`` their encoder layers also learn the
largest's layer outputs, :mod:`hwnas.training.hidden`). Gradients of all subnets are
summed and applied once, so DDP sees one backward per step.

With several processes (``trainer.strategy=ddp``) every rank draws the same subnets
(one seed), parameters a step leaves unused are expected (DDP's
``find_unused_parameters``), the elastic batch norms normalise with the global batch's
statistics (:mod:`hwnas.elastic.syncbn`), the between-phase search runs on rank zero
and its pool is broadcast, and only rank zero writes files.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from hwnas.core import atomic
from hwnas.elastic import syncbn
from hwnas.elastic.base import ElasticModel
from hwnas.spaces.base import Arch, SearchSpace
from hwnas.tasks.base import (
    Task,
    distill_loss,  # noqa: F401  (re-exported)
)
from hwnas.tasks.classification import Classification
from hwnas.training.bn import recalibrate_bn
from hwnas.training.finite import agreement, check_loss
from hwnas.training.hidden import captured, hidden_layers, hidden_loss
from hwnas.training.importance import check_importance, loss_saliency
from hwnas.training.optim import batch_size as _batch_size
from hwnas.training.optim import check_optimizer, make_optimizer, warmup_cosine
from hwnas.training.optim import detach as _detach

log = logging.getLogger(__name__)

# Whom the smaller subnets distil from: "inplace" = the largest subnet of the same step
# (trained alongside them); "frozen" = a frozen copy of the largest taken when the first
# elastic phase starts (for a converted pretrained model: the fine-tuned original).
TEACHERS = ("inplace", "frozen")


def check_sandwich(smallest: bool, num_random: int) -> None:
    """ValueError unless a step trains some subnet besides the largest."""
    if not smallest and num_random < 1:
        raise ValueError(
            "supernet.smallest=false with supernet.num_random=0 trains the largest "
            "subnet only: set num_random >= 1 or smallest=true"
        )


@dataclass(frozen=True)
class Phase:
    """One progressive-shrinking phase: which elastic groups vary, for how long."""

    name: str
    elastic: tuple[str, ...]
    epochs: int
    lr: float


class SupernetModule(L.LightningModule):
    def __init__(
        self,
        model: ElasticModel,
        phases: Sequence[Phase],
        num_random: int = 2,
        kd_temperature: float = 1.0,
        kd_alpha: float = 1.0,
        label_smoothing: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 3e-5,
        seed: int = 0,
        calibration: Callable[[], DataLoader] | None = None,
        calib_samples: int = 1000,
        task: Task | None = None,
        optimizer: str = "sgd",
        teacher: str = "inplace",
        teacher_path: str | Path | None = None,
        sync_batchnorm: bool = True,
        warmup_fraction: float = 0.0,
        smallest: bool = True,
        kd_hidden: float = 0.0,
        importance: str = "magnitude",
        importance_data: Callable[[], Iterable] | None = None,
    ):
        super().__init__()
        if not phases:
            raise ValueError("progressive shrinking needs at least one phase")
        check_sandwich(smallest, num_random)
        self.smallest = bool(smallest)
        if kd_hidden < 0:
            raise ValueError(f"supernet.kd_hidden={kd_hidden} must be >= 0")
        if kd_hidden > 0:
            hidden_layers(model, "supernet.kd_hidden")
        self.kd_hidden = float(kd_hidden)
        self.importance = check_importance(importance, model)
        if self.importance == "loss" and importance_data is None:
            raise ValueError("supernet.importance=loss needs importance_data (training batches)")
        self.importance_data = importance_data
        self.model = model
        self.phases = list(phases)
        for p in self.phases:
            model.space.restrict(p.elastic)  # validates the group names early
        self.num_random, self.kd_temperature, self.kd_alpha = num_random, kd_temperature, kd_alpha
        self.label_smoothing, self.momentum, self.weight_decay = (
            label_smoothing,
            momentum,
            weight_decay,
        )
        self.calibration, self.calib_samples = calibration, calib_samples
        self.task = task or Classification(
            model.input_shape, 0, label_smoothing=label_smoothing
        )
        self.optimizer = check_optimizer(optimizer)
        if teacher not in TEACHERS:
            raise ValueError(f"supernet.teacher={teacher!r}: choose one of {list(TEACHERS)}")
        self.teacher_mode = teacher
        self.teacher_path = None if teacher_path is None else Path(teacher_path)
        self._teacher: list[nn.Module] = []  # a list: never a registered submodule
        self.rng = random.Random(seed)  # same seed on every rank: same subnets per step
        # with several processes the elastic batch norms use the global batch statistics
        self.sync_batchnorm = bool(sync_batchnorm)
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"supernet.warmup_fraction={warmup_fraction!r} must be in [0, 1)")
        self.warmup_fraction = float(warmup_fraction)
        self.pools: dict[int, list[Arch]] = {}
        self._entered = -1
        self._val_nets: dict[str, torch.nn.Module] = {}

    # ------------------------------------------------------------------- phases
    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def phase_index(self, epoch: int) -> int:
        start = 0
        for i, p in enumerate(self.phases):
            if epoch < start + p.epochs:
                return i
            start += p.epochs
        return len(self.phases) - 1

    def phase_start(self, i: int) -> int:
        return sum(p.epochs for p in self.phases[:i])

    def phase_space(self, i: int) -> SearchSpace:
        return self.model.space.restrict(self.phases[i].elastic)

    def enter_phase(self, i: int) -> None:
        """Idempotent phase switch: sort channels by importance when width first becomes
        elastic, and drop optimizer state (momentum no longer matches the order)."""
        if i <= self._entered:
            return
        opened = set(self.phases[i].elastic) - set(self.phases[i - 1].elastic if i else ())
        if opened & set(self.model.reorder_groups):
            saliency = None
            if self.importance == "loss":  # DynaBERT: by the loss change, on training data
                saliency = loss_saliency(self.model, self.task, self.importance_data(), self.device)
            self.model.reorganize_by_importance(saliency)
            log.info(
                "phase %s: channels/heads/neurons re-ordered by importance (%s)",
                self.phases[i].name,
                self.importance,
            )
        if self._trainer is not None:
            for opt in self.trainer.optimizers:
                opt.state.clear()
        self._entered = i

    def subnets_for_step(self, i: int) -> list[Arch]:
        """Sandwich rule: largest, smallest (unless ``smallest=False``), then
        ``num_random`` from the pool/space."""
        space = self.phase_space(i)
        pool = self.pools.get(i)
        archs = [space.max_arch()] + ([space.min_arch()] if self.smallest else [])
        archs += [
            self.rng.choice(pool) if pool else space.sample(self.rng)
            for _ in range(self.num_random)
        ]
        return list(dict.fromkeys(archs))  # in order, each arch once

    # ----------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        i = self.phase_index(self.current_epoch)
        if self.teacher_mode == "frozen" and self.phases[i].elastic:
            self.freeze_teacher()
        self.enter_phase(i)

    def on_train_start(self) -> None:
        """A training resumed mid-epoch skips ``on_train_epoch_start``: read the frozen
        teacher back here (the phase itself was restored with the checkpoint)."""
        i = self.phase_index(self.current_epoch)
        if self.teacher_mode == "frozen" and self.phases[i].elastic and self._entered >= i:
            self.freeze_teacher()

    def freeze_teacher(self) -> nn.Module:
        """The frozen teacher: the largest subnet as it is when the first elastic phase
        starts (after phase 0 has fitted it to the data), exported and never trained
        again. Its weights go to ``teacher_path`` on first use and are read back from
        there on a resumed run, so a resume distils from the same teacher."""
        if self._teacher:
            return self._teacher[0]
        net = self.model.export(self.model.space.max_arch())
        path = self.teacher_path
        if path is not None and path.is_file():
            fix = (
                f"delete {path} and the checkpoints beside it ({path.parent / 'checkpoints'}) "
                "and rerun: supernet training then starts again from its first epoch"
            )
            net.load_state_dict(atomic.torch_load(path, fix))
            log.info("supernet: frozen teacher read from %s", path)
        else:
            if path is not None and (self._trainer is None or self.trainer.is_global_zero):
                atomic.torch_save(net.state_dict(), path)
            log.info("supernet: largest subnet frozen as the teacher of the smaller ones")
        net.to(self.device).eval().requires_grad_(False)
        self._teacher.append(net)
        return net

    def _set_lr(self, batch_idx: int) -> float:
        i = self.phase_index(self.current_epoch)
        phase = self.phases[i]
        steps = max(1, self.trainer.num_training_batches)
        done = ((self.current_epoch - self.phase_start(i)) + batch_idx / steps) / phase.epochs
        # linear warm-up at the start of every phase, then cosine decay over its rest
        lr = phase.lr * warmup_cosine(done, self.warmup_fraction, 1.0 / (steps * phase.epochs))
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.sync_batchnorm and self.trainer.world_size > 1:
            with syncbn.plain_batch_norms_synced(self.model), syncbn.synchronised():
                return self._sandwich_step(batch, batch_idx)
        return self._sandwich_step(batch, batch_idx)

    def _sandwich_step(self, batch, batch_idx: int) -> torch.Tensor:
        task = self.task
        inputs, targets = task.split_batch(batch)
        lr = self._set_lr(batch_idx)
        i = self.phase_index(self.current_epoch)
        largest, *others = self.subnets_for_step(i)
        hidden = self.kd_hidden > 0 and bool(others)
        self.model.set_active(largest)
        # the largest's layer outputs are the targets unless the frozen teacher's are
        with captured(self.model, hidden and not self._teacher) as states:
            outputs = self.model(*inputs)
        loss = task.loss(outputs, targets)
        teacher = _detach(outputs)
        if self._teacher and others:  # distil from the frozen original instead
            with torch.no_grad(), captured(self._teacher[0], hidden) as states:
                teacher = self._teacher[0](*inputs)
        total = loss
        for arch in others:
            self.model.set_active(arch)
            with captured(self.model, hidden) as mine:
                out = self.model(*inputs)
            kd = task.distill_loss(out, teacher, self.kd_temperature)
            if self.kd_alpha < 1.0:
                kd = self.kd_alpha * kd + (1.0 - self.kd_alpha) * task.loss(out, targets)
            if hidden:  # the encoder layers' outputs too, layer by layer (DynaBERT)
                kd = kd + self.kd_hidden * hidden_loss(mine, states)
            total = total + kd
        self.model.set_active(largest)
        check_loss(total, lambda: self._diverged(i, batch_idx), agreement(self))
        logged = {"train/loss": loss}
        # a task may leave out what teacher-forced training outputs cannot give (WER)
        primary = task.batch_metrics(_detach(outputs), targets).get(task.primary_metric)
        if primary is not None:
            logged[f"train/{task.primary_metric}_largest"] = primary
        # Step values every trainer.log_every_n_steps, and the epoch means.
        self.log_dict(
            logged,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=_batch_size(inputs),
        )
        self.log_dict({"lr": lr, "phase": float(i)}, on_step=True, on_epoch=False)
        return total

    def _diverged(self, i: int, batch_idx: int) -> tuple[str, str]:
        """Where a non-finite loss of phase ``i`` happened and which learning rate to
        lower (a phase's first step runs on the weights the previous phase left)."""
        phase = self.phases[i]
        lrs = [f"supernet.phases.{i}.lr (now {phase.lr:g})"]
        if batch_idx == 0 and i > 0:
            lrs.insert(0, f"supernet.phases.{i - 1}.lr (now {self.phases[i - 1].lr:g})")
        where = f"supernet phase {i} ({phase.name}), epoch {self.current_epoch}, step " + str(
            self.trainer.global_step
        )
        return where, f"lower {' or '.join(lrs)} or check the data"

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # BN affine params and the identity-initialised kernel transforms are not decayed.
            (no_decay if p.ndim <= 1 or "transforms" in name else decay).append(p)
        return make_optimizer(
            self.optimizer, decay, no_decay, self.phases[0].lr, self.momentum, self.weight_decay
        )

    # --------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        """Export the phase's largest and smallest subnets and recalibrate their BN (one
        network when they are the same arch, as in a phase with nothing elastic).

        Building a network draws initial weights from the global RNG: the exports run
        on a forked RNG, so how often the supernet is validated never changes what it
        trains (the dropout masks of the next steps)."""
        i = self.phase_index(self.current_epoch)
        space = self.phase_space(i)
        self._val_nets = {}
        largest, smallest = space.max_arch(), space.min_arch()
        with torch.random.fork_rng(devices=[]):
            for tag, arch in (("largest", largest), ("smallest", smallest)):
                if tag == "smallest" and arch == largest:
                    self._val_nets[tag] = self._val_nets["largest"]
                    continue
                net = self.model.export(arch).to(self.device)
                if self.calibration is not None:
                    recalibrate_bn(net, self.calibration(), self.calib_samples, self.device)
                self._val_nets[tag] = net.eval()

    def validation_step(self, batch, batch_idx: int) -> None:
        task = self.task
        inputs, targets = task.split_batch(batch)
        scored: dict[int, float | None] = {}  # one pass per distinct network
        for tag, net in self._val_nets.items():
            if id(net) not in scored:
                with torch.no_grad():
                    metrics = task.batch_metrics(net(*inputs), targets)
                scored[id(net)] = metrics.get(task.primary_metric)
            value = scored[id(net)]
            if value is None:
                continue
            self.log(
                f"val/{task.primary_metric}_{tag}",
                value,
                prog_bar=True,
                batch_size=_batch_size(inputs),
                sync_dist=True,
            )

    # --------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Pools, the phase entered and the subnet sampler's RNG state travel in the
        checkpoint, so a resumed training draws the same subnets."""
        checkpoint["hwnas_pools"] = json.dumps(
            {str(i): [a.to_str() for a in pool] for i, pool in self.pools.items()}
        )
        checkpoint["hwnas_entered"] = self._entered
        checkpoint["hwnas_subnet_rng"] = self.rng.getstate()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        pools = json.loads(checkpoint.get("hwnas_pools", "{}"))
        self.pools = {int(i): [Arch.from_str(s) for s in p] for i, p in pools.items()}
        self._entered = int(checkpoint.get("hwnas_entered", -1))
        if "hwnas_subnet_rng" in checkpoint:
            version, internal, gauss = checkpoint["hwnas_subnet_rng"]
            self.rng.setstate((version, tuple(internal), gauss))
