"""Diversity: the DSS synaptic-diversity score (Zhou et al., "TF-TAS", CVPR 2022)."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.proxies.base import ProxyInputs, register_proxy
from hwnas.proxies.gradient import LossGradients, loss_gradients


def as_matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight as a 2-D matrix: (out, in) as is, a conv kernel as (out, in·k·k)."""
    return w if w.ndim == 2 else w.reshape(w.shape[0], -1)


def synaptic_diversity(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``|‖∇W‖_nuc · ‖W‖_nuc|`` of one weight matrix (nuclear norms, not Frobenius)."""
    nuc = torch.linalg.matrix_norm
    return (nuc(as_matrix(g), ord="nuc") * nuc(as_matrix(w), ord="nuc")).abs()


def dss_from(lg: LossGradients) -> float:
    """DSS of precomputed loss gradients (see :func:`dss`)."""
    with torch.no_grad():
        parts = [synaptic_diversity(w, g) for w, g in lg.used()]
    return float(torch.stack(parts).sum()) if parts else 0.0


@register_proxy("dss", higher_is_better=True)
def dss(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """DSS: ``Σ_W |‖∂L/∂W‖_nuc · ‖W‖_nuc|`` after one forward/backward of the batch.

    L is the cross-entropy on the batch (labels from ``inputs.y`` or drawn from ``gen``),
    the model is in train mode. The sum runs over the 2-D weights of every linear layer
    (attention q/k/v -- ``nn.MultiheadAttention.in_proj_weight`` or separate Linear layers
    -- output projections, MLPs, the head) and, for CNNs, every conv kernel reshaped to
    (out, in·k·k). The norm is the NUCLEAR norm (sum of singular values). TF-TAS scores
    the sampled slice of each supernet weight; the models scored here are exported
    subnets, whose parameters ARE that slice, so each parameter is used as is.
    """
    return dss_from(loss_gradients(model, inputs, gen))
