"""hwnas: hardware-aware AutoML for PyTorch (train-free NAS, elastic supernets,
progressive shrinking, hardware cost models and Pareto search).

The Python API lives in :mod:`hwnas.app` and is reachable from here without importing
the whole pipeline at ``import hwnas``: :func:`compose_config`, :func:`config_dir`,
:func:`run` (the pipeline on a composed config, ``run(cfg)``, or on a model, a
LightningDataModule and a task handed over in Python, ``run(model=..., datamodule=...,
task=..., overrides=[...], output_dir=...)``; docs/own-data.md) and :func:`run_pipeline`
(the pipeline on a module handed over in Python)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "compose_config": "hwnas.app.config",
    "config_dir": "hwnas.app.config",
    "run": "hwnas.app.api",
    "run_pipeline": "hwnas.app.api",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")
