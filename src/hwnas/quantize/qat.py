"""Quantization-aware fine-tuning (QAT) of a precision assignment, in Lightning.

The INT8 layers of an assignment train with the rounding ONNX Runtime will apply
(straight-through estimator: the forward pass rounds, the backward pass lets the
gradient through where the value lies inside the range), so the weights settle where
rounding hurts least; the fine-tuned FP32 weights are then exported and quantized by
ONNX Runtime exactly as before (:func:`hwnas.quantize.onnx_quant.quantize_assignment`).

What is simulated, matching ORT's static QDQ scheme (:class:`QuantSettings`):

- **weights** of each INT8 layer: symmetric, one scale per output channel =
  ``max|w| / qmax``, ``qmax`` 127, or 64 with ``reduce_range`` (ORT's 7-bit range
  ``[-64, 64]``). BatchNorm is frozen (its running statistics and the eval-mode
  normalisation; its affine parameters still train), so the folded weight ORT
  quantizes is the conv weight times a fixed per-channel factor, and per-channel
  symmetric rounding commutes with that factor: rounding the unfolded weight here
  is rounding the folded one there;
- **activations** entering each INT8 layer: per tensor, ``uint8`` asymmetric
  (``[0, 255]``, range widened to hold 0) or ``int8`` symmetric (``[-127, 127]``),
  with the min/max range of the calibration batches on the current weights, as ORT's
  MinMax calibration computes it; ranges are recalibrated at the start of every epoch
  and kept in the checkpoint (a resumed training uses the same ranges).

Not simulated: the INT32 bias and the requantization of the layers' outputs and of
the ops between them (``other_ops``); ORT's ``percentile``/``entropy`` calibrations
are approximated by min/max during training (ORT calibrates the final model with the
configured method).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from hwnas.training.settings import TrainerSettings
from hwnas.training.subnet import SubnetModule

log = logging.getLogger(__name__)

QAT_TARGETS = ("chosen", "fastest", "int8")


def weight_qmax(reduce_range: bool) -> int:
    """The largest INT8 weight level ORT uses: 127 (symmetric ``[-127, 127]``) or 64
    (``reduce_range``: ``[-64, 64]``)."""
    return 64 if reduce_range else 127


class WeightFakeQuant(nn.Module):
    """Parametrization: symmetric per-output-channel quantize-dequantize of a weight
    (straight-through gradient); ``enabled = False`` passes the weight unchanged."""

    def __init__(self, qmax: int):
        super().__init__()
        self.qmax = int(qmax)
        self.enabled = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        flat = w.detach().reshape(w.shape[0], -1)
        amax = flat.abs().amax(dim=1).float()
        scale = torch.where(amax > 0, amax / self.qmax, torch.ones_like(amax))
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)


def activation_qparams(lo: float, hi: float, activations: str) -> tuple[float, int, int, int]:
    """``(scale, zero_point, qmin, qmax)`` of a per-tensor activation range, as ORT
    computes them: the range widened to hold 0; ``uint8`` asymmetric over ``[0, 255]``,
    ``int8`` symmetric over ``[-127, 127]`` (zero point 0). A zero range gives scale 1."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if activations == "int8":
        amax = max(-lo, hi)
        scale = 2 * amax / 254 if amax > 0 else 1.0
        return scale, 0, -127, 127
    if activations != "uint8":
        raise ValueError(f"activations {activations!r}: choose uint8 or int8")
    if hi - lo <= 0:
        return 1.0, 0, 0, 255
    scale = (hi - lo) / 255
    zero = int(min(255, max(0, round(-lo / scale))))
    return scale, zero, 0, 255


class FakeQuantizer:
    """Fake quantization of the INT8 layers of ``assignment`` (``{layer: precision}``)
    on ``net``: weight parametrizations and input pre-hooks. ``ranges`` (``[layers, 2]``
    min/max of each layer's input) is a tensor the caller may keep in a checkpoint.

    ``observing()`` turns every fake quantization off and records input ranges (the
    FP32 model, as ORT calibrates); :meth:`remove` restores plain layers holding the
    fine-tuned FP32 weights."""

    def __init__(
        self,
        net: nn.Module,
        assignment: Mapping[str, str],
        reduce_range: bool,
        activations: str = "uint8",
    ):
        modules = dict(net.named_modules())
        self.names = [n for n, p in assignment.items() if p == "int8"]
        missing = [n for n in self.names if n not in modules]
        if missing:
            raise KeyError(f"the model has no layers {missing} named in the assignment")
        activation_qparams(0.0, 1.0, activations)  # checks the type
        self.net, self.activations = net, activations
        self.layers = [modules[n] for n in self.names]
        self.ranges = torch.zeros(len(self.names), 4)
        self.observe = False
        self._weights = [WeightFakeQuant(weight_qmax(reduce_range)) for _ in self.layers]
        for layer, fq in zip(self.layers, self._weights, strict=True):
            parametrize.register_parametrization(layer, "weight", fq)
        self._hooks = [
            layer.register_forward_pre_hook(self._input_hook(i))
            for i, layer in enumerate(self.layers)
        ]
        self._outputs_hooked = False

    def _fake(self, x: torch.Tensor, i: int, col: int) -> torch.Tensor:
        """Observe (calibration) or fake-quantize ``x`` with range ``ranges[i, col:col+2]``."""
        if self.observe:
            r = self.ranges[i]
            r[col] = min(float(r[col]), float(x.detach().min()))
            r[col + 1] = max(float(r[col + 1]), float(x.detach().max()))
            return x
        lo, hi = float(self.ranges[i, col]), float(self.ranges[i, col + 1])
        scale, zero, qmin, qmax = activation_qparams(lo, hi, self.activations)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)

    def _input_hook(self, i: int):
        def hook(_module: nn.Module, args: tuple) -> tuple:
            return (self._fake(args[0], i, 0), *args[1:])

        return hook

    def _output_hook(self, i: int):
        layer = self.layers[i]

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            if module is layer and isinstance(layer, nn.Linear) and layer.bias is not None:
                if args[0].dim() > 2:  # exported as MatMul, then Add: ORT quantizes before the bias
                    return self._fake(out - layer.bias, i, 2) + layer.bias
            return self._fake(out, i, 2)

        return hook

    @contextmanager
    def _observing(self) -> Iterator[None]:
        """Fake quantization off (inputs and outputs observed into ``ranges``), the
        model in eval mode; all restored after."""
        training = self.net.training
        self.observe = True
        for fq in self._weights:
            fq.enabled = False
        try:
            self.net.eval()
            yield
        finally:
            self.observe = False
            for fq in self._weights:
                fq.enabled = True
            self.net.train(training)

    def _feed(self, batch: Any) -> tuple:
        device = next(self.net.parameters()).device
        inputs = batch if isinstance(batch, (tuple, list)) else (batch,)
        return tuple(t.to(device) for t in inputs)

    @torch.no_grad()
    def attach(self, batch: Any) -> None:
        """Place the output fake quantization (:meth:`_hook_outputs`) with one model-input
        ``batch``, leaving the ranges as they are (e.g. restored from a checkpoint);
        :meth:`calibrate` does it on its first call."""
        if self._outputs_hooked:
            return
        saved = self.ranges.clone()
        try:
            with self._observing():
                self._hook_outputs(self._feed(batch))
        finally:
            self.ranges.copy_(saved)

    def _hook_outputs(self, inputs: tuple) -> None:
        """Fake-quantize each INT8 layer's output where ORT quantizes it: after the
        BatchNorm that takes the layer's output directly (folded into it on export),
        else the layer's own output. Found by running ``inputs`` once and matching the
        tensors the layers return with those the batch norms receive."""
        owners: list[nn.Module] = list(self.layers)
        produced: dict[int, tuple[int, torch.Tensor]] = {}

        def record(i: int):
            def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
                produced[id(out)] = (i, out)  # the tensor is kept: its id stays unique

            return hook

        def consume(bn: nn.Module):
            def hook(_m: nn.Module, args: tuple) -> None:
                if id(args[0]) in produced:
                    owners[produced[id(args[0])][0]] = bn

            return hook

        norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        probes = [layer.register_forward_hook(record(i)) for i, layer in enumerate(self.layers)]
        probes += [bn.register_forward_pre_hook(consume(bn)) for bn in norms]
        try:
            self.net(*inputs)
        finally:
            for h in probes:
                h.remove()
        self._hooks += [m.register_forward_hook(self._output_hook(i)) for i, m in enumerate(owners)]
        self._outputs_hooked = True

    @torch.no_grad()
    def calibrate(self, batches: Sequence[Any]) -> None:
        """Input and output ranges of every INT8 layer: min/max over ``batches`` (model
        inputs) with fake quantization off and the model in eval mode (restored after)."""
        feeds = [self._feed(b) for b in batches]
        if not feeds:
            raise ValueError("calibration needs at least one batch")
        self.attach(feeds[0])
        with self._observing():
            empty = torch.tensor([[float("inf"), float("-inf")] * 2])
            self.ranges.copy_(empty.expand_as(self.ranges))
            for inputs in feeds:
                self.net(*inputs)
        unseen = [n for n, r in zip(self.names, self.ranges, strict=True) if r[0] > r[1]]
        if unseen:
            raise ValueError(f"layers {unseen} never ran on the calibration batches")

    def remove(self) -> nn.Module:
        """Remove hooks and parametrizations (keeping the trained FP32 weights)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for layer in self.layers:
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        return self.net


def freeze_batch_norms(net: nn.Module) -> None:
    """Every BatchNorm of ``net`` in eval mode (running statistics used and kept)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class QatModule(SubnetModule):
    """:class:`SubnetModule` over a fake-quantized net: batch norms stay frozen, the
    activation ranges are recalibrated (on ``calib``) at the first batch of every
    epoch and saved with the module (buffer ``act_ranges``); ``val/<metric>`` is the
    simulated INT8 model's."""

    def __init__(self, net: nn.Module, fq: FakeQuantizer, calib: Sequence[Any], epochs: int,
                 **kw: Any):  # fmt: skip
        super().__init__(net, epochs, **{"stage": "quantize.qat", **kw})
        self.fq, self.calib = fq, list(calib)
        self.register_buffer("act_ranges", fq.ranges)

    def train(self, mode: bool = True) -> QatModule:
        super().train(mode)
        if mode:
            freeze_batch_norms(self.net)
        return self

    def on_fit_start(self) -> None:
        self.fq.ranges = self.act_ranges  # the restored buffer on a resume
        self.fq.attach(self.calib[0])  # output rounding in place even mid-epoch
        self.train()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.fq.calibrate(self.calib)
            self.train()


def check_qat_config(qat: Mapping[str, Any]) -> None:
    """One-line errors for a bad ``quantize.qat`` node."""
    from hwnas.training.optim import check_optimizer

    if int(qat["epochs"]) < 0:
        raise ValueError(f"quantize.qat.epochs={qat['epochs']} must be >= 0 (0: no QAT)")
    if qat["assignment"] not in QAT_TARGETS:
        raise ValueError(
            f"quantize.qat.assignment={qat['assignment']!r}: choose one of {list(QAT_TARGETS)}"
        )
    if float(qat["lr"]) <= 0:
        raise ValueError(f"quantize.qat.lr={qat['lr']} must be > 0")
    lim = float(qat["limit_train_batches"])
    if lim <= 0:
        raise ValueError(f"quantize.qat.limit_train_batches={lim} must be > 0")
    check_optimizer(str(qat["optimizer"]))


def single_process(trainer_cfg: TrainerSettings | Mapping[str, Any]) -> TrainerSettings:
    """The trainer settings for a training the quantize stage runs on its own (rank
    zero): one device, one node, no DDP."""
    return replace(TrainerSettings.of(trainer_cfg), devices=1, num_nodes=1, strategy="auto")


def qat_finetune(
    net: nn.Module,
    assignment: Mapping[str, str],
    dm: Any,
    qat: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    folder: str | Path,
    calib: Sequence[Any],
    reduce_range: bool,
    activations: str = "uint8",
    progress: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A copy of ``net`` fine-tuned for ``qat.epochs`` with the INT8 layers of
    ``assignment`` fake-quantized (see the module doc), on CPU and in eval mode, as a
    plain module holding FP32 weights. The training keeps
    ``folder/checkpoints/last.ckpt`` and resumes from it."""
    from hwnas.search.journal import weights_digest
    from hwnas.training.trainer import build_trainer, fit

    check_qat_config(qat)
    folder = Path(folder)
    tuned = copy.deepcopy(net).to("cpu")
    key = f"qat:{sorted(assignment.items())}:{weights_digest(tuned)}"
    fq = FakeQuantizer(tuned, assignment, reduce_range, activations)
    module = QatModule(
        tuned, fq, calib, int(qat["epochs"]), lr=float(qat["lr"]),
        momentum=float(qat["momentum"]), weight_decay=float(qat["weight_decay"]),
        task=dm.task(), optimizer=str(qat["optimizer"]),
    )  # fmt: skip
    trainer = build_trainer(
        single_process(trainer_cfg), folder, max_epochs=int(qat["epochs"]), log_name="logs",
        title="quantization-aware fine-tuning",
        limit_train_batches=qat["limit_train_batches"],
        checkpoint=folder / "checkpoints" / "last.ckpt", checkpoint_key=key,
        **dict(progress or {}),
    )  # fmt: skip
    with warnings.catch_warnings():  # the frozen batch norms are meant to be in eval mode
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        fit(trainer, module, dm)
    return fq.remove().to("cpu").eval()


__all__ = [
    "QAT_TARGETS",
    "FakeQuantizer",
    "QatModule",
    "WeightFakeQuant",
    "activation_qparams",
    "check_qat_config",
    "freeze_batch_norms",
    "qat_finetune",
    "single_process",
    "weight_qmax",
]
