"""What the schemas share: the range checks of their ``validate()`` methods.

A schema's field types are enforced by OmegaConf when Hydra composes the config (a
misspelled key or a value of the wrong type fails there); these helpers check what a
type cannot express: counts >= 1, fractions in [0, 1], names out of a fixed list,
finite floats. Each raises ``ValueError("<group>.<key>=<value>: <what is wrong>; <fix>")``
on one line. They also check the type, for a dataclass built in Python, where nothing
else does.
"""

from __future__ import annotations

from typing import Any

from hwnas.core.checks import (  # noqa: F401  (the schemas' checks, re-exported)
    check_batches,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_number,
    check_optional_int,
    check_positive,
    check_range,
    check_str_list,
    is_int,
    is_number,
)

# the constraint windows' metrics (hwnas.hardware.constraints.KNOWN_METRICS)
KNOWN_METRICS = ("params_m", "flops_m", "latency_ms", "memory_mb", "size_mb")


def check_window(key: str, window: Any) -> None:
    """A constraint window: a :class:`~hwnas.app.schema.run.ConstraintWindow` (or a
    mapping) with optional finite ``min`` <= ``max``, a bare number (a max), or null."""
    if window is None:
        return
    if is_number(window):
        check_finite(key, window)
        return
    if isinstance(window, dict):
        unknown = sorted(set(window) - {"min", "max"})
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown key; use min or max")
        lo, hi = window.get("min"), window.get("max")
    else:
        lo, hi = getattr(window, "min", None), getattr(window, "max", None)
    for side, value in (("min", lo), ("max", hi)):
        if value is not None and not is_number(value):
            raise ValueError(f"{key}.{side}={value!r}: expected a number or null")
        if value is not None:
            check_finite(f"{key}.{side}", value)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(
            f"{key}.min={lo!r} is above {key}.max={hi!r}: no value lies in the window; "
            "lower the min or raise the max"
        )


def check_shared_search(group: str, budget: Any, workers: Any, storage: Any, name: Any) -> None:
    """The keys both searching stages (``zero_shot``, ``search``) have: the budget, the
    processes sharing an Optuna study and where that study lives. Whether the strategy
    can share a study is checked with the strategy (hwnas.search.optuna.workers)."""
    check_optional_int(f"{group}.budget", budget, 1, "the strategy's own")
    if not is_int(workers) or workers < 1:
        raise ValueError(
            f"{group}.workers={workers!r} must be an integer >= 1; use 1 (one process) or more"
        )
    for key, value in (("storage", storage), ("study_name", name)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{group}.{key}={value!r}: use null (the default) or a non-empty name")
