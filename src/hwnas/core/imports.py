"""Objects named by a dotted path in config (``data._target_=my_pkg.data.MyData``,
``data.task=my_pkg.tasks.MyTask``), imported with one-line errors that name the key.

A path is ``package.module.Attr`` (as Hydra's ``_target_``) or ``package.module:Attr``;
the longest importable module prefix is imported and the rest is read as attributes.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DEBUG_HINT", "first_line", "import_object"]

DEBUG_HINT = "HWNAS_DEBUG=1 shows its traceback"


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (``(no message)`` when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def import_object(path: str, key: str, shown: str | None = None) -> Any:
    """The object ``path`` names; ``key`` (``data._target_``) and the value as the user
    wrote it (``shown``, default ``path``) start every error line.

    Errors (``ValueError``, one line): not a dotted path; the first module cannot be
    imported (``cannot import 'x'``: a folder missing from ``PYTHONPATH``); importing
    a module raised (its own bug or a missing dependency); an attribute is missing."""
    text = str(path).strip()
    where = f"{key}={shown if shown is not None else text!r}"
    if ":" in text:
        mod_part, _, attr_part = text.partition(":")
        parts, split = [*mod_part.split("."), *attr_part.split(".")], len(mod_part.split("."))
    else:
        parts, split = text.split("."), None
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ValueError(
            f"{where}: not a dotted path; write package.module.Name (a class or function "
            "importable from the Python path)"
        )
    candidates = [split] if split is not None else range(len(parts) - 1, 0, -1)
    for i in candidates:
        name = ".".join(parts[:i])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if missing == name or name.startswith(missing + "."):
                if i > 1 and split is None:
                    continue  # ``a.b.C``: ``a.b`` may be the module and ``C`` its attribute
                raise ValueError(
                    f"{where}: cannot import {missing!r} (no such module on the Python path); "
                    "add its folder to PYTHONPATH or install its package"
                ) from None
            raise ValueError(  # the module exists but needs a package that is not installed
                f"{where}: importing {name!r} raised ModuleNotFoundError: {first_line(err)}; "
                "install what it needs"
            ) from err
        except Exception as err:  # the user's module fails while importing
            raise ValueError(
                f"{where}: importing {name!r} raised {type(err).__name__}: {first_line(err)}; "
                f"fix the module ({DEBUG_HINT})"
            ) from err
        obj: Any = module
        for j, attr in enumerate(parts[i:], start=i):
            if not hasattr(obj, attr):
                owner = ".".join(parts[:j])
                raise ValueError(f"{where}: {owner!r} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise AssertionError("unreachable: candidates is never empty")  # pragma: no cover
