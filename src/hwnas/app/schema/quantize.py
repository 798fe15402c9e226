"""Schema of the ``quantize`` group (optional stage 5, AutoQ).

Add it after final (``stages=[zero_shot,supernet,search,final,quantize]``), or run
``python -m hwnas.quantize run_dir=<run>`` on a finished run: a precision per conv/linear
layer of the final subnet, deployed with ONNX Runtime (static QDQ: per-channel INT8
weights, activations calibrated on training samples). Sensitivity per layer is measured
(that layer alone INT8, validation accuracy through ORT) and estimated (Hessian trace x
quantization perturbation, HAWQ-v2); the search ranks assignments by the additive
accuracy estimate against the measured latency of the quantized model, then measures the
accuracy of the Pareto front and keeps the fastest within ``max_drop`` of FP32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwnas.app.schema.base import (
    check_batches,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_range,
    check_window,
)
from hwnas.app.schema.run import ConstraintWindow
from hwnas.app.schema.supernet import OPTIMIZERS
from hwnas.core.types import Timing

PRECISIONS = ("int4", "int8", "fp32")  # quantize.choices
RUNTIMES = ("onnxruntime", "openvino")  # quantize.runtime
ESTIMATES = ("hessian", "measured")  # hwnas.app.stages.quantize.ESTIMATES
CALIBRATIONS = ("minmax", "percentile", "entropy")  # hwnas.quantize.onnx_quant
ACTIVATION_TYPES = ("uint8", "int8")  # hwnas.quantize.onnx_quant
QAT_TARGETS = ("chosen", "fastest", "int8")  # hwnas.quantize.qat.QAT_TARGETS


@dataclass
class QuantizeConstraints:
    """Windows on the quantized model (``quantize.constraints.*``), in the usual units;
    each a :class:`~hwnas.app.schema.run.ConstraintWindow` (a bare number given on the
    command line is a max).

    - ``latency_ms``: latency of the quantized model (ONNX Runtime).
    - ``size_mb``: size of the quantized model.
    """

    latency_ms: Any = field(default_factory=ConstraintWindow)
    size_mb: Any = field(default_factory=ConstraintWindow)

    def validate(self) -> None:
        check_window("quantize.constraints.latency_ms", self.latency_ms)
        check_window("quantize.constraints.size_mb", self.size_mb)


@dataclass
class QatConfig:
    """Quantization-aware fine-tuning (``quantize.qat.*``): Lightning, straight-through
    fake quantization of the INT8 layers' weights and inputs as ORT will round them,
    batch norms frozen; then ORT quantizes the fine-tuned weights again. Deployed when
    it is faster than the chosen assignment within ``max_drop``, or the same assignment
    more accurate.

    - ``epochs``: 0: off.
    - ``assignment``: chosen | fastest (the fastest measured, whatever its drop) | int8
      (uniform INT8).
    - ``lr``: peak of the cosine schedule.
    - ``optimizer``: sgd (Nesterov) | adamw.
    - ``momentum``, ``weight_decay``: of the optimizer.
    - ``limit_train_batches``: fraction (or number) of training batches per epoch.
    """

    epochs: int = 0
    assignment: str = "chosen"
    lr: float = 0.001
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    limit_train_batches: int | float = 1.0

    def validate(self) -> None:
        check_int("quantize.qat.epochs", self.epochs, 0, "use 0 (no QAT) or more")
        check_choice("quantize.qat.assignment", self.assignment, QAT_TARGETS)
        check_positive("quantize.qat.lr", self.lr)
        check_choice("quantize.qat.optimizer", self.optimizer, OPTIMIZERS)
        check_range("quantize.qat.momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_number("quantize.qat.weight_decay", self.weight_decay, 0.0)
        check_batches("quantize.qat.limit_train_batches", self.limit_train_batches)


def _nsga2() -> dict[str, Any]:
    return {
        "name": "nsga2",
        "trials": 40,
        "population_size": 12,
        "top_k": 6,
        "cost_key": "latency_ms",
    }


@dataclass
class QuantizeConfig:
    """The precision search (``quantize.*``).

    - ``runtime``: where the quantized model runs and is measured: onnxruntime (static
      QDQ INT8, MatMulNBits INT4; ``model.onnx``) | openvino (NNCF INT8 and INT4 weight
      compression; ``model.xml`` + ``model.bin``; ``pip install 'hwnas[openvino]'``).
    - ``compare``: also deploy FP32, uniform INT8 and the chosen assignment on the other
      runtime when it is installed, side by side in the report.
    - ``choices``: precisions offered per layer: fp32 and int8, and int4 (weight-only,
      offered to the linear layers the runtime has INT4 kernels for: MatMul on ONNX
      Runtime, MatMul/Gemm on OpenVINO; never to convolutions).
    - ``calib_samples``: training samples calibrating the activation ranges.
    - ``calibration``: minmax | percentile | entropy.
    - ``activations``: uint8 (x86 default) | int8.
    - ``reduce_range``: 7-bit weight range for x86 CPUs without VNNI (ORT's advice:
      full-range INT8 saturates there); null = from the CPU flags.
    - ``other_ops``: also quantize the ops between INT8 layers (Add, pooling): fewer
      Q/DQ pairs, faster.
    - ``val_samples``: validation samples for every measured accuracy.
    - ``hessian_samples``: Hutchinson probes (Rademacher vectors), >= 2.
    - ``hessian_batch``: training samples in the loss whose Hessian is traced.
    - ``estimate``: per-layer drop used by the search's estimate: hessian (HAWQ-v2 Omega
      scaled to accuracy by a least-squares fit on the measured drops) | measured (one
      layer at a time).
    - ``max_drop``: the chosen assignment is the fastest with validation drop <= this,
      in [0, 1).
    - ``measure_front``: most Pareto candidates whose accuracy is measured.
    - ``batch_size``, ``threads``, ``warmup``, ``repeats``: latency of a quantized model:
      batch, threads, warm-up and timed runs (median).
    - ``throughput_batch``: batch size of the report's throughput.
    - ``constraints``: :class:`QuantizeConstraints`.
    - ``qat``: :class:`QatConfig`.
    - ``strategy``: any search strategy (evolution | random | nsga2 | tpe), free-form
      here (checked when it is built); default NSGA-II, 40 trials, population 12, top 6,
      against latency_ms.
    """

    runtime: str = "onnxruntime"
    compare: bool = True
    choices: list[str] = field(default_factory=lambda: ["int8", "fp32"])
    calib_samples: int = 512
    calibration: str = "minmax"
    activations: str = "uint8"
    reduce_range: bool | None = None
    other_ops: bool = True
    val_samples: int = 2000
    hessian_samples: int = 32
    hessian_batch: int = 64
    estimate: str = "hessian"
    max_drop: float = 0.005
    measure_front: int = 12
    batch_size: int = Timing.batch_size
    threads: int = Timing.threads
    warmup: int = Timing.warmup
    repeats: int = Timing.repeats
    throughput_batch: int = 256
    constraints: QuantizeConstraints = field(default_factory=QuantizeConstraints)
    qat: QatConfig = field(default_factory=QatConfig)
    strategy: dict[str, Any] = field(default_factory=_nsga2)

    def validate(self) -> None:
        """ValueError naming ``quantize.<key>`` for the first value out of range (the
        strategy's keys are checked when it is built)."""
        check_choice("quantize.runtime", self.runtime, RUNTIMES)
        check_bool("quantize.compare", self.compare)
        choices = list(self.choices)
        bad = [c for c in choices if c not in PRECISIONS]
        if bad or "fp32" not in choices or "int8" not in choices:
            raise ValueError(
                f"quantize.choices={choices}: offer fp32 and int8, optionally int4 "
                "(e.g. [int4,int8,fp32])"
            )
        check_int("quantize.calib_samples", self.calib_samples, 1)
        check_choice("quantize.calibration", self.calibration, CALIBRATIONS)
        check_choice("quantize.activations", self.activations, ACTIVATION_TYPES)
        if self.reduce_range is not None:
            check_bool("quantize.reduce_range", self.reduce_range)
        check_bool("quantize.other_ops", self.other_ops)
        check_int("quantize.val_samples", self.val_samples, 1)
        check_int("quantize.hessian_samples", self.hessian_samples, 2)
        check_int("quantize.hessian_batch", self.hessian_batch, 1)
        check_choice("quantize.estimate", self.estimate, ESTIMATES)
        check_range(
            "quantize.max_drop", self.max_drop, 0.0, 1.0, high_open=True,
            fix="an accuracy drop, e.g. 0.005",
        )  # fmt: skip
        check_int("quantize.measure_front", self.measure_front, 1)
        check_int("quantize.batch_size", self.batch_size, 1)
        check_int("quantize.threads", self.threads, 1)
        check_int("quantize.warmup", self.warmup, 0)
        check_int("quantize.repeats", self.repeats, 1)
        check_int("quantize.throughput_batch", self.throughput_batch, 1)
        self.constraints.validate()
        self.qat.validate()
