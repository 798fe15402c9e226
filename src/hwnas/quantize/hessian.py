"""Per-layer Hessian traces (Hutchinson) and HAWQ-v2 quantization sensitivity.

The trace of the Hessian block of the loss w.r.t. one layer's weight tells how sharply
the loss curves around the trained weights there: HAWQ-v2 (Dong et al., NeurIPS'20)
ranks layers for lower precision by ``Omega = Tr(H) / n * ||Q(W) - W||^2``, the average
curvature times the size of the quantization perturbation.

Hutchinson: for Rademacher ``v`` (entries +-1), ``E[v^T H v] = Tr(H)``. ``H v`` comes
from double backprop (the gradient of ``g . v`` where ``g`` is the gradient built with
``create_graph=True``), so ``H`` is never formed. ``mode="block"`` takes one
Hessian-vector product per layer and sample (``v`` lives on that layer only: exactly
the diagonal block); ``mode="joint"`` one per sample for all layers together (``v`` on
every layer; the cross-layer terms vanish in expectation but add variance). Both are
unbiased; each estimate comes with its standard error over the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwnas.quantize.layers import quantizable_layers

# ``loss_fn(model, batch) -> scalar``: the loss of one data batch (see :func:`task_loss`)
LossFn = Callable[[nn.Module, Any], torch.Tensor]
PRECISION_BITS = {"int4": 4, "int8": 8}
MODES = ("block", "joint")


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of one layer's Hessian trace: mean over ``samples`` probes
    and its standard error (sample std / sqrt(samples))."""

    mean: float
    stderr: float
    samples: int


def task_loss(task: Any) -> LossFn:
    """A :data:`LossFn` from a :class:`hwnas.tasks.Task`: split the batch, run the model,
    apply the task's :meth:`~hwnas.tasks.Task.curvature_loss` (its training loss, less
    any term whose backward has no derivative)."""

    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = task.split_batch(batch)
        return task.curvature_loss(model(*inputs), targets)

    return loss_fn


def _weights(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Parameter]:
    names = [layer.name for layer in quantizable_layers(model)] if layers is None else layers
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"model has no layers {missing}")
    return {n: modules[n].weight for n in names}


def double_backward_attention() -> AbstractContextManager:
    """Scaled dot-product attention on its math kernel, whose backward is itself
    differentiable: the fused CPU kernels (flash, memory-efficient) have no derivative
    of their backward, so a Hessian-vector product through attention needs this."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    v = torch.randint(0, 2, like.shape, generator=gen, dtype=torch.int8)
    return (v.to(like.dtype) * 2 - 1).to(like.device)


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    layers: Sequence[str] | None = None,
    samples: int = 32,
    seed: int = 0,
    mode: str = "block",
) -> dict[str, TraceEstimate]:
    """Hutchinson estimate of ``Tr(d^2 L / dW_l^2)`` for each layer ``l`` (qualified
    names; default every quantizable layer), ``L`` the mean of ``loss_fn`` over
    ``batches``. ``samples`` Rademacher probes (>= 2) from a generator seeded with
    ``seed``; the same probes serve every batch. The model runs in eval mode (its mode
    and ``requires_grad`` flags are restored) and is not changed."""
    if samples < 2:
        raise ValueError(f"need samples >= 2 for a standard error, got {samples}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {list(MODES)}")
    weights = _weights(model, layers)
    batches = list(batches)
    if not batches:
        raise ValueError("hutchinson_trace: no batches")
    gen = torch.Generator().manual_seed(seed)
    probes = [{n: _rademacher(w, gen) for n, w in weights.items()} for _ in range(samples)]
    per_sample = torch.zeros(samples, len(weights), dtype=torch.float64)  # (S, L)
    was_training = model.training
    flags = {n: w.requires_grad for n, w in weights.items()}
    model.eval()
    try:
        for w in weights.values():
            w.requires_grad_(True)
        params = list(weights.values())
        for batch in batches:
            with double_backward_attention():
                loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for s, probe in enumerate(probes):
                vs = [probe[n] for n in weights]
                if mode == "joint":
                    dot = sum((g * v).sum() for g, v in zip(grads, vs))
                    hvs = torch.autograd.grad(dot, params, retain_graph=True)
                    for j, (hv, v) in enumerate(zip(hvs, vs)):
                        per_sample[s, j] += float((hv * v).sum())
                    continue
                for j, (g, v, w) in enumerate(zip(grads, vs, params)):
                    (hv,) = torch.autograd.grad((g * v).sum(), w, retain_graph=True)
                    per_sample[s, j] += float((hv * v).sum())
    finally:
        model.train(was_training)
        for n, w in weights.items():
            w.requires_grad_(flags[n])
    per_sample /= len(batches)
    mean = per_sample.mean(0)
    stderr = per_sample.std(0, unbiased=True) / math.sqrt(samples)
    return {
        n: TraceEstimate(float(mean[j]), float(stderr[j]), samples) for j, n in enumerate(weights)
    }


def exact_trace(model: nn.Module, loss_fn: LossFn, batches: Iterable[Any], layer: str) -> float:
    """The exact trace of the Hessian block of one layer (one backward per weight
    element: tiny layers only, for testing the estimator)."""
    (weight,) = _weights(model, [layer]).values()
    batches = list(batches)
    was_training, flag = model.training, weight.requires_grad
    model.eval()
    weight.requires_grad_(True)
    total = 0.0
    try:
        for batch in batches:
            with double_backward_attention():
                loss = loss_fn(model, batch)
            (g,) = torch.autograd.grad(loss, weight, create_graph=True)
            flat = g.reshape(-1)
            for i in range(flat.numel()):
                (row,) = torch.autograd.grad(flat[i], weight, retain_graph=True)
                total += float(row.reshape(-1)[i])
    finally:
        model.train(was_training)
        weight.requires_grad_(flag)
    return total / len(batches)


def fake_quantize_weight(weight: torch.Tensor, bits: int = 8, axis: int = 0) -> torch.Tensor:
    """Symmetric per-channel quantize-dequantize of ``weight`` to signed ``bits``:
    one scale per slice along ``axis`` (output channels) = max|w| / (2^(bits-1) - 1),
    values rounded to the nearest level in ``[-qmax, qmax]`` (narrow range, zero point
    0, as ONNX Runtime quantizes INT8 weights). An all-zero channel stays zero."""
    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach()
    dims = [d for d in range(w.dim()) if d != axis % max(w.dim(), 1)]
    amax = w.abs().amax(dim=dims, keepdim=True) if dims else w.abs()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


def quantization_error(weight: torch.Tensor, bits: int = 8) -> float:
    """``||Q(W) - W||_2^2`` for :func:`fake_quantize_weight`."""
    return float(((fake_quantize_weight(weight, bits) - weight.detach()) ** 2).sum())


def hawq_sensitivity(
    model: nn.Module,
    traces: Mapping[str, TraceEstimate | float],
    precision: str = "int8",
) -> dict[str, float]:
    """HAWQ-v2 ``Omega_l = Tr(H_l) / n_l * ||Q(W_l) - W_l||^2`` per layer of
    ``traces`` at ``precision`` (``int8``/``int4``; ``fp32`` is 0)."""
    if precision != "fp32" and precision not in PRECISION_BITS:
        raise ValueError(f"precision {precision!r}: choose fp32 or {list(PRECISION_BITS)}")
    weights = _weights(model, list(traces))
    out = {}
    for name, weight in weights.items():
        t = traces[name]
        trace = t.mean if isinstance(t, TraceEstimate) else float(t)
        if precision == "fp32":
            out[name] = 0.0
            continue
        err = quantization_error(weight, PRECISION_BITS[precision])
        out[name] = trace / weight.numel() * err
    return out
