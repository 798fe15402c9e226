"""Expressivity: the Zen-score (Lin et al., "Zen-NAS", ICCV 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.core.types import ProxyInputs
from hwnas.proxies.base import register_proxy
from hwnas.proxies.common import prepare, weight_matrices

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
MIXUP = 0.01


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-pooling features when the model exposes ``forward_features``, else the output."""
    fwd = getattr(model, "forward_features", None)
    return fwd(x) if callable(fwd) else model(x)


@torch.no_grad()
def gaussian_init_(model: nn.Module, gen: torch.Generator) -> None:
    """Zen-NAS initialisation, in place: conv / linear / attention-projection weights
    ~ N(0, 1), their biases 0, norm layers' affine weight 1 and bias 0."""
    for _, w in weight_matrices(model):
        w.normal_(0.0, 1.0, generator=gen)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.bias is not None:
            m.bias.zero_()
        elif isinstance(m, nn.MultiheadAttention):
            for b in (m.in_proj_bias, m.bias_k, m.bias_v):
                if b is not None:
                    b.zero_()
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()


@register_proxy("zen", higher_is_better=True)
def zen_score(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Zen-score: ``log E_b ‖f(x) - f(x + 0.01 x')‖₁ + Σ_BN log sqrt(mean σ²_BN)``.

    Weights are re-drawn as in Zen-NAS (:func:`gaussian_init_`), BN stays in train
    mode, ``x, x' ~ N(0, 1)`` shaped like ``inputs.x`` (the batch itself is not used,
    only its shape, dtype and device). ``f`` is the pre-pooling feature map
    (``forward_features`` when the model has one, else the output). As in Zen-NAS the
    norm sums over each sample's features and the mean runs over the batch, so wider or
    larger feature maps score higher by that much. ``σ²_BN`` is each BN layer's
    unbiased per-channel batch variance in the forward of ``x`` -- what
    ``running_var`` holds after that forward with momentum 1, which is how Zen-NAS
    reads it. Models without BN get no BN term; a BN whose input is constant
    (variance 0: a dead branch) is skipped, as it scales no signal.
    """
    x0 = prepare(model, inputs)
    if not x0.is_floating_point():
        raise ValueError(
            "zen perturbs the input, so it needs a float batch (e.g. images or embeddings), "
            f"got {x0.dtype}; score token models on their embeddings or drop zen"
        )
    gaussian_init_(model, gen)
    shape, dev, dtype = x0.shape, x0.device, x0.dtype
    x = torch.randn(shape, generator=gen, device=gen.device, dtype=dtype).to(dev)
    eps = torch.randn(shape, generator=gen, device=gen.device, dtype=dtype).to(dev)

    # Each BN's batch variance: BN itself computes it; with momentum 1 its running_var
    # holds exactly that (unbiased) after the forward. BNs without running stats get a
    # pre-hook computing the same from their input.
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooked: list[torch.Tensor] = []

    def record(_m: nn.Module, inp: tuple) -> None:
        a = inp[0]
        hooked.append(a.var(dim=[0, *range(2, a.ndim)], unbiased=True).mean())

    handles = []
    for m in bns:
        if m.running_var is not None:
            m.momentum = 1.0
        else:
            handles.append(m.register_forward_pre_hook(record))
    with torch.no_grad():
        try:
            f1 = features(model, x)
        finally:
            for h in handles:
                h.remove()
        variances = hooked + [m.running_var.mean() for m in bns if m.running_var is not None]
        f2 = features(model, x + MIXUP * eps)
        # Zen-NAS: the L1 norm of each sample's feature difference, averaged over the batch
        diff = float((f1.double() - f2.double()).abs().flatten(1).sum(1).mean())
        # A BN fed a constant (a branch behind a 'zero' op) has variance 0; it passes no
        # signal on, so it has no scaling to undo and is left out of the sum.
        live = [v for v in (float(t) for t in variances) if v > 0.0]
        bn_term = sum(0.5 * math.log(v) for v in live)
    if not math.isfinite(diff) or diff <= 0.0:
        raise FloatingPointError(
            f"zen: feature difference is {diff}; the features overflow under N(0,1) weights "
            "or do not depend on the input (add BN layers or check forward_features)"
        )
    return math.log(diff) + bn_term
