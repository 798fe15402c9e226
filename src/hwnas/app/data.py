"""The run's data module from the ``data`` node: a registered one (``data.name``) or the
user's own LightningDataModule (``data=custom data._target_=...``, docs/own-data.md),
whose task ``data.task`` names (:mod:`hwnas.tasks.factory`).

:func:`check_data` is the part of it that needs no data: run by ``validate`` (so by the
command line's precheck too) it refuses a missing or unimportable ``data._target_`` and
an unknown ``data.task`` before anything is written."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from hwnas.app.config import ConfigError
from hwnas.core.imports import import_object
from hwnas.core.types import to_plain
from hwnas.data import build_datamodule
from hwnas.data.base import DataModule
from hwnas.tasks import build_task, resolve_task

__all__ = ["build_data", "check_data", "is_custom"]


def is_custom(data: Any) -> bool:
    """Whether the ``data`` node names a user's own data module (``_target_``)."""
    return data is not None and ("_target_" in data or data.get("name") == "custom")


def build_data(data: Any, seed: int = 0) -> DataModule:
    """The data module of the ``data`` node (not yet set up); ``seed`` seeds a user data
    module's calibration subset (the registered ones carry their own ``data.seed``)."""
    args = to_plain(OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig)
                    else data)  # fmt: skip
    if not is_custom(args):
        return build_datamodule(args)
    spec = str(args.get("task") or "image_classification")
    try:
        return build_datamodule(args, lambda dm, ls: build_task(spec, dm, ls), int(seed))
    except TypeError as err:
        raise ConfigError(f"data: {err}") from err


def check_data(cfg: DictConfig) -> None:
    """A user's data module: ``data._target_`` is set and imports, ``data.task`` names a
    task (ConfigError, one line). Registered data modules: nothing to check here."""
    data = cfg.get("data")
    if not is_custom(data):
        return
    target = data.get("_target_")
    if target is None or not str(target).strip():
        raise ConfigError(
            "data._target_ is not set: data=custom needs data._target_=<package.module.Class> "
            "naming your LightningDataModule (or a function returning one) on the Python path"
        )
    try:
        if not str(target).startswith("python:"):
            import_object(str(target), "data._target_")
        resolve_task(str(data.get("task") or "image_classification"))
    except ValueError as err:
        raise ConfigError(str(err)) from err
