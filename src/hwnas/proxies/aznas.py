"""AZ-NAS's zero-cost proxies (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for
Network Architecture Search", CVPR 2024): expressivity, progressivity and
trainability from ONE forward and ONE backward pass over the network's blocks.

The network is re-initialised as AZ-NAS does (conv / linear weights Kaiming-normal,
fan-in, ReLU gain; biases 0; BatchNorm / GroupNorm affine 1 and 0), kept in train
mode (BN normalises with the batch statistics), and run on the proxy batch. The
features ``X⁰ … X^L`` are the input of the first block and the output of every block
(:func:`feature_blocks`), each reshaped to samples × channels: (B·H·W, C) for image
feature maps, (B·T, E) for token sequences.

- ``az_expressivity`` = ``Σ_l H(λ^l)``, ``H`` the entropy of the eigenvalues of the
  channel covariance of ``X^l`` normalised to sum 1: high when the features spread
  evenly over many directions (isotropic).
- ``az_progressivity`` = ``min_l (H(λ^l) − H(λ^{l−1}))``: the smallest step in
  expressivity from one block to the next (high when every block adds some).
- ``az_trainability`` = ``−mean_l (σ_l + 1/σ_l − 2)``, ``σ_l`` the spectral norm of the
  cross-covariance between a Rademacher vector ``g`` on the block output and its
  back-propagated ``Jᵀg`` on the block input (an estimate of the block Jacobian's
  spectral norm; blocks that shrink the spatial size have ``Jᵀg`` pixel-unshuffled to
  the output's grid). It is 0, its maximum, when every block keeps gradient norms
  (σ = 1). A block whose back-propagated vector equals ``g`` exactly (an identity,
  e.g. a cell of only skip connections) gets −∞ as in AZ-NAS, which the proxy
  registry reports as a failure, so the network ranks last on this term.

The fourth AZ-NAS term, complexity, is the registered ``flops`` proxy, and AZ-NAS's
non-linear rank aggregation ``Σ_m log(rank_m / N)`` is the DE-Score's
``normalize: logrank``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import ProxyInputs, proxy_blocks
from hwnas.proxies.base import register_proxy, register_proxy_group
from hwnas.proxies.common import ConvNd, prepare

NAMES = ("az_expressivity", "az_progressivity", "az_trainability")
_AFFINE_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks whose outputs the AZ-NAS terms read, in execution order.

    A model may name them with a ``proxy_blocks()`` method (NAS-Bench-201's cells, the
    CNN's blocks, the ViT's and BERT's encoder layers do). Otherwise they are the
    children holding parameters of the ``nn.ModuleList`` / ``nn.Sequential`` with the
    most such children (ties: the one holding more parameters), e.g.
    ``nn.TransformerEncoder.layers``. Those containers run their children one after
    another, so block ``l``'s input is block ``l − 1``'s output, possibly through
    parameter-free children (activations, dropout, pooling) that then belong to block
    ``l``; leaving them out keeps a parameter-free module from counting as an identity
    block (which ``az_trainability`` scores −∞)."""
    named = proxy_blocks(model)
    if named is not None:
        blocks = list(named)
    else:
        blocks, best_key = [], (0, 0)
        for m in model.modules():
            if isinstance(m, (nn.ModuleList, nn.Sequential)):
                kids = [k for k in m.children() if any(True for _ in k.parameters())]
                key = (len(kids), sum(p.numel() for p in m.parameters()))
                if key > best_key:
                    blocks, best_key = kids, key
    if not blocks:
        raise ValueError(
            f"AZ-NAS proxies need a sequence of blocks, found none in "
            f"{type(model).__name__}; give the model a proxy_blocks() method listing them"
        )
    return blocks


@torch.no_grad()
def kaiming_init_(model: nn.Module, gen: torch.Generator) -> None:
    """AZ-NAS's initialisation, in place: conv / linear weights ~ N(0, 2 / fan_in)
    (Kaiming normal, ReLU gain), biases 0, BatchNorm / GroupNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, ConvNd)):
            fan_in = m.weight[0].numel() if not isinstance(m, nn.modules.conv._ConvTransposeNd) \
                else m.weight.shape[0] * m.weight[0, 0].numel()  # fmt: skip
            std = math.sqrt(2.0 / max(fan_in, 1))
            m.weight.normal_(0.0, std, generator=gen)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, _AFFINE_NORMS) and getattr(m, "affine", False):
            m.weight.fill_(1.0)
            m.bias.zero_()


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _rows(feature: torch.Tensor) -> torch.Tensor:
    """(samples, channels): (B, C, H, W) -> (B·H·W, C); (B, T, E) -> (B·T, E); (B, C)."""
    if feature.ndim == 2:
        return feature
    if feature.ndim == 3:
        return feature.reshape(-1, feature.shape[-1])
    return feature.movedim(1, -1).reshape(-1, feature.shape[1])


def isotropy_entropy(feature: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance of ``feature``."""
    rows = _rows(feature.detach()).double()
    rows = rows - rows.mean(dim=0, keepdim=True)
    cov = rows.T @ rows / rows.shape[0]
    eig = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    total = float(eig.sum())
    if not math.isfinite(total) or total <= 0.0:
        return math.nan  # constant (dead) features: no direction at all
    p = eig / total
    return float(-(p * torch.log(p + 1e-8)).sum())


def _match_grid(g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """``g_in`` brought to ``g_out``'s spatial grid: pixel-unshuffled by the stride
    when it divides evenly, else average-pooled to the output size."""
    if g_in.ndim != 4 or g_in.shape[2:] == g_out.shape[2:]:
        return g_in
    (hi, wi), (ho, wo) = g_in.shape[2:], g_out.shape[2:]
    if ho and hi % ho == 0 and wo and wi % wo == 0 and hi // ho == wi // wo:
        return F.pixel_unshuffle(g_in, hi // ho)
    return F.adaptive_avg_pool2d(g_in, (ho, wo))


def block_trainability(f_in: torch.Tensor, f_out: torch.Tensor, gen: torch.Generator) -> float:
    """``−(σ + 1/σ − 2)`` of one block (see the module docstring); −∞ for an identity."""
    g_out = (torch.randint(0, 2, f_out.shape, generator=gen, device=gen.device) * 2 - 1).to(
        device=f_out.device, dtype=f_out.dtype
    )
    (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
    if g_in is None:
        g_in = torch.zeros_like(f_in)
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return -math.inf
    g_in = _match_grid(g_in, g_out)
    a, b = _rows(g_in).double(), _rows(g_out).double()
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"az_trainability: block input {tuple(f_in.shape)} and output {tuple(f_out.shape)} "
            "have different sample grids; give the model proxy_blocks() with matching blocks"
        )
    cross = a.T @ b / b.shape[0]
    sigma = float(torch.linalg.matrix_norm(cross, ord=2))
    return -(sigma + 1.0 / (sigma + 1e-6) - 2.0)


def block_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``[X⁰, X¹, …, X^L]``: the first block's input and every block's output, from one
    forward of ``model`` on ``x`` (graph kept for the trainability backward)."""
    blocks = feature_blocks(model)
    feats: list[torch.Tensor] = []

    def pre(_m: nn.Module, args: tuple) -> None:
        if not feats:
            t = _first_tensor(args)
            if t is not None:
                feats.append(t)

    def post(_m: nn.Module, _args: tuple, out: object) -> None:
        t = _first_tensor(out)
        if t is not None:
            feats.append(t)

    handles = [blocks[0].register_forward_pre_hook(pre)]
    handles += [b.register_forward_hook(post) for b in blocks]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if len(feats) != len(blocks) + 1:
        raise ValueError(
            f"AZ-NAS proxies expected {len(blocks) + 1} block features, got {len(feats)}: "
            "each block must run exactly once per forward"
        )
    return feats


def az_scores(
    model: nn.Module, inputs: ProxyInputs, gen: torch.Generator, names: Sequence[str] = NAMES
) -> dict[str, float]:
    """The AZ-NAS terms in ``names`` from one shared forward (and one backward if
    ``az_trainability`` is asked for); non-finite values are returned as they are."""
    x = prepare(model, inputs, train=True)
    kaiming_init_(model, gen)
    if x.is_floating_point():
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        feats = block_features(model, x)
        out: dict[str, float] = {}
        if "az_expressivity" in names or "az_progressivity" in names:
            ent = [isotropy_entropy(f) for f in feats]
            out["az_expressivity"] = sum(ent)
            out["az_progressivity"] = min(b - a for a, b in zip(ent[:-1], ent[1:]))
        if "az_trainability" in names:
            if not feats[0].requires_grad:
                raise ValueError(
                    "az_trainability back-propagates to the first block's input, which does "
                    "not require grad (integer token ids?); score the model after its "
                    "embeddings (ElasticModel.proxy_module)"
                )
            per_block = [
                block_trainability(feats[i - 1], feats[i], gen)
                for i in reversed(range(1, len(feats)))
            ]
            out["az_trainability"] = sum(per_block) / len(per_block)
    return {n: out[n] for n in names}


@register_proxy_group(NAMES)
def az_family(
    model: nn.Module, inputs: ProxyInputs, gen: torch.Generator, names: Sequence[str]
) -> dict[str, float]:
    """The AZ-NAS terms asked for from one shared pass, each equal to its own proxy's."""
    return az_scores(model, inputs, gen, names)


@register_proxy("az_expressivity", higher_is_better=True)
def az_expressivity(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """AZ-NAS expressivity ``Σ_l H(λ^l)``: entropy of the normalised eigenvalues of each
    block feature's channel covariance (first block's input and every block's output),
    summed; Kaiming-normal init, train-mode BN (see :mod:`hwnas.proxies.aznas`)."""
    return az_scores(model, inputs, gen, ("az_expressivity",))["az_expressivity"]


@register_proxy("az_progressivity", higher_is_better=True)
def az_progressivity(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """AZ-NAS progressivity ``min_l (H(λ^l) − H(λ^{l−1}))``: the smallest gain in
    feature-covariance entropy from one block to the next (see ``az_expressivity``)."""
    return az_scores(model, inputs, gen, ("az_progressivity",))["az_progressivity"]


@register_proxy("az_trainability", higher_is_better=True)
def az_trainability(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """AZ-NAS trainability ``−mean_l (σ_l + 1/σ_l − 2)``, σ_l the spectral norm of the
    cross-covariance of a Rademacher vector on block l's output and its gradient on the
    block's input; −∞ (a failure) when a block is an identity (see the module)."""
    return az_scores(model, inputs, gen, ("az_trainability",))["az_trainability"]
