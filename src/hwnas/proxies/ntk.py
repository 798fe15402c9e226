"""Complexity: condition number of the empirical NTK (Chen et al., "TE-NAS", ICLR 2021).

Per-sample gradients are the cost of this proxy. BatchNorm normalises with the batch's
own statistics (the train-mode forward values), but those statistics are treated as
constants, so samples do not interact through them and one backward pass yields every
sample's gradient: the backward gives each layer's per-sample output gradients, and
per-sample weight gradients follow in closed form (linear: a batched outer product;
conv: one grouped weight-gradient convolution with the batch folded into the groups;
BN / LayerNorm affine: sums of ``δ · x̂``). A model with parameters outside conv /
linear / BN / LayerNorm modules (e.g. ``nn.MultiheadAttention``) takes the generic
path instead: one backward pass per sample, same definition, slower.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import ProxyInputs
from hwnas.proxies.base import register_proxy
from hwnas.proxies.common import as_logits, prepare

_BN = nn.modules.batchnorm._BatchNorm
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FAST = (nn.Linear, *_CONV, _BN, nn.LayerNorm)


def freeze_batch_stats_(model: nn.Module) -> None:
    """Make every BN of the copy normalise with its input batch's mean and biased
    variance (as train mode does) while treating them as constants for autograd.
    Each BN keeps its latest statistics as ``_ntk_stats`` = (mean, invstd)."""

    def make(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            # The fused kernel gives the statistics far faster than var_mean over dims.
            _, mean, invstd = torch.ops.aten.native_batch_norm(
                x.detach(), None, None, None, None, True, 0.0, m.eps
            )
            m._ntk_stats = (mean, invstd)
            var = invstd.pow(-2) - m.eps
            return F.batch_norm(x, mean, var, m.weight, m.bias, False, 0.0, m.eps)

        return forward

    for m in model.modules():
        if isinstance(m, _BN):
            m.forward = make(m)  # instance attribute on the copy only


def _fast_path_ok(model: nn.Module) -> bool:
    covered = {
        id(p)
        for m in model.modules()
        if isinstance(m, _FAST) and not (isinstance(m, _CONV) and m.padding_mode != "zeros")
        for p in m.parameters(recurse=False)
    }
    return all(id(p) in covered for p in model.parameters())


def _per_sample(
    m: nn.Module, a: torch.Tensor, d: torch.Tensor, stats: tuple | None
) -> dict[int, torch.Tensor]:
    """Per-sample gradients (B, numel) of ``m``'s own parameters from its input ``a``,
    output gradient ``d`` (both batched on dim 0) and, for BN, the call's (mean, invstd)."""
    b, out = a.shape[0], {}
    if isinstance(m, nn.Linear):
        a2, d2 = a.reshape(b, -1, a.shape[-1]), d.reshape(b, -1, d.shape[-1])  # (B, L, in/out)
        out[id(m.weight)] = torch.bmm(d2.transpose(1, 2), a2).reshape(b, -1)
        if m.bias is not None:
            out[id(m.bias)] = d2.sum(dim=1)
    elif isinstance(m, _CONV):
        w = m.weight
        _, gw, _ = torch.ops.aten.convolution_backward(
            d.reshape(1, -1, *d.shape[2:]),  # (1, B*Cout, *S')
            a.reshape(1, -1, *a.shape[2:]),  # (1, B*Cin, *S)
            w.detach().repeat(b, *([1] * (w.ndim - 1))),
            None, m.stride, m.padding, m.dilation, False, [0] * (w.ndim - 2),
            m.groups * b, [False, True, False],
        )  # fmt: skip
        out[id(w)] = gw.reshape(b, -1)
        if m.bias is not None:
            out[id(m.bias)] = d.reshape(b, d.shape[1], -1).sum(dim=2)
    else:  # BN (statistics of the batch) or LayerNorm (per sample): y = x̂ · w + b
        if isinstance(m, _BN):
            shape = (1, -1, *([1] * (a.ndim - 2)))
            mean, invstd = (t.reshape(shape) for t in stats)
            xhat, red = (a - mean) * invstd, [*range(2, a.ndim)]
            flat = lambda t: t.sum(dim=red) if red else t  # noqa: E731  (B, C)
        else:
            xhat = F.layer_norm(a, m.normalized_shape, eps=m.eps)
            k = len(m.normalized_shape)
            flat = lambda t: t.reshape(b, -1, *t.shape[t.ndim - k :]).sum(1).reshape(b, -1)  # noqa: E731
        if m.weight is not None:
            out[id(m.weight)] = flat(d * xhat)
        if m.bias is not None:
            out[id(m.bias)] = flat(d)
    return out


def _gram_fast(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """NTK (B, B) from one forward and one backward with per-layer hooks."""
    b = x.shape[0]
    grads: dict[int, torch.Tensor] = {}
    records: list[tuple[nn.Module, torch.Tensor, list[torch.Tensor], tuple | None]] = []

    def on_output(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if out.requires_grad:
            # A tensor hook sees the gradient of this value even if a later in-place op
            # (e.g. ReLU(inplace=True)) overwrites the tensor.
            slot: list[torch.Tensor] = []
            out.register_hook(slot.append)
            records.append((m, inp[0].detach(), slot, getattr(m, "_ntk_stats", None)))

    for p in model.parameters():
        p.requires_grad_(False)  # only activation gradients are needed from autograd
    handles = [m.register_forward_hook(on_output) for m in model.modules() if isinstance(m, _FAST)]
    try:
        x_in = x.detach().requires_grad_(True)
        s = as_logits(model(x_in)).sum()
    finally:
        for h in handles:
            h.remove()
    torch.autograd.grad(s, x_in)
    with torch.no_grad():
        for m, a, slot, stats in records:
            if not slot:  # this output does not reach the logits
                continue
            for pid, g in _per_sample(m, a, slot[0], stats).items():
                grads[pid] = grads[pid] + g if pid in grads else g
        gram = torch.zeros(b, b, dtype=torch.float64, device=x.device)
        for g in grads.values():
            g = g.double()
            gram += g @ g.T
    return gram


def _gram_loop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """NTK (B, B) from one forward and one backward pass per sample (any model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = as_logits(model(x)).sum(dim=1)  # (B,)
    rows = []
    for i in range(x.shape[0]):
        gs = torch.autograd.grad(
            out[i], params, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        rows.append(torch.cat([g.reshape(-1) for g in gs]).double())
    g = torch.stack(rows)  # (B, P)
    return g @ g.T


def ntk_gram(model: nn.Module, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """Empirical NTK ``G Gᵀ`` (float64, B×B) of a prepared copy on batch ``x``; row i of
    G is the gradient of the sum of sample i's logits w.r.t. every parameter. Mutates
    ``model`` (BN statistics frozen per batch; see the module docstring)."""
    freeze_batch_stats_(model)
    if fast and _fast_path_ok(model):
        return _gram_fast(model, x)
    return _gram_loop(model, x)


@register_proxy("ntk", higher_is_better=False)
def ntk_condition(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Condition number ``λ_max / λ_min`` of the empirical NTK on the batch (TE-NAS).

    Train mode, BN on the batch's statistics held constant (module docstring), every
    trainable parameter. Eigenvalues from ``eigvalsh`` in float64; ``λ_min`` is floored
    at ``λ_max · 2⁻⁵²`` so a singular kernel gives a large finite number. Lower is
    better. ``gen`` is unused: the score depends only on the model and the batch.
    """
    x = prepare(model, inputs)
    if not any(True for _ in model.parameters()):
        raise ValueError("ntk: the model has no parameters")
    eig = torch.linalg.eigvalsh(ntk_gram(model, x))  # ascending
    lmax = float(eig[-1])
    if not lmax > 0.0:
        raise ValueError(
            "ntk: every per-sample gradient is zero; the output does not depend on the "
            "parameters (check the model's forward)"
        )
    lmin = max(float(eig[0]), lmax * torch.finfo(torch.float64).eps)
    return lmax / lmin
