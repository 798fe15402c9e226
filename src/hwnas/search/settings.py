"""Check a strategy's settings against its constructor before building it.

Settings usually come from a config file, where a typo or a wrong type would otherwise
be swallowed (``**kwargs``) or fail far from its cause (``'<' not supported between
instances of 'str' and 'int'``). :func:`check_settings` reads the constructor's
signature: every key must be a parameter, and every value must fit the parameter's
type hint (or, without one, the type of its default):

- ``int``: an integer (``bool`` is not one);
- ``float``: an integer or a float (not a ``bool``);
- ``bool``: ``True`` or ``False``;
- ``str``: a string;
- ``X | None``: also ``None`` (``null`` in YAML).

Parameters typed otherwise (mappings, sequences, classes) are not checked here.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _accepts(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _expected(annotation: Any, default: Any) -> tuple[tuple[type, ...], bool] | None:
    """(accepted scalar kinds, whether None is accepted), or None when unchecked."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return None
        annotation = type(default)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
    else:
        args = (annotation,)
    allow_none = type(None) in args
    kinds = tuple(a for a in args if a is not type(None))
    if not kinds or any(k not in _WORDS for k in kinds):
        return None
    return kinds, allow_none


def check_settings(cls: type, settings: Mapping[str, Any], what: str) -> None:
    """Raise a one-line ``ValueError`` for a key of ``settings`` that is not a
    parameter of ``cls.__init__`` (unless it takes ``**kwargs``) or a value its type
    hint rejects, e.g. ``search strategy 'evolution': population='abc': expected an
    integer``; ``what`` starts the message."""
    signature = inspect.signature(cls.__init__)
    params = {
        n: p
        for n, p in signature.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    for key, value in settings.items():
        if key not in params:
            if open_ended:
                continue
            raise ValueError(
                f"{what}: unknown setting {key}={value!r}; valid settings: {sorted(params)}"
            )
        expected = _expected(hints.get(key, inspect.Parameter.empty), params[key].default)
        if expected is None:
            continue
        kinds, allow_none = expected
        if value is None and allow_none:
            continue
        if not any(_accepts(k, value) for k in kinds):
            words = [_WORDS[k] for k in kinds] + (["null"] if allow_none else [])
            raise ValueError(f"{what}: {key}={value!r}: expected {' or '.join(words)}")
