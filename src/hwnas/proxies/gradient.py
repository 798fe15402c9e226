"""Loss-gradient proxies: snip, grasp, fisher, grad_norm and the DE-Score's diversity.

The plumbing every proxy module shares (readying the copy, listing weight matrices,
logits, labels) lives in :mod:`hwnas.proxies.common`.

Proxies (conventions of Abdelfattah et al., ICLR'21, as in NASLib's pruners; model in
train mode, cross-entropy on the batch, sums over the weights of conv and linear
layers, attention in-projections included):

- ``snip``: ``Σ |g ⊙ W|``;
- ``grasp``: ``Σ -W ⊙ (H g)`` with ``H g`` a Hessian-vector product;
- ``fisher``: per output channel of each conv/linear call, ``0.5 · mean_b (Σ_pos a·∂L/∂a)²``,
  times the channel's fan-in, summed over channels and layers;
- ``grad_norm``: ``Σ ‖∇W‖₂`` (one Frobenius norm per weight tensor).

- ``nuclear_diversity``: the DE-Score diversity term, ``Σ_W |‖∂L/∂W‖_nuc · ‖W‖_nuc|``
  with NUCLEAR norms. It takes the synaptic-diversity formula of TF-TAS (Zhou et al.,
  CVPR 2022) but not TF-TAS's setting, so it does not carry TF-TAS's name (``dss``):
  L here is cross-entropy on the batch (random labels when data-free) with the
  weights as they are, summed over every conv and linear layer, where TF-TAS uses
  the absolute weights, an all-ones input, the sum of the outputs as L, diversity on
  the attention weights only and synaptic saliency on the MLPs.

snip, grad_norm, fisher and nuclear_diversity need the same loss gradient;
:func:`~hwnas.proxies.base.score_proxies` computes them in one shared pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import ProxyInputs
from hwnas.proxies.base import register_proxy, register_proxy_group
from hwnas.proxies.common import ConvNd, as_logits, labels, prepare, weight_matrices


def ce_loss(
    model: nn.Module, x: torch.Tensor, inputs: ProxyInputs, gen: torch.Generator
) -> torch.Tensor:
    """Cross-entropy of the model on the batch (labels from ``inputs`` or ``gen``)."""
    logits = as_logits(model(x))
    return F.cross_entropy(logits, labels(inputs, gen, logits.shape[1]))


def _grads(loss: torch.Tensor, weights: list[nn.Parameter], **kw) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, weights, allow_unused=True, **kw))


def _total(parts: list[torch.Tensor]) -> float:
    return float(torch.stack(parts).detach().sum()) if parts else 0.0


@dataclass
class LossGradients:
    """One forward/backward of the cross-entropy: each weight matrix with its gradient
    (``None`` where the loss does not reach it) and, when asked, the fisher terms."""

    weights: list[nn.Parameter]
    grads: list[torch.Tensor | None]
    fisher: list[torch.Tensor]

    def used(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [(w, g) for w, g in zip(self.weights, self.grads, strict=True) if g is not None]


def loss_gradients(
    model: nn.Module, inputs: ProxyInputs, gen: torch.Generator, fisher: bool = False
) -> LossGradients:
    """Prepare the copy, run the batch, and take the loss gradient w.r.t. every weight
    matrix (:func:`weight_matrices`). With ``fisher`` the output of every conv / linear
    call is also hooked to collect the per-channel fisher terms of :func:`fisher`."""
    x = prepare(model, inputs)
    weights = [w for _, w in weight_matrices(model)]
    parts: list[torch.Tensor] = []
    handles = []
    if fisher:
        handles = [
            m.register_forward_hook(_fisher_hook(parts))
            for m in model.modules()
            if isinstance(m, (nn.Linear, ConvNd))
        ]
    try:
        loss = ce_loss(model, x, inputs, gen)
    finally:
        for h in handles:
            h.remove()
    if not weights:
        raise ValueError("the model has no conv, linear or attention weights to take gradients of")
    return LossGradients(weights, _grads(loss, weights), parts)


def _fisher_hook(parts: list[torch.Tensor]):
    def on_output(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return
        act = out.detach().clone()  # a later in-place op must not change it
        chan = 1 if isinstance(module, ConvNd) else act.ndim - 1
        fan_in = module.weight[0].numel()

        def on_grad(grad: torch.Tensor) -> None:
            prod = act * grad
            dims = [d for d in range(1, prod.ndim) if d != chan]
            g_nk = prod.sum(dim=dims) if dims else prod  # (B, C)
            parts.append(0.5 * fan_in * g_nk.pow(2).mean(dim=0).sum())

        out.register_hook(on_grad)

    return on_output


def _snip(lg: LossGradients) -> float:
    return _total([(g * w).abs().sum() for w, g in lg.used()])


def _grad_norm(lg: LossGradients) -> float:
    return _total([g.norm() for _, g in lg.used()])


@register_proxy("snip", higher_is_better=True)
def snip(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """SNIP connection sensitivity: ``Σ |∂L/∂W ⊙ W|`` over conv/linear weights."""
    return _snip(loss_gradients(model, inputs, gen))


@register_proxy("grad_norm", higher_is_better=True)
def grad_norm(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Sum over conv/linear weights of the Euclidean norm of the loss gradient."""
    return _grad_norm(loss_gradients(model, inputs, gen))


@register_proxy("fisher", higher_is_better=True)
def fisher(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Fisher information of the conv/linear output channels (Turner et al. / zero-cost-nas):
    ``Σ_layers fan_in · Σ_channels 0.5 · mean_b (Σ_positions a · ∂L/∂a)²``. Convolutions
    have channels on dim 1, linear layers on the last dim. Each channel's value counts
    once per weight of that channel (``fan_in`` = in·k·k), as zero-cost-nas / NASLib
    sum it after spreading it over the weights."""
    return _total(loss_gradients(model, inputs, gen, fisher=True).fisher)


def as_matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight as a 2-D matrix: (out, in) as is, a conv kernel as (out, in·k·k)."""
    return w if w.ndim == 2 else w.reshape(w.shape[0], -1)


def synaptic_diversity(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``|‖∇W‖_nuc · ‖W‖_nuc|`` of one weight matrix (nuclear norms, not Frobenius)."""
    nuc = torch.linalg.matrix_norm
    return (nuc(as_matrix(g), ord="nuc") * nuc(as_matrix(w), ord="nuc")).abs()


def nuclear_diversity_from(lg: LossGradients) -> float:
    """:func:`nuclear_diversity` of precomputed loss gradients."""
    with torch.no_grad():
        parts = [synaptic_diversity(w, g) for w, g in lg.used()]
    return float(torch.stack(parts).sum()) if parts else 0.0


@register_proxy("nuclear_diversity", higher_is_better=True)
def nuclear_diversity(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Nuclear-norm diversity ``Σ_W |‖∂L/∂W‖_nuc · ‖W‖_nuc|`` after one
    forward/backward of the batch (TF-TAS's diversity formula in our setting, see the
    module docstring for how it differs from TF-TAS's DSS).

    L is the cross-entropy on the batch (labels from ``inputs.y`` or drawn from ``gen``),
    the model is in train mode. The sum runs over the 2-D weights of every linear layer
    (attention q/k/v -- ``nn.MultiheadAttention.in_proj_weight`` or separate Linear layers
    -- output projections, MLPs, the head) and, for CNNs, every conv kernel reshaped to
    (out, in·k·k). The norm is the NUCLEAR norm (sum of singular values). TF-TAS scores
    the sampled slice of each supernet weight; the models scored here are exported
    subnets, whose parameters ARE that slice, so each parameter is used as is.
    """
    return nuclear_diversity_from(loss_gradients(model, inputs, gen))


@register_proxy_group(("snip", "grad_norm", "fisher", "nuclear_diversity"))
def loss_gradient_family(
    model: nn.Module, inputs: ProxyInputs, gen: torch.Generator, names: Sequence[str]
) -> dict[str, float]:
    """snip, grad_norm, fisher and nuclear_diversity from ONE forward/backward (they share the loss,
    labels and gradients), each equal to its own proxy's value."""
    lg = loss_gradients(model, inputs, gen, fisher="fisher" in names)
    reduce = {"snip": _snip, "grad_norm": _grad_norm, "nuclear_diversity": nuclear_diversity_from,
              "fisher": lambda g: _total(g.fisher)}  # fmt: skip
    return {n: reduce[n](lg) for n in names}


@register_proxy("grasp", higher_is_better=True)
def grasp(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """GraSP: ``Σ -W ⊙ (H g)`` over conv/linear weights, ``H g`` the Hessian of the loss
    times its (detached) gradient; the sign follows zero-cost-nas (higher is better)."""
    x = prepare(model, inputs)
    weights = [w for _, w in weight_matrices(model)]
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        grads = _grads(ce_loss(model, x, inputs, gen), weights, create_graph=True)
        used = [(w, g) for w, g in zip(weights, grads) if g is not None]
        if not used:
            return 0.0
        z = torch.stack([(g.detach() * g).sum() for _, g in used]).sum()
        if not z.requires_grad:  # the loss is linear in every weight: H g = 0
            return 0.0
        hg = _grads(z, [w for w, _ in used])
    return _total([-(w.detach() * h).sum() for (w, _), h in zip(used, hg) if h is not None])
