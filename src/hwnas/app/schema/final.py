"""Schema of the ``final`` group (stage 4).

The chosen subnet as a standalone ``nn.Module`` (weights copied from the supernet),
fine-tuned, tested, exported and measured beside the reference: the largest subnet,
fine-tuned with the same budget (``finetune_largest``) so the two accuracies are
obtained the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.app.schema.base import (
    check_batches,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_range,
)
from hwnas.app.schema.supernet import OPTIMIZERS

KD_TEACHERS = ("inherited", "finetuned")  # final.kd_teacher
EXPORTS = ("chosen", "front")


@dataclass
class FinalConfig:
    """Fine-tuning, test, export and report of the chosen subnet (``final.*``).

    - ``epochs``: fine-tuning epochs (0: the inherited weights as they are).
    - ``lr``: peak learning rate (cosine schedule).
    - ``optimizer``: sgd (Nesterov) | adamw (momentum is then beta1).
    - ``momentum``, ``weight_decay``: of the optimizer.
    - ``label_smoothing``: of the task loss, in [0, 1).
    - ``limit_train_batches``: fraction (<= 1.0) or number of train batches per epoch.
    - ``warmup_fraction``: linear LR warm-up over this fraction of the steps, then
      cosine; in [0, 1).
    - ``kd_alpha``: distil the chosen subnet from the supernet's largest subnet
      (inherited weights, frozen) while it is fine-tuned: loss = kd_alpha *
      distillation + (1 - kd_alpha) * task loss; 0 = off. The largest subnet (the
      reference) is fine-tuned without a teacher.
    - ``kd_temperature``: distillation temperature (> 0).
    - ``kd_hidden``: > 0 (transformers): the chosen subnet's encoder layers also learn
      the outputs of the largest subnet's layers of the same index (DynaBERT /
      TinyBERT), loss += kd_hidden * the sum over layers of their mean squared error;
      works with or without kd_alpha.
    - ``kd_teacher``: the teacher: inherited (the largest subnet with inherited weights)
      | finetuned (the largest after its own fine-tuning; it is then fine-tuned first;
      needs ``finetune_largest``).
    - ``finetune_largest``: fine-tune the largest subnet too, for the same budget, so the
      two are compared fine-tuned (true; it costs the largest's fine-tuning, the
      longest step of a run), or (false, the default) compare both with inherited
      weights and recalibrated BN, the like-for-like comparison the search itself
      makes, while the chosen subnet is still fine-tuned and deployed (the report
      states both and how each figure was obtained).
    - ``onnx``: also write ``subnet.onnx``.
    - ``throughput_batch``: batch size of the throughput measurement (samples/s).
    - ``export``: chosen (the chosen subnet only, in ``final/``) | front (also every
      point of the search's front, each with a model card, in ``final/front/``).
    - ``finetune``: chosen (only the chosen subnet and the largest are fine-tuned) |
      front (with ``export=front``, every front point is fine-tuned as the chosen one
      is: ``epochs`` each; otherwise they keep inherited weights, and say so).
    - ``require_learned``: a test metric not better than the task's chance level (or
      not finite) ends the run with exit 2 (true), or, for a plumbing run that is not
      meant to learn (the tiny ASR experiment), completes with a report that says so
      and states no speedup or drop (false).
    """

    epochs: int = 2
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 3.0e-5
    label_smoothing: float = 0.0
    limit_train_batches: int | float = 1.0
    warmup_fraction: float = 0.0
    kd_alpha: float = 0.0
    kd_temperature: float = 1.0
    kd_hidden: float = 0.0
    kd_teacher: str = "inherited"
    finetune_largest: bool = False
    onnx: bool = True
    throughput_batch: int = 256
    require_learned: bool = True
    export: str = "chosen"
    finetune: str = "chosen"

    def validate(self) -> None:
        """ValueError naming ``final.<key>`` for the first value out of range."""
        check_int("final.epochs", self.epochs, 0, "use 0 (no fine-tuning) or more")
        check_positive("final.lr", self.lr)
        check_choice("final.optimizer", self.optimizer, OPTIMIZERS)
        check_range("final.momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_number("final.weight_decay", self.weight_decay, 0.0)
        check_range("final.label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_batches("final.limit_train_batches", self.limit_train_batches)
        check_range("final.warmup_fraction", self.warmup_fraction, 0.0, 1.0, high_open=True)
        check_range("final.kd_alpha", self.kd_alpha, 0.0, 1.0, fix="use 0 (off) up to 1")
        check_positive("final.kd_temperature", self.kd_temperature)
        check_number("final.kd_hidden", self.kd_hidden, 0.0, "use 0 (off) or a positive weight")
        check_choice("final.kd_teacher", self.kd_teacher, KD_TEACHERS)
        check_bool("final.finetune_largest", self.finetune_largest)
        if self.kd_teacher == "finetuned" and not self.finetune_largest:
            raise ValueError(
                "final.kd_teacher=finetuned needs final.finetune_largest=true (the teacher is "
                "the fine-tuned largest subnet): set it, or kd_teacher=inherited"
            )
        check_bool("final.onnx", self.onnx)
        check_int("final.throughput_batch", self.throughput_batch, 1)
        check_choice("final.export", self.export, EXPORTS)
        check_choice("final.finetune", self.finetune, EXPORTS)
        check_bool("final.require_learned", self.require_learned)
