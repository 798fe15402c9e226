"""Transformer proxies: attention confidence and head importance (Serianni & Kalita, ACL
2023), a weight-spectrum capacity (in the spirit of ZeroLM) and W-PCA (ICLR 2025).

- ``head_confidence``, ``softmax_confidence``, ``head_importance`` (Serianni & Kalita,
  "Training-free Neural Architecture Search for RNNs and Transformers", after Voita et
  al., ACL 2019, "confident heads", and Michel et al., NeurIPS 2019, "Are Sixteen Heads
  Really Better than One?"): how peaked the heads' outputs and attention probabilities
  are, and how much the output moves with the token mixers' weights.
- ``weight_spectrum`` (in the spirit of ZeroLM, Chen et al. 2025, arXiv 2503.18646:
  capacity from weight statistics, decomposed into token mixers and the rest).
- ``pca_count`` and ``wpca`` (W-PCA, ICLR 2025, "W-PCA Based Gradient-Free Proxy for
  Efficient Search of Lightweight Language Models"): principal components of the
  feed-forward activations, times the parameter count.

They see a network's token mixers and feed-forward blocks only through
:mod:`hwnas.core.probe`: each opens a recording, runs the model and reads what its
layers reported (ATTENTION: ``probs`` (B, h, T, T) and ``heads`` (B, h, T, d); MIXER:
``heads``; FFN: ``hidden`` (B, T, F)), never looking for classes by name. A proxy that
needs records of a kind the model does not report raises
:class:`~hwnas.proxies.base.NotApplicable`; records of other kinds are skipped. None of
them draws random numbers, so ``gen`` is unused and every value is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hwnas.core import probe
from hwnas.core.probe import ATTENTION, FFN, MIXER, ProbeRecord
from hwnas.core.types import ProxyInputs, probe_kinds
from hwnas.proxies.base import NotApplicable, register_proxy, register_proxy_group
from hwnas.proxies.common import prepare

ETA = 0.99  # W-PCA's share of the variance the principal components must explain
MIXERS = (ATTENTION, MIXER)
GROUP = ("head_confidence", "softmax_confidence", "head_importance", "pca_count", "wpca")
_ATTN = "attention or token mixer (hwnas.core.probe ATTENTION / MIXER records)"
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "head_confidence": (MIXERS, _ATTN),
    "softmax_confidence": (
        (ATTENTION,),
        "attention probabilities (hwnas.core.probe ATTENTION records)",
    ),
    "head_importance": (MIXERS, _ATTN),
    "pca_count": ((FFN,), "feed-forward block (hwnas.core.probe FFN records)"),
    "wpca": ((FFN,), "feed-forward block (hwnas.core.probe FFN records)"),
}


# ------------------------------------------------------------------------ plumbing
def _tensor(record: ProbeRecord, key: str) -> torch.Tensor:
    """``record``'s tensor ``key``, 4-D (``probs``, ``heads``) or 3-D (``hidden``)."""
    t = record.tensors.get(key)
    ndim = 3 if key == "hidden" else 4
    if not isinstance(t, torch.Tensor) or t.ndim != ndim:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(
            f"a {record.kind} record of {type(record.module).__name__} has {key}={got}; "
            f"hwnas.core.probe's contract asks for a {ndim}-D tensor {key!r}"
        )
    return t


def _no_attention_dropout(model: nn.Module) -> None:
    """Zero every float ``attn_dropout`` rate (hwnas's attention layers keep theirs as a
    float, which :func:`prepare` does not know): dropout would draw from the global RNG."""
    for m in model.modules():
        if isinstance(getattr(m, "attn_dropout", None), float):
            m.attn_dropout = 0.0


def _forward(
    model: nn.Module, inputs: ProxyInputs, grad: bool = False
) -> tuple[object, list[ProbeRecord]]:
    """Ready the working copy (train mode, dropout off) and run it once while a
    :func:`hwnas.core.probe.record` block is open: (output, records)."""
    x = prepare(model, inputs)
    _no_attention_dropout(model)
    with torch.set_grad_enabled(grad), probe.record() as records:
        out = model(x)
    return out, records


def _output_tensor(out: object) -> torch.Tensor:
    """The model's output tensor: itself, the first of a tuple, or ``.logits``."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    elif isinstance(out, Mapping) and "logits" in out:
        out = out["logits"]
    elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise TypeError(f"head_importance needs a float tensor output, got {type(out).__name__}")
    return out


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


# ---------------------------------------------------------------- the definitions
def head_confidence_of(records: Sequence[ProbeRecord]) -> float:
    """Mean over ATTENTION and MIXER records (layers) of
    ``mean_{b,h,t} max_d |H[b,h,t,d]|``, ``H`` the record's ``heads`` (B, h, T, d)."""
    return _mean(
        [
            float(_tensor(r, "heads").detach().abs().amax(dim=-1).double().mean())
            for r in records
            if r.kind in MIXERS
        ]
    )


def softmax_confidence_of(records: Sequence[ProbeRecord]) -> float:
    """Mean over ATTENTION records (layers) of ``mean_{b,h,i} max_j P[b,h,i,j]``."""
    return _mean(
        [
            float(_tensor(r, "probs").detach().amax(dim=-1).double().mean())
            for r in records
            if r.kind == ATTENTION
        ]
    )


def mixer_weights(records: Sequence[ProbeRecord]) -> list[nn.Parameter]:
    """Parameters with ``ndim >= 2`` of the modules that reported ATTENTION or MIXER
    records, each module and each tensor once, in order of first report."""
    modules: dict[int, nn.Module] = {}
    for r in records:
        if r.kind in MIXERS:
            modules.setdefault(id(r.module), r.module)
    weights: dict[int, nn.Parameter] = {}
    for m in modules.values():
        for p in m.parameters():
            if p.ndim >= 2:
                weights.setdefault(id(p), p)
    return list(weights.values())


def head_importance_of(out: object, records: Sequence[ProbeRecord]) -> float:
    """``Σ |W ⊙ ∂R/∂W|`` (float64) over :func:`mixer_weights`, ``R`` the sum of the
    model output (the authors back-propagate a ones gradient of the output). Mixers
    without weights (a Fourier transform) contribute 0."""
    weights = [w for w in mixer_weights(records) if w.requires_grad]
    if not weights:
        return 0.0
    r = _output_tensor(out)
    if not r.requires_grad:
        raise ValueError("head_importance: the model output does not depend on its weights")
    grads = torch.autograd.grad(r.sum(), weights, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64, device=r.device)
    for w, g in zip(weights, grads):
        if g is not None:
            total += (w.detach().double() * g.double()).abs().sum()
    return float(total)


def pca_components(hidden: torch.Tensor, eta: float = ETA) -> int:
    """Fewest principal components that explain a share ``eta`` of the variance of
    ``hidden``'s rows: ``hidden`` (..., F) is read as (N, F), N samples of F units,
    centred per unit; the eigenvalues λ₁ ≥ λ₂ ≥ … of its covariance (float64) give the
    smallest k with ``λ₁ + … + λ_k ≥ eta · Σλ``. 0 when every unit is constant."""
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must be in (0, 1], got {eta}")
    x = hidden.detach().reshape(-1, hidden.shape[-1]).double()
    x = x - x.mean(dim=0, keepdim=True)
    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T  # same non-zero eigenvalues
    lam = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0.0)
    total = float(lam.sum())
    if not total > 0.0:
        return 0
    below = int((torch.cumsum(lam, 0) < eta * total).sum())
    return min(below + 1, lam.numel())


def _scores(
    model: nn.Module, inputs: ProxyInputs, names: Sequence[str], shared: bool = False
) -> dict[str, Any]:
    """The transformer proxies ``names`` (members of :data:`GROUP`) from one recorded
    forward (with a backward when ``head_importance`` is asked for). A proxy the model
    has nothing for raises ``NotApplicable``; in the ``shared`` pass that exception is
    its value instead, so the others are still scored from the same forward."""
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)  # as `params`
    declared = probe_kinds(model)  # a network that declares it reports nothing needed
    if declared is not None and not any(declared & set(_NEEDS[n][0]) for n in names):
        out, records, kinds = None, [], set(declared)  # needs no forward to say so
    else:
        out, records = _forward(model, inputs, grad="head_importance" in names)
        kinds = {r.kind for r in records}
    missing: dict[str, NotApplicable] = {}
    for name in names:
        need, what = _NEEDS[name]
        if not kinds.intersection(need):
            missing[name] = NotApplicable(
                f"{name}: the model reports no {what}; it applies to transformers "
                "whose layers report through hwnas.core.probe"
            )
            if not shared:
                raise missing[name]
    names = [n for n in names if n not in missing]
    values: dict[str, Any] = dict(missing)
    if "head_confidence" in names:
        values["head_confidence"] = head_confidence_of(records)
    if "softmax_confidence" in names:
        values["softmax_confidence"] = softmax_confidence_of(records)
    if "head_importance" in names:
        values["head_importance"] = head_importance_of(out, records)
    if "pca_count" in names or "wpca" in names:
        count = sum(pca_components(_tensor(r, "hidden")) for r in records if r.kind == FFN)
        values["pca_count"] = float(count)
        values["wpca"] = float(n_params) * float(count)
    return values


@register_proxy_group(GROUP)
def _transformer_pass(
    model: nn.Module, inputs: ProxyInputs, gen: torch.Generator, names: Sequence[str]
) -> dict[str, Any]:
    return _scores(model, inputs, names, shared=True)


# -------------------------------------------------------------- the registrations
@register_proxy("head_confidence", higher_is_better=True)
def head_confidence(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Head confidence (Serianni & Kalita, ACL 2023, after Voita et al., ACL 2019), in
    the spirit of the paper: for every ATTENTION and MIXER record of one forward (train
    mode, dropout off, weights as they are), the per-head outputs ``H`` (B, h, T, d)
    give ``C_h = mean_{b,t} max_d |H[b,h,t,d]|`` (how large the head's strongest output
    feature is, per sample and token); ``C_layer = mean_h C_h`` and the score is the mean
    over layers (records). The authors' code took the signed maximum over tokens of the
    q/k/v projections' outputs; here it is the head's own output, as the probe reports
    it. Layers that report only FFN records are skipped; a model with no ATTENTION or
    MIXER record raises ``NotApplicable``.
    """
    return _scores(model, inputs, ("head_confidence",))["head_confidence"]


@register_proxy("softmax_confidence", higher_is_better=True)
def softmax_confidence(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Softmax confidence (Serianni & Kalita, ACL 2023; Voita et al.'s confidence of a
    head): for every ATTENTION record of one forward (train mode, dropout off), the
    attention probabilities ``P`` (B, h, T, T) give ``mean_{b,h,i} max_j P[b,h,i,j]``,
    the mean over samples, heads and query tokens of the largest attention weight of
    the query (1/T for uniform attention, 1 for one-hot); the score is the mean over
    layers. MIXER layers (no probabilities) are skipped; a model with no ATTENTION
    record raises ``NotApplicable``. Padded query rows are counted like the others.
    """
    return _scores(model, inputs, ("softmax_confidence",))["softmax_confidence"]


@register_proxy("head_importance", higher_is_better=True)
def head_importance(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Head importance (Serianni & Kalita, ACL 2023, after Michel et al., NeurIPS 2019),
    as the authors' code computes it: one forward (train mode, dropout off, weights as
    they are) and the backward of ``R = sum(model output)`` (a ones gradient of the
    output, no labels), then ``Σ |W ⊙ ∂R/∂W|`` in float64 over every weight with
    ``ndim >= 2`` of the modules that reported ATTENTION or MIXER records (their
    ``parameters()``: q/k/v and output projections). Weight-free mixers contribute 0; a
    model with no ATTENTION or MIXER record raises ``NotApplicable``.
    """
    return _scores(model, inputs, ("head_importance",))["head_importance"]


@register_proxy("pca_count", higher_is_better=True)
def pca_count(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """W-PCA's PCA term (ICLR 2025): for every FFN record of one forward (train mode,
    dropout off), the hidden activations (B, T, F) read as B·T samples of F units,
    centred per unit, need ``k`` principal components to explain η = 0.99 of their
    variance (smallest k with ``λ₁ + … + λ_k ≥ η Σλ``, float64 covariance
    eigenvalues); the score is ``Σ k`` over FFN records. At most ``min(B·T - 1, F)``
    per layer, so the batch should hold more tokens than the widest FFN. Attention and
    mixer records are skipped; a model with no FFN record raises ``NotApplicable``.
    """
    return _scores(model, inputs, ("pca_count",))["pca_count"]


@register_proxy("wpca", higher_is_better=True)
def wpca(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """W-PCA (ICLR 2025): the number of trainable parameters (as the ``params`` proxy
    counts them) times ``pca_count`` (the summed number of principal components that
    explain 99% of each FFN's hidden-activation variance), the raw product, not its
    log. A model with no FFN record raises ``NotApplicable``.
    """
    return _scores(model, inputs, ("wpca",))["wpca"]


# ------------------------------------------------------------------ weight spectrum
def weight_matrix(p: torch.Tensor) -> torch.Tensor | None:
    """``p`` as a matrix: its size-1 dims dropped, then (first dim, rest) — a conv
    kernel becomes (out, in·k·k); ``None`` when fewer than two dims exceed 1 (biases,
    norm scales, a class token)."""
    dims = [s for s in p.shape if s > 1]
    if len(dims) < 2:
        return None
    return p.detach().reshape(dims[0], -1)


def spectral_capacity(w: torch.Tensor) -> float:
    """``log(1 + Σ σ_i)``: the log of one plus the nuclear norm of ``w`` (singular values
    in float32, summed in float64)."""
    return math.log1p(float(torch.linalg.svdvals(w.float()).double().sum()))


@register_proxy("weight_spectrum", higher_is_better=True)
def weight_spectrum(model: nn.Module, inputs: ProxyInputs, gen: torch.Generator) -> float:
    """Spectral capacity, in the spirit of ZeroLM (Chen et al. 2025, arXiv 2503.18646:
    capacity from weight statistics, decomposed into functional sub-modules), not its
    formula. Every parameter with at least two dims larger than 1 is a matrix (size-1
    dims dropped, conv kernels as out × in·k·k); each scores
    ``c(W) = log(1 + ‖W‖_*)``, ``‖W‖_*`` its nuclear norm (sum of singular values):
    it grows with both the rank and the scale of the weights, and the log keeps one
    huge matrix from outweighing many. The matrices are summed in two groups: token
    mixers (the parameters of the modules that report ATTENTION or MIXER records in one
    probe forward) ``S_mix`` and the rest (FFN, embeddings, head) ``S_rest``; the score
    is ``½ log S_mix + ½ log S_rest``: equal weights in log space, so doubling either
    group's capacity adds the same (equal weights on the raw sums would just be the
    ungrouped total). An empty group is left out (no records, or weight-free mixers:
    ``log S_all``), so it applies to any network. Data-free: the forward only learns
    which modules mix tokens.
    """
    _, records = _forward(model, inputs)
    mixing = {id(p) for p in mixer_weights(records)}
    sums: dict[bool, float] = {}
    for p in model.parameters():
        w = weight_matrix(p)
        if w is not None:
            group = id(p) in mixing
            sums[group] = sums.get(group, 0.0) + spectral_capacity(w)
    if not sums:
        raise NotApplicable("weight_spectrum: the model has no weight matrices")
    return _mean([math.log(s) if s > 0.0 else -math.inf for s in sums.values()])
