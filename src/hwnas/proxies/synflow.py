"""Saliency: SynFlow (Tanaka et al., "Pruning neural networks without any data by
iteratively conserving synaptic flow", NeurIPS 2020), as a NAS proxy."""

from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.proxies.base import ProxyInputs, register_proxy
from hwnas.proxies.gradient import as_logits, prepare, weight_matrices


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def synflow_total(model: nn.Module, inputs: ProxyInputs) -> float:
    """``Σ |W ⊙ ∂R/∂W|`` with ``R = sum(f(1))``; mutates ``model`` (pass a copy).

    The copy goes to float64 and eval mode (dropout off), every parameter becomes
    ``|θ|``, and every BatchNorm is bypassed (its forward replaced by the identity --
    NASLib's ``bn=False`` convention, exactly "BN disabled", with no ``eps`` scaling).
    Other norms (LayerNorm, GroupNorm) stay, with absolute affine parameters. The
    input is one all-ones sample shaped like ``inputs.x[0]``. The sum runs over the
    weights of conv, linear and attention-projection layers.
    """
    if not inputs.x.is_floating_point():
        raise ValueError(
            "synflow feeds an all-ones float input, so it needs a model with float inputs, "
            f"got a {inputs.x.dtype} batch; score token models on their embeddings"
        )
    prepare(model, inputs, train=False)
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = _identity  # instance attribute on the copy only
    weights = [w for _, w in weight_matrices(model)]
    if not weights:
        raise ValueError("synflow: the model has no conv, linear or attention weights")
    ones = torch.ones((1, *inputs.x.shape[1:]), dtype=torch.float64, device=inputs.x.device)
    r = as_logits(model(ones)).sum()
    if not torch.isfinite(r):
        raise FloatingPointError(
            f"synflow: R = sum(f(1)) is {float(r)} in float64; the |W| network overflows "
            "(too deep or too wide for raw synflow; scale the weights down or drop synflow)"
        )
    grads = torch.autograd.grad(r, weights, allow_unused=True)
    parts = [(w * g).abs().sum() for w, g in zip(weights, grads) if g is not None]
    total = float(torch.stack(parts).detach().sum()) if parts else 0.0
    if not math.isfinite(total):
        raise FloatingPointError("synflow: the score overflows float64; drop synflow here")
    return total


@register_proxy("synflow", higher_is_better=True)
def synflow(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """SynFlow ``Σ |W ⊙ ∂R/∂W|``, ``R = sum(f(1))`` on the |W| network, float64, BN
    bypassed (see :func:`synflow_total`). Raw value; data-free, ``gen`` is unused."""
    return synflow_total(model, inputs)


@register_proxy("synflow_log", higher_is_better=True)
def synflow_log(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Natural log of ``synflow`` (same ranking, tamer scale for z-score normalisation)."""
    total = synflow_total(model, inputs)
    if total <= 0.0:
        raise FloatingPointError("synflow_log: synflow is 0 (no path from input to output)")
    return math.log(total)
