"""DE-Score: population-normalised weighted sum of train-free proxies and latency."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from torch import nn

from hwnas.core.checks import check_numbers
from hwnas.core.types import ProxyInputs, to_plain
from hwnas.proxies.base import get_proxy, score_all
from hwnas.proxies.normalize import applicable, normalize_term

log = logging.getLogger(__name__)

_CONFIG_KEYS = ("weights", "normalize", "extra", "proxies", "latency_penalty", "latency_limit_ms")


class DEScore:
    """The DE-Score of a candidate population; higher is better.

    Components and the proxies behind them by default (DE-NAS's; ``proxies=`` maps a
    component to any registered proxy, e.g. ``{"complexity": "flops"}``):

    ============  ======================================  =====================
    component     raw value                               sign
    ============  ======================================  =====================
    expressivity  ``zen`` (Zen-score, BN term)            +
    complexity    ``ntk`` (NTK condition number)          - (lower is better)
    diversity     ``nuclear_diversity`` (nuclear norms)   +
    saliency      ``synflow`` (float64, BN off)           +
    latency       ``latency_ms`` passed in                - (lower is better)
    ============  ======================================  =====================

    Every proxy-backed term takes the sign of its proxy's ``higher_is_better``. The raw
    values differ by orders of magnitude, so :meth:`combine` normalises each across the
    population before the weighted sum ``Σ_t w_t · norm_t(sign_t · raw_t)``:

    - ``"logrank"``: AZ-NAS's non-linear aggregation, ``log(rank / n)`` with rank 1 the
      worst and n the best (the best gets 0; one low rank costs a lot);
    - ``"rank"``: average ranks scaled to [0, 1] (best 1, worst 0; a population of one
      gets 0.5), so every weighted term spans the same range;
    - ``"zlog"``: z-score across the population of ``sign · sign(v) · log1p(|v|)``;
    - ``"reference_cnn"`` / ``"reference_transformer"``: no normalisation, DE-NAS's own
      formula on the raw values (:meth:`_reference`), for comparison.

    :meth:`combine_against` normalises candidates against a fixed reference population
    instead (rank: the fraction of the reference beaten; logrank: the log-rank among
    the reference; zlog: the reference's mean and standard deviation), so a score
    never changes as more archs are evaluated; samplers that remember told values
    (NSGA-II, TPE) use it.

    NaN or infinite raw values rank worst (below every finite value; in ``zlog`` one
    unit under the lowest finite z-score). Weights must be ``>= 0``; a zero or missing
    weight means the component is neither computed nor combined. ``extra`` maps further
    registered proxies to weights (e.g. ``{"naswot": 1.0}``). Latency acts as a penalty
    when weighted and ``latency_penalty`` is true, and as a hard constraint when
    ``latency_limit_ms`` is set: candidates over the limit score ``-inf`` and the others
    are normalised among themselves.

    Named scores: :meth:`default` (``conf/proxy/descore.yaml``: AZ-NAS's four terms,
    NASWOT and latency, log-rank), :meth:`denas` (``denas_rank.yaml``: DE-NAS's five
    components, ranks) and :meth:`denas_reference` (``denas_reference.yaml``: DE-NAS's
    formula on raw values); ``docs/proxies.md`` explains the choice.
    """

    COMPONENTS = ("expressivity", "complexity", "diversity", "saliency", "latency")
    PROXY_OF = {
        "expressivity": "zen",
        "complexity": "ntk",
        "diversity": "nuclear_diversity",
        "saliency": "synflow",
    }  # fmt: skip  (DE-NAS's proxies; see ``proxies=``)
    NORMALIZE = ("rank", "zlog", "logrank", "reference_cnn", "reference_transformer")
    REFERENCE = ("reference_cnn", "reference_transformer")
    # The shipped default: AZ-NAS's four terms with its log-rank aggregation, NASWOT
    # for the activation patterns, and latency (docs/proxies.md explains the choice).
    DEFAULT_PROXIES = {"expressivity": "az_expressivity", "complexity": "flops"}
    DEFAULT_EXTRA = {"az_progressivity": 1.0, "az_trainability": 1.0, "naswot": 1.0,
                     "softmax_confidence": 1.0, "wpca": 1.0}  # fmt: skip

    def __init__(
        self,
        weights: Mapping[str, float],
        normalize: str = "rank",
        extra: Mapping[str, float] | None = None,
        latency_penalty: bool = True,
        latency_limit_ms: float | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        unknown = sorted(set(weights) - set(self.COMPONENTS))
        if unknown:
            raise ValueError(
                f"unknown DE-Score components {unknown}; use {list(self.COMPONENTS)} "
                "(put other proxies under extra=)"
            )
        if normalize not in self.NORMALIZE:
            raise ValueError(f"normalize={normalize!r}; choose one of {list(self.NORMALIZE)}")
        self.normalize = normalize
        self.proxy_of = dict(self.PROXY_OF)
        for comp, name in (proxies or {}).items():
            if comp not in self.PROXY_OF:
                raise ValueError(
                    f"proxies: {comp!r} is not a proxy-backed component; remap any of "
                    f"{list(self.PROXY_OF)}"
                )
            get_proxy(str(name))  # KeyError listing the registered proxies
            self.proxy_of[comp] = str(name)
        self.latency_penalty = bool(latency_penalty)
        self.weights = {c: _weight(c, w) for c, w in weights.items() if _weight(c, w) != 0.0}
        if not self.latency_penalty:
            self.weights.pop("latency", None)
        if latency_limit_ms is not None and not float(latency_limit_ms) > 0.0:
            raise ValueError(f"latency_limit_ms must be > 0 or null, got {latency_limit_ms}")
        self.latency_limit_ms = None if latency_limit_ms is None else float(latency_limit_ms)
        self.extra: dict[str, float] = {}
        for name, w in (extra or {}).items():
            if name in self.COMPONENTS:
                raise ValueError(f"extra proxy {name!r} clashes with a component name")
            get_proxy(name)  # KeyError listing the registered proxies
            if _weight(name, w) != 0.0:
                self.extra[name] = _weight(name, w)
        if not self.weights and not self.extra:
            raise ValueError("DE-Score has no non-zero weight; set at least one in weights=")
        if normalize in self.REFERENCE:
            if self.extra:
                raise ValueError(
                    f"normalize={normalize} is DE-NAS's own formula over its five components; "
                    "it takes no extra= proxies (use rank, zlog or logrank for those)"
                )
            if normalize == "reference_cnn" and {"expressivity", "saliency"} - set(self.weights):
                raise ValueError(
                    "normalize=reference_cnn divides expressivity by saliency: give both a "
                    "non-zero weight"
                )

    @classmethod
    def denas(cls) -> DEScore:
        """DE-NAS's five components (zen, ntk, nuclear_diversity, synflow, latency),
        weight 1.0 each, rank-normalised across the population (``proxy=denas_rank``)."""
        return cls(dict.fromkeys(cls.COMPONENTS, 1.0), normalize="rank")

    @classmethod
    def denas_reference(cls, form: str = "cnn") -> DEScore:
        """DE-NAS's reference formula on raw values (``proxy=denas_reference``; see
        :meth:`combine_against`), weight 1.0 each; ``form`` is ``cnn`` or ``transformer``."""
        if form not in ("cnn", "transformer"):
            raise ValueError(f"form={form!r}; choose cnn or transformer")
        return cls(dict.fromkeys(cls.COMPONENTS, 1.0), normalize=f"reference_{form}")

    @classmethod
    def default(cls) -> DEScore:
        """The shipped default (``conf/proxy/descore.yaml``): expressivity from
        ``az_expressivity``, complexity from ``flops``, plus ``az_progressivity``,
        ``az_trainability`` and ``naswot``, for transformers ``softmax_confidence`` and
        ``wpca`` (left out where a network reports no attention / FFN), and latency;
        every term weight 1.0, AZ-NAS's log-rank aggregation."""
        weights = {"expressivity": 1.0, "complexity": 1.0, "latency": 1.0}
        return cls(weights, "logrank", dict(cls.DEFAULT_EXTRA), proxies=cls.DEFAULT_PROXIES)

    @classmethod
    def from_config(cls, cfg: Mapping) -> DEScore:
        """Build from a mapping (e.g. a Hydra node) with keys ``weights`` (required),
        ``normalize``, ``extra``, ``latency_penalty``, ``latency_limit_ms``; any other
        key is a ``ValueError`` listing the valid ones."""
        unknown = sorted(str(k) for k in cfg if k not in _CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"unknown DE-Score config keys {unknown}; valid keys: {list(_CONFIG_KEYS)}"
            )
        if "weights" not in cfg:
            raise ValueError("DE-Score config needs a 'weights' mapping (component -> weight)")
        raw = to_plain(cfg)  # only the keys given: the constructor owns the defaults
        for group in ("weights", "extra", "latency_limit_ms"):
            check_numbers(f"proxy.{group}", raw.get(group))
        convert = {
            "weights": lambda v: {str(k): float(x) for k, x in v.items()},
            "normalize": str,
            "extra": lambda v: {str(k): float(x) for k, x in v.items()} if v else None,
            "latency_penalty": bool,
            "latency_limit_ms": lambda v: None if v is None else float(v),
            "proxies": lambda v: {str(k): str(x) for k, x in v.items()} if v else None,
        }
        return cls(**{k: convert[k](v) for k, v in raw.items()})

    @property
    def needs_latency(self) -> bool:
        """Whether :meth:`components` needs ``latency_ms`` (penalty or constraint)."""
        return "latency" in self.weights or self.latency_limit_ms is not None

    @property
    def terms(self) -> dict[str, tuple[float, float]]:
        """Key in a raw dict -> (weight, sign) of every term that enters the score."""
        out = {c: (w, self._sign(self.proxy_of.get(c))) for c, w in self.weights.items()}
        for name, w in self.extra.items():
            out[name] = (w, self._sign(name))
        return out

    @staticmethod
    def _sign(proxy: str | None) -> float:
        """+1 for a proxy where higher is better, -1 otherwise; latency (None) is -1."""
        return -1.0 if proxy is None or not get_proxy(proxy).higher_is_better else 1.0

    def proxy_for(self, key: str) -> str:
        """The registered proxy behind a term (a component or an extra proxy)."""
        return self.proxy_of.get(key, key)

    def proxies(self) -> list[str]:
        """Registered proxies whose scores the weighted terms need."""
        return list(dict.fromkeys(self.proxy_for(k) for k in self.terms if k != "latency"))

    def components(
        self,
        model: nn.Module,
        inputs: ProxyInputs,
        seed: int = 0,
        latency_ms: float | None = None,
        failures: dict[str, str] | None = None,
        known: Mapping[str, float] | None = None,
        owned: bool = False,
    ) -> dict[str, float]:
        """Raw values of every weighted component and extra proxy, each scored on a copy
        of ``model`` (:func:`~hwnas.proxies.base.score_proxies`). ``latency_ms`` is
        required iff latency is weighted or limited (it is measured or predicted
        elsewhere). ``known`` gives proxy values already at hand (e.g. ``flops`` and
        ``params`` from an analytic cost model), which are then not scored again.
        ``owned=True``: ``model`` was built for this call and may be consumed (saves
        a deep copy; see :func:`~hwnas.proxies.base.score_proxies_report`).
        Without ``failures`` the first proxy that fails raises; with a dict, each failed
        proxy's one-line error is stored there under its name and its terms are NaN,
        which :meth:`combine` ranks last on those terms."""
        if self.needs_latency and latency_ms is None:
            raise ValueError(
                "this DE-Score uses latency: pass latency_ms= (measured or predicted), or "
                "set its weight to 0 / latency_penalty=False and latency_limit_ms=null"
            )
        needed = self.proxies()
        scores = {k: float(v) for k, v in (known or {}).items() if k in needed}
        todo = [name for name in needed if name not in scores]
        # strict (no ``failures``): a failed proxy raises; lenient: it is NaN, which
        # ranks last on its term. Either way a proxy that does not apply to the model
        # (NotApplicable: e.g. attention terms of a CNN) is None, left out of its sum.
        report = score_all(todo, model, inputs, seed, failures is None, owned, allow_na=True)
        if failures is not None:  # not applicable is no failure: nothing to report
            failures.update(
                {n: m for n, m in report.failures.items() if n not in report.not_applicable}
            )
        scores.update({name: report.scores.get(name, math.nan) for name in todo})
        raw = {
            key: scores[self.proxy_for(key)]
            for key in self.terms
            if key != "latency" and self.proxy_for(key) not in report.not_applicable
        }  # a term the network does not have is absent from its raw dict
        if latency_ms is not None and self.needs_latency:
            raw["latency"] = float(latency_ms)
        return raw

    def combine(
        self, raws: Sequence[Mapping[str, float]], drop: Collection[str] = ()
    ) -> np.ndarray:
        """Scores (n,) of a population of raw dicts, normalised among themselves; higher
        is better. ``drop`` names terms left out of the sum (e.g. ``("latency",)`` when
        latency is optimised separately); the latency limit still applies."""
        return self.combine_against(None, raws, drop)

    def combine_against(
        self,
        reference: Sequence[Mapping[str, float]] | None,
        raws: Sequence[Mapping[str, float]],
        drop: Collection[str] = (),
    ) -> np.ndarray:
        """Scores (n,) of ``raws``, each normalised against a fixed ``reference``
        population instead of among themselves, so an arch's score depends only on the
        arch and the reference and never changes as more archs are scored.

        ``"rank"``: the fraction of the reference the candidate beats, ties counting
        half (the reference's empirical CDF; in [0, 1]; 0.5 with an empty reference).
        ``"zlog"``: the z-score under the reference's mean and standard deviation
        (0 with an empty or constant reference). Reference members over the latency
        limit are left out of the reference; candidates over it score ``-inf``.
        ``reference=None`` is :meth:`combine` (``raws`` normalised among themselves).
        """
        unknown = sorted(set(drop) - set(self.COMPONENTS) - set(self.extra))
        if unknown:
            raise ValueError(f"drop={unknown}: not terms of this DE-Score {list(self.terms)}")
        n = len(raws)
        total = np.zeros(n, dtype=np.float64)
        if n == 0:
            return total
        feasible = self._within_limit(raws)
        if self.normalize in self.REFERENCE:  # raw values, no population: nothing to normalise
            total = self._reference(raws, drop)
            total[~feasible] = -np.inf
            return total
        ref_ok = None if reference is None else self._within_limit(reference)
        for key, (w, sign) in self.terms.items():
            if key in drop:
                continue
            found = [_get(r, key, i) for i, r in enumerate(raws)]
            applies = applicable(found) & feasible
            if not applies.any():  # a term no candidate has is left out
                continue
            values = np.array([_as_float(v) for v in found])
            ref = None
            if reference is not None:
                ref_found = [_get(r, key, i) for i, r in enumerate(reference)]
                keep = ref_ok & applicable(ref_found)
                ref = np.array([_as_float(v) for v, k in zip(ref_found, keep) if k])
            norm = normalize_term(self.normalize, sign, values[applies], ref)
            total[applies] += w * norm
            # a candidate without the term (its model declares it has none) gets the
            # mean of the others: neither rewarded nor punished for what it lacks
            total[feasible & ~applies] += w * float(np.mean(norm))
        total[~feasible] = -np.inf
        return total

    def _reference(self, raws: Sequence[Mapping[str, float]], drop: Collection[str]) -> np.ndarray:
        """DE-NAS's own formula on raw values, as its code computes it:

        - ``reference_cnn``: ``(E·w_E / (S·w_S) − C·w_C + D·w_D) / (1 + L·w_L)``;
        - ``reference_transformer``: ``(E·w_E + C·w_C + D·w_D + S·w_S) / (1 + L·w_L)``
          (a plain weighted sum; complexity enters with a plus sign, as there);

        E expressivity, C complexity, D diversity, S saliency, L latency in ms; a
        component with weight 0 (or dropped) contributes nothing (L: divides by 1). A
        non-finite result ranks worst (``-inf``)."""

        def term(r: Mapping[str, float], key: str, i: int) -> float:
            w = self.weights.get(key, 0.0)
            return np.float64(0.0 if w == 0.0 or key in drop else w * _as_float(_get(r, key, i)))

        out = np.empty(len(raws))
        with np.errstate(all="ignore"):
            for i, r in enumerate(raws):
                e, c, d, sal = (term(r, k, i) for k in self.COMPONENTS[:4])
                if self.normalize == "reference_cnn":
                    # E / S: E's and S's weights both enter, as in DE-NAS (E·w_E / (S·w_S))
                    score = (e / sal if "saliency" not in drop else e) - c + d
                else:
                    score = e + c + d + sal
                out[i] = score / (1.0 + term(r, "latency", i))
        out[~np.isfinite(out)] = -np.inf
        return out

    def _within_limit(self, raws: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Which raws meet the latency limit (all of them without one)."""
        if self.latency_limit_ms is None:
            return np.ones(len(raws), dtype=bool)
        lat = np.array([_as_float(_get(r, "latency", i)) for i, r in enumerate(raws)])
        return np.isfinite(lat) & (lat <= self.latency_limit_ms)

    def score_population(
        self,
        models: Sequence[nn.Module],
        inputs: ProxyInputs,
        seed: int = 0,
        latencies_ms: Sequence[float] | None = None,
    ) -> np.ndarray:
        """DE-Scores (n,) of a population of models, normalised among themselves."""
        if latencies_ms is not None and len(latencies_ms) != len(models):
            raise ValueError(f"{len(latencies_ms)} latencies for {len(models)} models")
        lats = list(latencies_ms) if latencies_ms is not None else [None] * len(models)
        return self.combine([self.components(m, inputs, seed, t) for m, t in zip(models, lats)])

    def __repr__(self) -> str:
        return (
            f"DEScore(weights={self.weights}, normalize={self.normalize!r}, extra={self.extra}, "
            f"latency_penalty={self.latency_penalty}, latency_limit_ms={self.latency_limit_ms})"
        )


def _get(raw: Mapping[str, float], key: str, i: int) -> float | None:
    """``raw[key]``; a term absent from a raw dict (or None) is one the network does not
    have (``components`` leaves out a proxy that raised ``NotApplicable``)."""
    return raw.get(key)


def _weight(name: str, w: float) -> float:
    w = float(w)
    if not math.isfinite(w) or w < 0.0:
        raise ValueError(f"weight of {name!r} is {w}; weights must be finite and >= 0")
    return w


def _as_float(v: float | None) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
