"""Lightning data modules built by name from the Hydra ``data`` group: the registry
(each domain registers its own) and the :class:`~hwnas.data.base.DataModule` contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hwnas.core.registry import Registry
from hwnas.core.types import to_plain
from hwnas.data.base import DataModule

DATAMODULES: Registry[type[DataModule]] = Registry("data module", builtins=("hwnas.domains",))


def register_datamodule(cls: type[DataModule]) -> type[DataModule]:
    """Make ``cls`` buildable as ``data.name=<cls.name>`` (usable as a class decorator)."""
    DATAMODULES.register(cls.name, cls)
    return cls


def build_datamodule(
    cfg: Mapping[str, Any],
) -> DataModule:
    """Build the data module ``cfg["name"]`` with the remaining keys as constructor args.

    ``cfg`` is the ``data`` config node (read as plain data, interpolations resolved) or
    a plain dict.
    """
    args = to_plain(cfg)
    name = args.pop("name", None)
    if name not in DATAMODULES:
        raise ValueError(f"unknown data.name {name!r}: choose one of {DATAMODULES.names()}")
    return DATAMODULES.get(name)(**args)


__all__ = ["DATAMODULES", "DataModule", "build_datamodule", "register_datamodule"]
