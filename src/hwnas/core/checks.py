"""Range checks of typed settings: each raises ``ValueError("<key>=<value>: <what is
wrong>; <fix>")`` on one line for what a type cannot express (counts >= 1, fractions in
[0, 1], names out of a fixed list, finite floats). The config schemas of the app floor
and the libraries' own settings objects share them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(key: str, value: Any, low: int | None = None, fix: str = "") -> None:
    """``value`` is an integer, at least ``low``."""
    if not is_int(value):
        raise ValueError(f"{key}={value!r}: expected an integer")
    if low is not None and value < low:
        raise ValueError(f"{key}={value!r} must be >= {low}; {fix or f'use {low} or more'}")


def check_optional_int(key: str, value: Any, low: int, what: str) -> None:
    """``value`` is null (``what``) or an integer at least ``low``."""
    if value is not None and (not is_int(value) or value < low):
        raise ValueError(
            f"{key}={value!r} must be null ({what}) or >= {low}; use null or {low} or more"
        )


def check_finite(key: str, value: Any) -> None:
    """``value`` is a number and neither NaN nor infinite."""
    if not is_number(value):
        raise ValueError(f"{key}={value!r}: expected a number")
    if not math.isfinite(value):
        raise ValueError(f"{key}={value!r}: not a finite number; give a finite value")


def check_number(key: str, value: Any, low: float = 0.0, fix: str = "") -> None:
    """``value`` is a finite number, at least ``low``."""
    check_finite(key, value)
    if value < low:
        raise ValueError(f"{key}={value!r} must be >= {low:g}; {fix or f'use {low:g} or more'}")


def check_positive(key: str, value: Any, fix: str = "") -> None:
    """``value`` is a finite number above 0."""
    check_finite(key, value)
    if value <= 0:
        raise ValueError(f"{key}={value!r} must be > 0; {fix or 'use a positive number'}")


def check_range(
    key: str, value: Any, low: float, high: float, high_open: bool = False, fix: str = ""
) -> None:
    """``value`` is a finite number in ``[low, high]`` (``[low, high)`` with
    ``high_open``)."""
    check_finite(key, value)
    above = value >= high if high_open else value > high
    if value < low or above:
        interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(
            f"{key}={value!r} must be in {interval}; {fix or f'use a value in {interval}'}"
        )


def check_batches(key: str, value: Any) -> None:
    """Lightning's ``limit_*_batches``: a fraction in (0, 1] or a batch count >= 1."""
    check_finite(key, value)
    if not (is_int(value) and value >= 1 or 0 < value <= 1):
        raise ValueError(f"{key}={value!r}: use a fraction in (0, 1] or a batch count >= 1")


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{key}={value!r}: choose one of {choices}")


def check_str_list(key: str, value: Any) -> None:
    """``value`` is a list of strings."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}={value!r}: expected a list of names")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r}: use true or false")


def check_numbers(key: str, value: Any) -> None:
    """``value`` is None, a number, or a mapping of numbers (``key.<name>`` named)."""
    for k, v in value.items() if isinstance(value, dict) else [("", value)]:
        if v is not None and not is_number(v):
            raise ValueError(f"{key}{'.' + str(k) if k else ''}={v!r}: expected a number")


def first_non_finite(obj: Any, prefix: str = "") -> str | None:
    """The dotted path of the first NaN or infinite float in a JSON-like ``obj`` (dicts,
    lists, numbers), or None; ``prefix`` starts the path."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (prefix or "value")
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(
        obj, (list, tuple)) else ()  # fmt: skip
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None
