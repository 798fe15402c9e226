"""Hydra's own composition errors (an unknown group option, a misspelled key, a value
of the wrong type, an override it cannot parse) as one ``error:`` line that names the
key and a fix that works: the valid options, or the closest valid key.

:func:`precheck` composes the command line's overrides before Hydra's entry point runs,
so such a mistake, and a value the checks refuse, is stopped before anything (a run
folder, a log file) is written."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from omegaconf import OmegaConf

from hwnas.app.config import ConfigError, compose_config

__all__ = ["composition_error", "precheck"]

# flags after which Hydra, not the pipeline, answers (help, printing the config, sweeps)
_HYDRA_FLAGS = ("-", "--")


def precheck(argv: Sequence[str]) -> str | None:
    """The one-line message for command-line ``argv`` that cannot compose, or None
    (also None for Hydra's own flags such as ``--help``, ``--cfg`` and ``-m`` sweeps,
    which Hydra handles itself)."""
    if any(a.startswith(_HYDRA_FLAGS) for a in argv):
        return None
    overrides = list(argv)
    try:
        cfg = compose_config(overrides)
    except Exception as err:  # noqa: BLE001 - every composition error becomes one line
        return composition_error(err, overrides)
    from hwnas.app.checks import validate  # the values, before Hydra makes the run folder

    try:
        validate(cfg)
    except ConfigError as err:
        return str(err)
    return None


def composition_error(err: BaseException, overrides: Sequence[str]) -> str:
    """One line for a Hydra composition error ``err`` raised for ``overrides``."""
    text = str(err)
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:  # an unknown option of a config group
        path = missing.group(1)
        group, _, option = path.rpartition("/")
        options = [o.strip() for o in re.findall(r"^\t(\S+)$", text, re.M)]
        options = [o for o in options if not o.startswith("_")]
        close = difflib.get_close_matches(option, options, n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"{group}={option}: no such option{hint}; choose one of {options}"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:  # a key the config does not have
        return _unknown_key(unknown.group(1), overrides)
    merging = re.search(r"Error merging override (\S*)", text)
    if merging:  # a value of the wrong type
        cause = str(err.__cause__ or "").splitlines()
        why = cause[0] if cause else "the value does not fit the key's type"
        return f"{merging.group(1)}: {why}; give a value of the key's type"
    parse = re.search(r"Error parsing override '(.*)'", text)
    if parse:
        detail = text.splitlines()[1] if len(text.splitlines()) > 1 else ""
        return (
            f"cannot parse the override {parse.group(1)!r} ({detail}); write key=value, "
            "group=option or +new_key=value (quote values with spaces)"
        )
    first = text.splitlines()[0] if text else type(err).__name__
    if "Lexer" in type(err).__name__ or "Parse" in type(err).__name__:
        return (
            f"cannot parse the command line {list(overrides)} (near {first!r}); write "
            "key=value, group=option or +new_key=value (quote values with spaces)"
        )
    return first


def _unknown_key(key: str, overrides: Sequence[str]) -> str:
    """``key`` is not in the config: name the closest valid key of its parent node."""
    parent, _, leaf = key.rpartition(".")
    others = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
    try:
        cfg = compose_config(others)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
    except Exception:  # noqa: BLE001 - the other overrides fail too: no suggestion
        keys = []
    close = difflib.get_close_matches(leaf, keys, n=1)
    prefix = f"{parent}." if parent else ""
    if close:
        return f"{key}: unknown key; did you mean {prefix}{close[0]}?"
    shown = f"; valid keys: {sorted(keys)}" if keys else ""
    return f"{key}: unknown key{shown}"


def key_value_main(
    argv: Sequence[str],
    doc: str,
    usage: str,
    own: Sequence[str],
    run: Callable[[dict[str, str], list[str]], int],
) -> int:
    """The ``KEY=VALUE`` command lines of ``python -m hwnas.quantize`` and ``hwnas.export``:
    ``--help`` prints ``doc``; the keys in ``own`` go to ``run`` as a dict, the rest
    (config overrides) as a list; input to fix ends in one ``error:`` line and exit 2
    (``HWNAS_DEBUG=1``: the traceback)."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
    )
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(doc)
        return 0 if argv else 2
    bad = [a for a in argv if "=" not in a]
    if bad:
        print(f"error: {bad[0]!r} is not KEY=VALUE; {usage}", file=sys.stderr)
        return 2
    pairs = [a.split("=", 1) for a in argv]
    args = {k: v for k, v in pairs if k in own}
    rest = [a for a, (k, _) in zip(argv, pairs, strict=True) if k not in own]
    try:
        return run(args, rest)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        if os.environ.get("HWNAS_DEBUG"):
            raise
        print(f"error: {str(err).strip(chr(39))}", file=sys.stderr)
        return 2
