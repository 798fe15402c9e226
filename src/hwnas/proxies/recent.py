"""Recent train-free proxies: ZiCo (ICLR 2023), MeCo (NeurIPS 2023) and VKDNW (CVPR 2025).

- ``zico`` (Li et al., "ZiCo: Zero-shot NAS via inverse Coefficient of Variation on
  Gradients"): per layer, the log of the summed inverse coefficient of variation of the
  weight gradients across batches; here the two halves of the proxy batch are the two
  batches.
- ``meco`` (Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via
  Minimum Eigenvalue of Correlation"): sum over layers of the minimum eigenvalue of the
  Pearson correlation matrix between the channels of the layer's feature map, computed
  on one sample.
- ``vkdnw`` (Týbl & Neumann, "Training-free Neural Architecture Search through Variance
  of Knowledge of Deep Network Weights", arXiv 2502.04975): entropy of the normalised
  deciles of the eigenvalues of the Fisher information of one scalar per parameter
  tensor; ``vkdnw_single`` adds the number of trainable parameter tensors (the paper's
  ℵ) to it.

Every proxy works on the copy it receives (:func:`~hwnas.proxies.base.score_proxy`) and
draws random numbers only from its generator: ``zico`` draws labels when the inputs
carry none, ``vkdnw`` re-draws the weights (as the authors do), ``meco`` draws nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from hwnas.core.types import ProxyInputs
from hwnas.proxies.aznas import kaiming_init_
from hwnas.proxies.base import register_proxy
from hwnas.proxies.common import ConvNd, as_logits, labels, prepare, weight_matrices

VKDNW_CHUNK = 8  # samples per vmapped Jacobian chunk (bounds memory, not the result)
VKDNW_SMOOTHING = 0.05  # the authors' code: p = 0.95 softmax + 0.05 / classes
_BN = nn.modules.batchnorm._BatchNorm
_DECILES = tuple(k / 10 for k in range(1, 10))


# ----------------------------------------------------------------------------- ZiCo
def zico_from_grads(grads: Sequence[Sequence[torch.Tensor | None]]) -> float:
    """ZiCo of per-batch gradients: ``grads[b][l]`` is batch ``b``'s loss gradient of
    layer ``l``'s weight (``None`` where the loss does not reach it, read as zeros).

    ``Σ_l log Σ_θ mean_b|g_θ| / std_b(g_θ)`` with the population std (numpy's default,
    ``ddof=0``, as in the paper's ``sqrt(Var)``), the inner sum over the entries whose std
    is > 0; a layer with no such entry is skipped. Computed in float64. Each ratio is
    >= 1 for two batches (triangle inequality), so every layer term is >= 0 and a
    network whose gradients never vary scores 0 (the empty sum).
    """
    if len(grads) < 2:
        raise ValueError(f"ZiCo needs gradients of at least 2 batches, got {len(grads)}")
    total = 0.0
    for layer in zip(*grads, strict=True):
        ref = next((g for g in layer if g is not None), None)
        if ref is None:
            continue
        g = torch.stack(
            [(t if t is not None else torch.zeros_like(ref)).detach().double() for t in layer]
        ).reshape(len(layer), -1)  # (batches, entries)
        std = g.std(dim=0, correction=0)
        keep = std > 0
        if not bool(keep.any()):
            continue
        ratio = (g.abs().mean(dim=0)[keep] / std[keep]).sum()
        if float(ratio) > 0.0:
            total += math.log(float(ratio))
    return total


@register_proxy("zico", higher_is_better=True)
def zico(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """ZiCo (Li et al., ICLR 2023): ``Σ_l log( Σ_θ∈W_l mean_b|g_θ| / std_b(g_θ) )``.

    The proxy batch is split into two halves (first ``B//2`` samples, then the rest),
    which play the paper's two batches: each half gets one forward/backward of the
    cross-entropy (mean over the half; labels from ``inputs.y`` or drawn from ``gen``
    for the whole batch), model in train mode (BatchNorm normalises each half with its
    own statistics), weights as they are (no re-initialisation, as in the paper). ``g``
    is the gradient of one weight entry on each half; ``W_l`` runs over the weights of
    every conv, linear and attention projection (:func:`weight_matrices`). ``std`` is
    the POPULATION std over the two halves (``|g₁-g₂|/2``), ``mean|g|`` is
    ``(|g₁|+|g₂|)/2``; entries with std 0 are left out and a layer with none left is
    skipped. Needs a batch of at least 2 samples.
    """
    b = int(inputs.x.shape[0])
    if b < 2:
        raise ValueError(f"zico splits the batch into two halves, so it needs batch >= 2, got {b}")
    x = prepare(model, inputs)
    weights = [w for _, w in weight_matrices(model)]
    if not weights:
        raise ValueError("zico: the model has no conv, linear or attention weights")
    h = b // 2
    y: torch.Tensor | None = None
    grads: list[list[torch.Tensor | None]] = []
    for sl in (slice(0, h), slice(h, b)):
        logits = as_logits(model(x[sl]))
        if y is None:
            y = labels(inputs, gen, logits.shape[1])
        loss = F.cross_entropy(logits, y[sl])
        grads.append(list(torch.autograd.grad(loss, weights, allow_unused=True)))
    return zico_from_grads(grads)


# ----------------------------------------------------------------------------- MeCo
def min_correlation_eigenvalue(feat: torch.Tensor) -> float:
    """Minimum eigenvalue of the Pearson correlation matrix between the rows of ``feat``
    (channels, positions), in float64.

    A constant channel has an undefined (NaN) correlation; as in the MeCo authors' code
    its row and column of the matrix are set to 0 (the diagonal entry too), so a layer
    with a constant channel has minimum eigenvalue exactly 0. The matrix is positive
    semi-definite, so the result is clamped at 0 (rounding can give -1e-16). With no more
    positions than channels the centred rows span at most ``positions - 1`` dimensions,
    the matrix is singular and the result is exactly 0 (not rounding noise).
    """
    f = feat.detach().reshape(feat.shape[0], -1).double()
    if f.shape[1] <= f.shape[0]:  # centred rows span <= positions-1 < channels dims: singular
        return 0.0
    if bool((f.amax(dim=1) == f.amin(dim=1)).any()):
        return 0.0
    f = f - f.mean(dim=1, keepdim=True)
    f = f / f.norm(dim=1, keepdim=True)
    corr = f @ f.T
    return max(float(torch.linalg.eigvalsh(corr)[0]), 0.0)


def _meco_feature(module: nn.Module, out: object) -> torch.Tensor | None:
    """(channels, positions) feature map of sample 0 of one layer call, or ``None``."""
    if isinstance(module, nn.MultiheadAttention):
        if not isinstance(out, (tuple, list)) or not isinstance(out[0], torch.Tensor):
            return None
        a = out[0]
        if a.ndim != 3:  # unbatched (T, E) call: tokens x embedding
            return a.T if a.ndim == 2 else None
        a = a[0] if module.batch_first else a[:, 0]  # (T, E)
        return a.T
    if not isinstance(out, torch.Tensor):
        return None
    if isinstance(module, ConvNd):
        return out[0].reshape(out.shape[1], -1)  # (C, spatial)
    if out.ndim < 3:  # (B, features): no positions to correlate over
        return None
    return out[0].reshape(-1, out.shape[-1]).T  # (E, tokens)


@register_proxy("meco", higher_is_better=True)
def meco(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """MeCo (Jiang et al., NeurIPS 2023): ``Σ_layers λ_min(P(f_l(x)))`` on ONE sample.

    ``x`` is the first sample of ``inputs.x``, forwarded alone (batch of 1, as the paper's
    "one data" and the authors' code), model in train mode (BatchNorm normalises with
    that sample's own statistics, as the authors' freshly built networks do), weights as
    they are (the authors keep PyTorch's default init; no re-initialisation), no
    gradients; ``gen`` is unused. ``f_l`` is the OUTPUT of every conv (channels x
    spatial positions), every linear layer with a sequence output (B, T, E) (E channels
    x T token positions) and every ``nn.MultiheadAttention`` (its output projection,
    E x T); a 2-D (B, features) output has no positions and is skipped. ``P`` is the
    Pearson correlation matrix between the channels, ``λ_min`` its minimum eigenvalue
    (float64, clamped at 0; a layer with no more positions than channels has a
    singular ``P`` and contributes exactly 0). A constant channel (undefined
    correlation) gets a zero row and column as in the authors' code, so a layer with
    one contributes 0. The authors hook every module; this sums over the weighted
    (conv / linear / attention) layers only, each call counted once.
    """
    x = prepare(model, inputs)[:1]
    parts: list[float] = []

    def on_output(module: nn.Module, _inp: tuple, out: object) -> None:
        feat = _meco_feature(module, out)
        if feat is not None:
            parts.append(min_correlation_eigenvalue(feat))

    handles = [
        m.register_forward_hook(on_output)
        for m in model.modules()
        if isinstance(m, (nn.Linear, ConvNd, nn.MultiheadAttention))
    ]
    try:
        with torch.no_grad():
            model(x)
    except ValueError as exc:
        if "more than 1 value per channel" in str(exc):
            raise ValueError(
                "meco forwards ONE sample in train mode and a BatchNorm saw a single value "
                "per channel (a 1x1 or flat feature); this model cannot be scored by meco"
            ) from exc
        raise
    finally:
        for handle in handles:
            handle.remove()
    if not parts:
        raise ValueError(
            "meco: no conv, sequence-linear or attention layer produced a feature map with "
            "positions; the proxy needs (B, C, ...) conv or (B, T, E) outputs"
        )
    return float(sum(parts))


# ---------------------------------------------------------------------------- VKDNW
def vkdnw_fisher(
    model: nn.Module,
    x: torch.Tensor,
    smoothing: float = VKDNW_SMOOTHING,
    chunk_size: int = VKDNW_CHUNK,
) -> torch.Tensor:
    """Fisher information (P, P), float64, of the first entry of each of the model's P
    parameter tensors: ``F = mean_n J_nᵀ (diag(p_n) - p_n p_nᵀ) J_n``.

    ``J_n`` (classes x P) is sample n's Jacobian of the logits w.r.t. those P scalars
    (``torch.func``: ``vmap`` over samples, in chunks of ``chunk_size``, of ``jacrev``
    of a ``functional_call``); ``p_n = (1 - s) softmax(logits_n) + s / classes`` with
    ``s = smoothing`` (``s = 0``: the exact Fisher of the categorical likelihood at the
    model's own prediction, ``E_{c~p}[∇log p_c ∇log p_cᵀ]``; ``s > 0``: the same formula
    at the smoothed ``p``). The model runs as it is,
    weights included (call it in eval mode, so samples do not interact). Built as
    ``mean_n A_nᵀ A_n`` with ``A_n = diag(√p_n)(I - 1 p_nᵀ) J_n`` (``A_nᵀA_n`` equals the
    term above), which keeps it symmetric positive semi-definite.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    named = list(model.named_parameters())
    if not named:
        raise ValueError("vkdnw: the model has no parameters")
    names = [n for n, _ in named]
    base = {n: p.detach() for n, p in named}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    first = {}
    for n, p in named:
        e = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
        e[0] = 1.0
        first[n] = e.view_as(p)

    def logits_of(delta: torch.Tensor, sample: torch.Tensor):
        params = {n: base[n] + delta[k] * first[n] for k, n in enumerate(names)}
        out = as_logits(functional_call(model, (params, buffers), (sample.unsqueeze(0),)))
        out = out.squeeze(0)
        return out, out

    dtype = named[0][1].dtype if named[0][1].is_floating_point() else torch.float32
    delta = torch.zeros(len(names), dtype=dtype, device=x.device)
    per_sample = vmap(
        jacrev(logits_of, has_aux=True), in_dims=(None, 0), chunk_size=max(1, int(chunk_size))
    )
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernels have no vmap rule
        jac, logits = per_sample(delta, x)  # (B, classes, P), (B, classes)
    jac, logits = jac.double(), logits.double()
    p = (1.0 - smoothing) * torch.softmax(logits, dim=1) + smoothing / logits.shape[1]
    centred = jac - torch.einsum("nc,ncp->np", p, jac).unsqueeze(1)  # (I - 1pᵀ) J
    a = p.sqrt().unsqueeze(2) * centred  # (B, classes, P)
    return torch.einsum("ncp,ncq->pq", a, a) / x.shape[0]


@torch.no_grad()
def kaiming_fanin_init_(model: nn.Module, gen: torch.Generator) -> None:
    """The VKDNW authors' initialisation, in place: AZ-NAS's (:func:`kaiming_init_`:
    conv / linear weights Kaiming normal, fan_in, ReLU gain, biases 0, BatchNorm /
    GroupNorm affine 1 and 0) plus BatchNorm running statistics reset (mean 0,
    variance 1, as in a freshly built network)."""
    kaiming_init_(model, gen)
    for m in model.modules():
        if isinstance(m, _BN) and m.track_running_stats:
            m.reset_running_stats()


def decile_entropy(eigenvalues: torch.Tensor) -> float:
    """``-Σ_k q_k log q_k`` of the 9 deciles (quantiles 0.1..0.9, linear interpolation)
    of ``eigenvalues`` normalised to sum 1; terms with ``q_k = 0`` count 0. Equals
    ``log 9`` when the deciles are all equal."""
    lam = eigenvalues.detach().double().reshape(-1)
    if lam.numel() == 0 or not bool(torch.isfinite(lam).all()):
        raise FloatingPointError("vkdnw: eigenvalues are empty or not finite")
    q = torch.quantile(lam, torch.tensor(_DECILES, dtype=torch.float64, device=lam.device))
    total = float(q.sum())
    if not total > 0.0:
        raise FloatingPointError(
            "vkdnw: the eigenvalue deciles sum to 0 (nearly all Fisher eigenvalues are 0: "
            "the logits barely depend on the parameters); the entropy is undefined"
        )
    q = q / total
    q = q[q > 0]
    return float(-(q * q.log()).sum())


@register_proxy("vkdnw", higher_is_better=True)
def vkdnw(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """VKDNW (Týbl & Neumann, CVPR 2025): entropy ``-Σ_k q_k log q_k`` of the 9 deciles
    (quantiles 0.1..0.9, linear interpolation) of the eigenvalues of the Fisher
    information ``F``, normalised to ``Σ q_k = 1`` (``q_k = 0`` terms count 0; the
    maximum, ``log 9``, means a flat spectrum between the deciles).

    ``F = mean_n J_nᵀ (diag(p_n) - p_n p_nᵀ) J_n`` over the samples of ``inputs.x``
    (:func:`vkdnw_fisher`; no label is used): the Fisher of the categorical likelihood
    at the model's own prediction, with ``p_n`` the softmax of sample n's logits mixed
    with 5% uniform, ``p_n = 0.95 softmax(logits_n) + 0.05 / classes``, as the authors'
    code does (``VKDNW_SMOOTHING``; it keeps ``F`` informative when the re-initialised
    network's logits saturate the softmax). ``J_n`` is sample n's Jacobian of the
    logits w.r.t. ONE scalar per parameter tensor -- its first entry, as the authors'
    code picks -- for every parameter tensor of the model (P of them; BatchNorm /
    LayerNorm affine tensors and biases included).

    As in the authors' code the weights are first re-drawn from ``gen``
    (:func:`kaiming_fanin_init_`: conv / linear weights Kaiming-normal fan_in, biases 0,
    BatchNorm / GroupNorm affine 1 and 0, BatchNorm running statistics reset), then the
    model runs in eval mode (BatchNorm normalises with those running statistics, so
    samples do not interact). Eigenvalues by ``eigvalsh`` in float64, clamped at 0
    (``F`` is positive semi-definite). Raises for a model without parameters, a
    BatchNorm without running statistics, a non-finite ``F``, or deciles summing to 0.
    """
    x = prepare(model, inputs, train=False)
    if any(isinstance(m, _BN) and m.running_mean is None for m in model.modules()):
        raise ValueError(
            "vkdnw runs the model in eval mode and needs per-sample outputs; a BatchNorm "
            "without running statistics normalises with the batch's, mixing the samples"
        )
    kaiming_fanin_init_(model, gen)
    fisher = vkdnw_fisher(model, x)
    if not bool(torch.isfinite(fisher).all()):
        raise FloatingPointError("vkdnw: the Fisher information is not finite (logits overflow)")
    eig = torch.linalg.eigvalsh(fisher).clamp_min(0.0)
    return decile_entropy(eig)


def trainable_tensors(model: nn.Module) -> int:
    """The VKDNW paper's ℵ: the number of parameter tensors that require grad (each
    weight and each bias counts once; shared tensors once)."""
    return sum(1 for p in model.parameters() if p.requires_grad)


@register_proxy("vkdnw_single", higher_is_better=True)
def vkdnw_single(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """VKDNW's single-proxy ranking score (Týbl & Neumann, CVPR 2025): ``ℵ + vkdnw``.

    ``ℵ`` ("dimension") is the number of parameter tensors with ``requires_grad`` in the
    model as given (each weight and bias tensor once -- what the authors' code counts
    as ``len(named_parameters())``); ``vkdnw`` is the :func:`vkdnw` entropy, in
    ``[0, log 9]``, added as is. ℵ thus dominates: networks are grouped by their
    parameter-tensor count and ordered within a group by the entropy (the sum is not a
    strict lexicographic order, since ``log 9 > 1``).
    """
    aleph = trainable_tensors(model)  # before vkdnw's prepare() makes every tensor trainable
    return float(aleph) + vkdnw(model, inputs, gen)
