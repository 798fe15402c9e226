"""Classic data-light proxies: NASWOT, jacob_cov, SynFlow, parameter count and FLOPs.

SynFlow (Tanaka et al., NeurIPS 2020) is also the DE-Score's saliency term.

Conventions follow NASLib's zero-cost pruners (Abdelfattah et al., ICLR'21 and
Mellor et al.), so scores rank architectures as NASLib's precomputed ones do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from hwnas.core.types import ProxyInputs
from hwnas.proxies.base import register_proxy
from hwnas.proxies.common import as_logits, prepare, weight_matrices

# Functions that gate at zero: their input's sign is the unit's binary code. Module
# activations (nn.ReLU, nn.GELU, ...) call these, so one interception covers both.
_GATES = {
    F.relu, F.relu_, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, F.elu,
    F.hardtanh, F.mish, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
}  # fmt: skip
JACOB_K = 1e-5


class _HammingKernel(TorchFunctionMode):
    """Accumulates ``K = Σ_layers c cᵀ + (1-c)(1-c)ᵀ`` over every gating call."""

    def __init__(self, batch: int, device: torch.device):
        super().__init__()
        self.batch = batch
        self.kernel = torch.zeros(batch, batch, dtype=torch.float64, device=device)
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GATES:
            a = args[0] if args else kwargs.get("input")
            if isinstance(a, torch.Tensor) and a.ndim >= 1 and a.shape[0] == self.batch:
                c = (a.detach() > 0).reshape(self.batch, -1).double()  # (B, units)
                self.kernel += c @ c.T + (1.0 - c) @ (1.0 - c).T
                self.calls += 1
        return func(*args, **kwargs)


@register_proxy("naswot", higher_is_better=True)
def naswot(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """NASWOT (Mellor et al., ICML'21): ``log|det K|`` of the Hamming-similarity kernel of
    the samples' binary activation codes, concatenated over every ReLU-like activation
    (ReLU/ReLU6/GELU/SiLU/Hardswish/...; code = pre-activation > 0), whether called as a
    module or functionally. Train mode, no gradients; ``gen`` is unused."""
    x = prepare(model, inputs)
    mode = _HammingKernel(x.shape[0], x.device)
    with torch.no_grad(), mode:
        model(x)
    if mode.calls == 0:
        raise ValueError(
            "naswot: no ReLU-like activation ran in the forward; the proxy needs ReLU/GELU-"
            "style nonlinearities (use another proxy for this model)"
        )
    logdet = float(torch.linalg.slogdet(mode.kernel).logabsdet)
    if logdet == float("-inf"):
        raise FloatingPointError(
            "naswot: the activation-code kernel is singular (two samples share every code, "
            "e.g. the output ignores the input); use a larger or more varied batch"
        )
    return logdet


def input_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, N): gradient of the sum of all outputs w.r.t. each sample's input, flattened."""
    x = x.detach().clone().requires_grad_(True)
    out = as_logits(model(x))
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad.reshape(x.shape[0], -1)


@register_proxy("jacob_cov", higher_is_better=True)
def jacob_cov(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """jacob_cov (Mellor et al. 2020, v1): ``-Σ_v [log(v + k) + 1/(v + k)]``, ``k = 1e-5``,
    over the eigenvalues v of the correlation matrix of the per-sample input Jacobians
    (train mode). Eigenvalues come from ``eigvalsh`` in float64, clamped at 0 against
    round-off. Needs a float input batch of at least 2 samples; ``gen`` is unused."""
    x = prepare(model, inputs)
    if x.shape[0] < 2 or not x.is_floating_point():
        raise ValueError("jacob_cov needs a float input batch of at least 2 samples")
    jac = input_jacobian(model, x).double()
    corr = torch.corrcoef(jac)
    if not torch.isfinite(corr).all():
        raise FloatingPointError(
            "jacob_cov: a sample's input Jacobian is constant, so its correlation is "
            "undefined (the output ignores the input?)"
        )
    v = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(v + JACOB_K) + 1.0 / (v + JACOB_K)).sum())


@register_proxy("params", higher_is_better=True)
def params(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Number of trainable parameters (shared tensors counted once)."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per multiply-add) of ``model(x)`` as counted by ``FlopCounterMode``.

    ``scaled_dot_product_attention`` runs on its math backend here: ``FlopCounterMode``
    has no formula for the fused CPU attention kernel, so ``QKᵀ`` and ``AV`` would go
    uncounted; the math backend computes them as counted batched matrix products.
    """
    counter = FlopCounterMode(display=False)
    # grad mode on: keeps PyTorch's fused (uncounted) inference paths off
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    return int(counter.get_total_flops())


@register_proxy("flops", higher_is_better=True)
def flops(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """FLOPs of one forward of a single sample (``inputs.x[:1]``), counted by
    ``torch.utils.flop_counter.FlopCounterMode``, in eval mode (BN on running stats),
    attention matrix products included (see :func:`count_flops`)."""
    x = prepare(model, inputs, train=False)
    return float(count_flops(model, x[:1]))


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
