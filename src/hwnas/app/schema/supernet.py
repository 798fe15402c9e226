"""Schema of the ``supernet`` group (stage 2: progressive shrinking).

The defaults are those of ``supernet=progressive`` (Once-for-All order: train the
largest net, then open the kernel, depth and width dimensions one phase at a time);
``conf/supernet/<option>.yaml`` keep only what differs from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hwnas.app.schema.base import (
    check_batches,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_range,
    check_str_list,
)

# supernet.teacher (hwnas.training.supernet.TEACHERS)
TEACHERS = ("inplace", "frozen")
# supernet.optimizer, final.optimizer (hwnas.training.optim.OPTIMIZERS)
OPTIMIZERS = ("sgd", "adamw")
# supernet.importance (hwnas.training.importance.IMPORTANCE)
IMPORTANCE = ("magnitude", "loss")


@dataclass
class PhaseConfig:
    """One progressive-shrinking phase (an entry of ``supernet.phases``).

    - ``name``: its name in logs, checkpoints and the report.
    - ``elastic``: the elastic groups the phase samples (``kernel``, ``depth``,
      ``width``; transformers: ``depth``, ``heads``, ``mlp``, ``embed``); the others stay
      at their largest choice. ``[]`` trains the largest net only.
    - ``epochs``: epochs of the phase (0 skips it).
    - ``lr``: its peak learning rate, cosine-decayed within the phase (after
      ``supernet.warmup_fraction`` of linear warm-up).

    The defaults (one epoch of the largest net at lr 0.1) only make ``PhaseConfig()``
    build; a phase in a config gives all four.
    """

    name: str = "largest"
    elastic: list[str] = field(default_factory=list)
    epochs: int = 1
    lr: float = 0.1

    def validate(self, where: str = "supernet.phases[0]") -> None:
        """ValueError naming ``<where>.<key>`` for a value out of range."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"{where}.name={self.name!r}: give the phase a name")
        check_str_list(f"{where}.elastic", self.elastic)
        check_int(f"{where}.epochs", self.epochs, 0, "use 0 (skip the phase) or more")
        check_positive(f"{where}.lr", self.lr)


def _progressive_phases() -> list[PhaseConfig]:
    return [
        PhaseConfig(name="largest", elastic=[], epochs=2, lr=0.1),
        PhaseConfig(name="kernel", elastic=["kernel"], epochs=1, lr=0.03),
        PhaseConfig(name="depth", elastic=["kernel", "depth"], epochs=1, lr=0.03),
        PhaseConfig(name="width", elastic=["kernel", "depth", "width"], epochs=1, lr=0.03),
    ]


@dataclass
class SupernetConfig:
    """Progressive shrinking of the elastic supernet (``supernet.*``).

    - ``phases``: the phases in order (:class:`PhaseConfig`: name, elastic, epochs, lr).
      Default: Once-for-All's order, largest (2 epochs, lr 0.1), then kernel, depth and
      width (1 epoch each, lr 0.03).
    - ``warmup_fraction``: linear LR warm-up over this fraction of each phase, then
      cosine; in [0, 1).
    - ``num_random``: random subnets per step besides the largest and the smallest (the
      sandwich rule).
    - ``smallest``: false: a step trains the largest and ``num_random`` subnets only.
    - ``pool_size``: the zero-shot pool each phase samples its random subnets from.
    - ``pool_within_cap``: true: the between-phase searches keep to the latency cap of
      ``search.max_latency_ratio``, so the pool (the random subnets each step trains)
      lies where stage search will choose.
    - ``search_budget``: DE-Score evaluations per between-phase search.
    - ``teacher``: inplace: distil from the largest subnet of the same step | frozen:
      from a frozen copy of the largest taken when the first elastic phase starts
      (saved as ``supernet/teacher.pt``).
    - ``kd_temperature``: distillation temperature (> 0).
    - ``kd_alpha``: weight of distillation in the smaller subnets' loss, in [0, 1]; 1 =
      pure distillation.
    - ``kd_hidden``: > 0 (transformers): the smaller subnets' encoder layers also learn
      the teacher's layer outputs (DynaBERT), this weight times the sum over layers of
      their mean squared error.
    - ``label_smoothing``: of the task loss, in [0, 1).
    - ``optimizer``: sgd (Nesterov) | adamw (momentum is then beta1).
    - ``momentum``, ``weight_decay``: of the optimizer.
    - ``importance``: how heads / FFN units are ordered before width first shrinks
      (transformers): magnitude (weight L1 norms) | loss (DynaBERT: first-order loss
      change without each, on training windows).
    - ``importance_samples``: training samples ``importance=loss`` measures the loss on.
    - ``calib_samples``: BN recalibration samples before every subnet evaluation.
    - ``limit_train_batches``: fraction (<= 1.0) or number of train batches per epoch.
    """

    phases: list[PhaseConfig] = field(default_factory=_progressive_phases)
    warmup_fraction: float = 0.0
    num_random: int = 2
    smallest: bool = True
    pool_size: int = 20
    pool_within_cap: bool = False
    search_budget: int = 60
    teacher: str = "inplace"
    kd_temperature: float = 1.0
    kd_alpha: float = 1.0
    kd_hidden: float = 0.0
    label_smoothing: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 3.0e-5
    importance: str = "magnitude"
    importance_samples: int = 256
    calib_samples: int = 1000
    limit_train_batches: int | float = 0.3

    def validate(self) -> None:
        """ValueError naming ``supernet.<key>`` for the first value out of range."""
        for i, phase in enumerate(self.phases):
            phase.validate(f"supernet.phases[{i}]")
        check_range("supernet.warmup_fraction", self.warmup_fraction, 0.0, 1.0, high_open=True)
        check_int("supernet.num_random", self.num_random, 0)
        check_bool("supernet.smallest", self.smallest)
        if not self.smallest and self.num_random < 1:
            raise ValueError(
                "supernet.smallest=false with supernet.num_random=0 trains the largest "
                "subnet only: set num_random >= 1 or smallest=true"
            )
        check_int("supernet.pool_size", self.pool_size, 1)
        check_bool("supernet.pool_within_cap", self.pool_within_cap)
        check_int("supernet.search_budget", self.search_budget, 1)
        check_choice("supernet.teacher", self.teacher, TEACHERS)
        check_positive("supernet.kd_temperature", self.kd_temperature)
        check_range("supernet.kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_number("supernet.kd_hidden", self.kd_hidden, 0.0, "use 0 (off) or a positive weight")
        check_range("supernet.label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_choice("supernet.optimizer", self.optimizer, OPTIMIZERS)
        check_range("supernet.momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_number("supernet.weight_decay", self.weight_decay, 0.0)
        check_choice("supernet.importance", self.importance, IMPORTANCE)
        check_int("supernet.importance_samples", self.importance_samples, 1)
        check_int("supernet.calib_samples", self.calib_samples, 1)
        check_batches("supernet.limit_train_batches", self.limit_train_batches)
