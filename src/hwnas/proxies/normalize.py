"""Normalising proxy scores across a candidate population before they are summed: ranks,
log-ranks (AZ-NAS) and z-scores of logs, against the population itself or a reference."""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import rankdata

log = logging.getLogger(__name__)

_CONFIG_KEYS = ("weights", "normalize", "extra", "proxies", "latency_penalty", "latency_limit_ms")


def _rank(oriented: np.ndarray) -> np.ndarray:
    """Average ranks of oriented values (higher better) scaled to [0, 1]; non-finite worst."""
    n = oriented.shape[0]
    if n == 1:
        return np.full(1, 0.5)
    keyed = np.where(np.isfinite(oriented), oriented, -np.inf)
    return (rankdata(keyed, method="average") - 1.0) / (n - 1.0)


def _logrank(oriented: np.ndarray) -> np.ndarray:
    """AZ-NAS's non-linear rank term ``log(rank / n)``: rank 1 the worst, n the best
    (average ranks for ties; non-finite values worst). The best scores 0; a candidate
    ranked low on one term is pulled down far more than a high rank lifts it."""
    n = oriented.shape[0]
    keyed = np.where(np.isfinite(oriented), oriented, -np.inf)
    return np.log(rankdata(keyed, method="average") / n)


def _logrank_against(reference: np.ndarray, oriented: np.ndarray) -> np.ndarray:
    """``log((1 + #reference beaten, ties half) / (1 + #reference))``: the log-rank each
    candidate would get if added to the reference alone."""
    beaten = _rank_against(reference, oriented) * reference.shape[0]
    return np.log((1.0 + beaten) / (1.0 + reference.shape[0]))


def _rank_against(reference: np.ndarray, oriented: np.ndarray) -> np.ndarray:
    """Fraction of the oriented ``reference`` each oriented value beats (ties half);
    non-finite values rank worst on both sides. 0.5 for an empty reference."""
    if reference.shape[0] == 0:
        return np.full(oriented.shape[0], 0.5)
    ref = np.sort(np.where(np.isfinite(reference), reference, -np.inf))
    keyed = np.where(np.isfinite(oriented), oriented, -np.inf)
    below = np.searchsorted(ref, keyed, side="left")
    upto = np.searchsorted(ref, keyed, side="right")
    return (below + 0.5 * (upto - below)) / ref.shape[0]


def _signed_log(values: np.ndarray, sign: float) -> np.ndarray:
    return sign * np.sign(values) * np.log1p(np.abs(values))


def _zlog_against(reference: np.ndarray, values: np.ndarray, sign: float) -> np.ndarray:
    """z-score of ``sign · sign(v) · log1p(|v|)`` under the reference's finite mean and
    standard deviation; non-finite values one below the reference's lowest z."""
    ref = _signed_log(reference[np.isfinite(reference)], sign)
    out = np.zeros_like(values)
    if ref.shape[0] == 0:
        return out
    mean, std = ref.mean(), ref.std()
    finite = np.isfinite(values)
    out[finite] = (_signed_log(values[finite], sign) - mean) / std if std > 0 else 0.0
    out[~finite] = ((ref.min() - mean) / std if std > 0 else 0.0) - 1.0
    return out


def _zlog(values: np.ndarray, sign: float) -> np.ndarray:
    """z-score of ``sign · sign(v) · log1p(|v|)``; non-finite one below the lowest z."""
    finite = np.isfinite(values)
    out = np.zeros_like(values)
    if finite.any():
        t = sign * np.sign(values[finite]) * np.log1p(np.abs(values[finite]))
        std = t.std()
        out[finite] = (t - t.mean()) / std if std > 0 else 0.0
        out[~finite] = out[finite].min() - 1.0
    return out


def normalize_term(
    method: str, sign: float, values: np.ndarray, reference: np.ndarray | None
) -> np.ndarray:
    """One DE-Score term of a population, normalised by ``method`` (rank, logrank or
    zlog) among ``values`` themselves, or against a fixed ``reference`` population."""
    if reference is None:
        if method == "rank":
            return _rank(sign * values)
        if method == "logrank":
            return _logrank(sign * values)
        return _zlog(values, sign)
    if method == "rank":
        return _rank_against(sign * reference, sign * values)
    if method == "logrank":
        return _logrank_against(sign * reference, sign * values)
    return _zlog_against(reference, values, sign)


def applicable(values: list) -> np.ndarray:
    """Which raw values apply: ``None`` marks a term the model declared it does not
    have (a transformer proxy on a CNN: ``NotApplicable``), NaN a failed score."""
    return np.array([v is not None for v in values], dtype=bool)
