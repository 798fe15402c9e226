"""Lightning data modules built by name from the Hydra ``data`` group: the registry
(each domain registers its own), the :class:`~hwnas.data.base.DataModule` contract, and a
user's own LightningDataModule named by ``data._target_`` (:mod:`hwnas.data.custom`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hwnas.core.registry import Registry
from hwnas.core.types import to_plain
from hwnas.data.base import DataModule
from hwnas.data.custom import TaskFactory, build_custom, register_datamodule_object

DATAMODULES: Registry[type[DataModule]] = Registry("data module", builtins=("hwnas.domains",))


def register_datamodule(cls: type[DataModule]) -> type[DataModule]:
    """Make ``cls`` buildable as ``data.name=<cls.name>`` (usable as a class decorator)."""
    DATAMODULES.register(cls.name, cls)
    return cls


def build_datamodule(
    cfg: Mapping[str, Any],
    task_factory: TaskFactory | None = None,
    seed: int = 0,
) -> DataModule:
    """Build the data module ``cfg["name"]`` with the remaining keys as constructor args.

    ``cfg`` is the ``data`` config node (read as plain data, interpolations resolved) or
    a plain dict. With a ``_target_`` key (``data=custom``) it is the user's own
    LightningDataModule, wrapped (:func:`hwnas.data.custom.build_custom`; its task comes
    from ``task_factory``, its calibration subset from ``seed``).
    """
    args = to_plain(cfg)
    if "_target_" in args or args.get("name") == "custom":
        return build_custom(args, task_factory, seed)
    name = args.pop("name", None)
    if name not in DATAMODULES:
        raise ValueError(f"unknown data.name {name!r}: choose one of {DATAMODULES.names()}")
    return DATAMODULES.get(name)(**args)


__all__ = [
    "DATAMODULES",
    "DataModule",
    "build_datamodule",
    "register_datamodule",
    "register_datamodule_object",
]
