"""The Python API: :func:`run_pipeline`, the whole pipeline on a module handed over in
Python (converted as ``model=bootstrap`` converts a source)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from hwnas.bootstrap.source import register_module

_counter = itertools.count()


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
    from hwnas.app.pipeline import run

    source = register_module(f"{type(model).__name__}_{next(_counter)}", model)
    args = ["model=bootstrap", *overrides, f"model.source={source}"]
    args.append(f"paths.output_dir={Path(output_dir)}")
    if weights is not None:
        args.append(f"model.weights={Path(weights)}")
    return run(compose_config(args))
