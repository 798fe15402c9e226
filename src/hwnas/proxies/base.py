"""Proxy registry: train-free scores of a network, each computed on a copy."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from hwnas.core.registry import Registry
from hwnas.core.types import ProxyInputs

log = logging.getLogger(__name__)


ProxyFn = Callable[[nn.Module, ProxyInputs, torch.Generator], float]
GroupFn = Callable[[nn.Module, ProxyInputs, torch.Generator, Sequence[str]], Mapping[str, float]]


class NotApplicable(ValueError):
    """The proxy does not apply to this model: it lacks what the proxy measures (e.g.
    a transformer proxy on a network that reports no attention through
    :mod:`hwnas.core.probe`). :func:`score_proxies_report` lists it under ``failures``
    (so a correlation table ranks the network last on that proxy) and in
    ``not_applicable``; a DE-Score leaves the term out for that network instead."""


@dataclass(frozen=True)
class Proxy:
    name: str
    fn: ProxyFn
    higher_is_better: bool = True
    doc: str = ""


# the built-ins register when hwnas.proxies is imported (by name: it builds on this module)
PROXIES: Registry[Proxy] = Registry("proxy", builtins=("hwnas.proxies",))
_GROUPS: list[tuple[frozenset[str], GroupFn]] = []


def register_proxy_group(names: Sequence[str]) -> Callable[[GroupFn], GroupFn]:
    """Decorator: ``fn(model, inputs, generator, names) -> {name: value}`` computes the
    proxies ``names`` (any subset of them) in one shared pass on one copy. It must give
    each proxy exactly the value its own function gives for the same seed; for a member
    whose own function would raise :class:`NotApplicable`, that exception is the value."""

    def deco(fn: GroupFn) -> GroupFn:
        _GROUPS.append((frozenset(names), fn))
        return fn

    return deco


def register_proxy(name: str, higher_is_better: bool = True) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator: register ``fn(model, inputs, generator) -> float`` under ``name``."""

    def deco(fn: ProxyFn) -> ProxyFn:
        if PROXIES.is_registered(name):
            raise ValueError(f"proxy {name!r} registered twice")
        PROXIES.register(name, Proxy(name, fn, higher_is_better, (fn.__doc__ or "").strip()))
        return fn

    return deco


def get_proxy(name: str) -> Proxy:
    if name not in PROXIES:
        raise KeyError(f"unknown proxy {name!r}; registered proxies: {PROXIES.names()}")
    return PROXIES.get(name)


def list_proxies() -> list[str]:
    return PROXIES.names()


def score_proxy(
    name: str, model: nn.Module, inputs: ProxyInputs, seed: int = 0, owned: bool = False
) -> float:
    """Score ``model`` with proxy ``name`` on a deep copy; deterministic for ``seed``.

    ``owned=True`` hands the model over instead: the proxy works on it directly (no
    copy) and may leave it changed, for callers that built it for this call alone.
    Raises ``FloatingPointError`` with the proxy's name when the result is not finite.
    """
    proxy = get_proxy(name)
    work = model if owned else copy.deepcopy(model)
    gen = torch.Generator(device=inputs.x.device).manual_seed(int(seed))
    return _finite(name, proxy.fn(work, inputs, gen))


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise FloatingPointError(f"proxy {name!r} gave a non-finite value ({value})")
    return value


@dataclass
class ScoreReport:
    """Per-proxy outcome of :func:`score_proxies_report`: finite scores, one-line error
    messages of the proxies that failed, and seconds spent (a shared pass is split
    evenly among the proxies it served)."""

    scores: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    not_applicable: set[str] = field(default_factory=set)


def score_proxies_report(
    names: Sequence[str],
    model: nn.Module,
    inputs: ProxyInputs,
    seed: int = 0,
    owned: bool = False,
) -> ScoreReport:
    """Score ``model`` with every proxy in ``names``, never raising for one proxy.

    Proxies of a registered group (:func:`register_proxy_group`) that are asked for
    together share one copy and one pass; each value equals what :func:`score_proxy`
    gives for that proxy and seed. Unknown names still raise ``KeyError`` up front.
    With ``owned=True`` (a model built for this call alone) the last single-proxy pass
    runs on the model itself, saving one deep copy; the values are the same.
    """
    return score_all(names, model, inputs, seed, strict=False, owned=owned)


def score_all(
    names: Sequence[str],
    model: nn.Module,
    inputs: ProxyInputs,
    seed: int,
    strict: bool,
    owned: bool = False,
    allow_na: bool = False,
) -> ScoreReport:
    """:func:`score_proxies_report`; with ``strict`` the first proxy that fails on its
    own raises its error as it was (type and traceback), noting the proxy's name;
    ``allow_na`` records :class:`NotApplicable` proxies instead of raising even then
    (what a DE-Score needs: a term the network does not have is left out)."""
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        get_proxy(name)
    report = ScoreReport()
    left = list(wanted)
    for members, fn in _GROUPS:
        batch = [n for n in left if n in members]
        if len(batch) < 2:
            continue
        left = [n for n in left if n not in batch]
        t0 = time.perf_counter()
        try:
            gen = torch.Generator(device=inputs.x.device).manual_seed(int(seed))
            values = fn(copy.deepcopy(model), inputs, gen, batch)
        except Exception as exc:  # noqa: BLE001 - a shared pass failed: score one by one
            log.debug("shared pass for %s failed (%s); scoring one by one", batch, exc)
            left.extend(batch)
            continue
        share = (time.perf_counter() - t0) / len(batch)
        report.seconds.update(dict.fromkeys(batch, share))
        for n in batch:  # a member's non-finite value is that proxy's own failure
            if isinstance(values[n], NotApplicable):  # as its own function would raise
                report.not_applicable.add(n)
                report.failures[n] = f"{NotApplicable.__name__}: {values[n]}"
                if strict and not allow_na:
                    raise values[n]
                continue
            try:
                report.scores[n] = _finite(n, values[n])
            except FloatingPointError as exc:
                if strict:
                    exc.add_note(f"(while scoring proxy {n!r})")
                    raise
                report.failures[n] = str(exc)
    singles = [name for name in wanted if name in left]
    for name in singles:
        t0 = time.perf_counter()
        try:
            last = owned and name == singles[-1]  # nothing scores the model after it
            report.scores[name] = score_proxy(name, model, inputs, seed, owned=last)
        except Exception as exc:  # noqa: BLE001 - reported per proxy
            if isinstance(exc, NotApplicable):
                report.not_applicable.add(name)
            if strict and not (allow_na and isinstance(exc, NotApplicable)):
                exc.add_note(f"(while scoring proxy {name!r})")
                raise
            report.failures[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        report.seconds[name] = time.perf_counter() - t0
    report.scores = {n: report.scores[n] for n in wanted if n in report.scores}
    return report


def score_proxies(
    names: Sequence[str],
    model: nn.Module,
    inputs: ProxyInputs,
    seed: int = 0,
    owned: bool = False,
) -> dict[str, float]:
    """``{name: score}`` for every proxy in ``names`` (shared passes where possible,
    see :func:`score_proxies_report`); the first proxy that fails raises its own
    error, with its original traceback and a note naming the proxy."""
    return score_all(names, model, inputs, seed, strict=True, owned=owned).scores

