"""What the Optuna strategies and the shared-study workers both need: genes as Optuna
parameters, constraint amounts, quiet Optuna logging, and a fresh feasible arch."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import optuna

from hwnas.hardware.constraints import Constraints
from hwnas.search.base import SHRINK_AFTER, SearchProblem
from hwnas.spaces.base import Arch, SearchSpace

_PLAIN = (type(None), bool, int, float, str)
_CONSTRAINT_ATTR = "hwnas_violation"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial log lines and experimental-feature warnings."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)


class GeneCodec:
    """Genes <-> Optuna categorical parameters (choice values when they are plain
    scalars, else choice indices)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.by_index = {
            g.name for g in space.genes if not all(isinstance(c, _PLAIN) for c in g.choices)
        }
        self.distributions = {
            g.name: optuna.distributions.CategoricalDistribution(
                list(range(len(g.choices))) if g.name in self.by_index else list(g.choices)
            )
            for g in space.genes
        }

    def decode(self, params: Mapping[str, Any]) -> Arch:
        values = {
            g.name: g.choices[params[g.name]] if g.name in self.by_index else params[g.name]
            for g in self.space.genes
        }
        return self.space.canonical(values)

    def encode(self, arch: Arch) -> dict[str, Any]:
        return {
            g.name: g.choices.index(arch[g.name]) if g.name in self.by_index else arch[g.name]
            for g in self.space.genes
        }


def violations(constraints: Constraints, costs: Mapping[str, float]) -> dict[str, float]:
    """``{"<metric>.min" / "<metric>.max": amount}``, relative to the bound, one per
    window side; all ``<= 0`` iff feasible."""
    out = {}
    for key, (lo, hi) in constraints.windows.items():
        value = costs[key]
        if lo is not None:
            out[f"{key}.min"] = (lo - value) / max(abs(lo), 1e-12)
        if hi is not None:
            out[f"{key}.max"] = (value - hi) / max(abs(hi), 1e-12)
    return out


def set_constraints(trial: optuna.trial.Trial, amounts: Mapping[str, float]) -> None:
    """Attach constraint values to a trial before it is told (Optuna >= 5 reads
    ``set_constraint``; older releases read a user attribute via :func:`constraints_func`)."""
    if hasattr(trial, "set_constraint"):
        for key, value in amounts.items():
            trial.set_constraint(key, value)
    else:  # pragma: no cover - optuna < 5
        trial.set_user_attr(_CONSTRAINT_ATTR, list(amounts.values()) or [0.0])


def constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Constraint values stored by :func:`set_constraints` (Optuna < 5)."""
    return list(trial.user_attrs.get(_CONSTRAINT_ATTR, [0.0]))


def sampler_constraints() -> dict[str, Any]:
    """Sampler keyword arguments for constraint handling on this Optuna version."""
    if hasattr(optuna.trial.Trial, "set_constraint"):
        return {}
    return {"constraints_func": constraints_func}  # pragma: no cover - optuna < 5


def _unseen_feasible(
    problem: SearchProblem, rng: random.Random, seen: Mapping[Arch, Any], tries: int
) -> Arch | None:
    for i in range(tries):
        arch = problem.space.sample(rng)
        if i >= SHRINK_AFTER and not problem.feasible(arch):
            arch = problem.shrink_to_feasible(arch, rng) or arch
        if arch not in seen and problem.feasible(arch):
            return arch
    return None
