"""The Python API: :func:`run`, the whole pipeline from a notebook or script on a
composed config, or on a model, a LightningDataModule and a task handed over in Python;
:func:`run_pipeline`, the pipeline on a module handed over in Python (converted as
``model=bootstrap`` converts a source)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from hwnas.app.data import is_custom
from hwnas.bootstrap.source import register_module
from hwnas.data import register_datamodule_object
from hwnas.tasks import register_task_object

_counter = itertools.count()

__all__ = ["run", "run_pipeline"]


def run(
    cfg: DictConfig | None = None,
    *,
    model: nn.Module | None = None,
    datamodule: Any = None,
    task: Any = None,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    weights: str | Path | None = None,
) -> dict[str, float]:
    """Run every configured stage; returns the run's headline metrics.

    ``hwnas.run(cfg)`` runs a composed config as it is (:func:`hwnas.compose_config`).
    Otherwise the config is composed from ``overrides`` (command-line style) and:

    - ``model``: an ``nn.Module``, deep-copied, fitted to the data and converted as
      ``model=bootstrap`` converts a source (``weights``: a local state_dict for it);
      None: the config's model;
    - ``datamodule``: a ``lightning.LightningDataModule`` instance, run as ``data=custom``
      (docs/own-data.md: checked at start-up, shapes and classes read from its batches);
      None: the config's data;
    - ``task``: a task name (``image_classification``, ``classification``, ...), a dotted
      path, or a ``hwnas.tasks.Task`` instance or subclass; None: the config's
      ``data.task`` (``image_classification`` for ``data=custom``);
    - ``output_dir``: the run folder (or ``paths.output_dir=`` among the overrides).

    What is handed over in Python is recorded in the run's config as ``python:<name>``,
    which only this process knows: to rerun elsewhere name them by import path
    (``model.source=module:<pkg.module>:<callable>``, ``data._target_=<pkg.module.Class>``).
    """
    from hwnas.app.config import compose_config
    from hwnas.app.pipeline import run as run_config

    if cfg is not None:
        named = {"model": model, "datamodule": datamodule, "task": task,
                 "output_dir": output_dir, "weights": weights}  # fmt: skip
        given = [k for k, v in named.items() if v is not None]
        if given or overrides:
            raise TypeError(
                f"hwnas.run(cfg) runs a composed config as it is; give either cfg or the "
                f"keyword arguments, not both (got {given or ['overrides']})"
            )
        return run_config(cfg)
    args = list(overrides)
    if datamodule is not None:
        name = f"{type(datamodule).__name__}_{next(_counter)}"
        target = register_datamodule_object(name, datamodule)
        args = ["data=custom", *args, f"data._target_={target}"]
    if model is not None:
        source = register_module(f"{type(model).__name__}_{next(_counter)}", model)
        args = ["model=bootstrap", *args, f"model.source={source}"]
    if weights is not None:
        args.append(f"model.weights={Path(weights)}")
    if output_dir is not None:
        args.append(f"paths.output_dir={Path(output_dir)}")
    elif not any(a.startswith("paths.output_dir=") for a in args):
        raise ValueError("hwnas.run: give output_dir= (the run folder to write)")
    composed = compose_config(args)
    if task is not None:
        if not is_custom(composed.data):
            raise ValueError(
                "hwnas.run(task=...): a task goes with your own data module; give "
                "datamodule= too (or data=custom data._target_=... among the overrides)"
            )
        composed.data.task = task if isinstance(task, str) else _task_name(task)
    return run_config(composed)


def _task_name(task: Any) -> str:
    label = getattr(task, "__name__", None) or type(task).__name__
    return register_task_object(f"{label}_{next(_counter)}", task)


def run_pipeline(
    model: nn.Module,
    output_dir: str | Path,
    overrides: Sequence[str] = (),
    weights: str | Path | None = None,
) -> dict[str, float]:
    """Run every configured stage (zero-shot search, progressive shrinking, search on
    the supernet, final fine-tuning, report) on a supernet converted from ``model``.

    ``overrides`` are command-line style (``data=fashion_mnist``, ``model.width_ratios=
    [0.25,0.5,1.0]``, ``experiment=...``); ``model`` is deep-copied, fitted to the data
    (head, stem) and converted as ``model=bootstrap`` would a source. The run folder
    records the source as ``python:<name>``, which only this process knows: to reload
    the final subnet elsewhere use ``model.source=module:<package.module>:<callable>``.
    Returns the run's headline metrics."""
    from hwnas.app.config import compose_config
    from hwnas.app.pipeline import run as run_config

    source = register_module(f"{type(model).__name__}_{next(_counter)}", model)
    args = ["model=bootstrap", *overrides, f"model.source={source}"]
    args.append(f"paths.output_dir={Path(output_dir)}")
    if weights is not None:
        args.append(f"model.weights={Path(weights)}")
    return run_config(compose_config(args))
