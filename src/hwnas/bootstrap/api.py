"""The bootstrap model in the pipeline: the ``model=bootstrap`` builder, and
:func:`run_pipeline`, the whole pipeline on a module handed over in Python."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.bootstrap.convert import convert
from hwnas.bootstrap.model import BootstrapModel
from hwnas.bootstrap.source import load_and_fit, load_source, register_module

_EXAMPLE_BATCH = 2  # traced shapes and opaque modules' FLOPs; batch norm runs in eval


def build_bootstrap(
    input_shape: tuple[int, ...],
    num_classes: int,
    source: str,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    head: str | None = None,
    stem: str | None = None,
    width_ratios: Sequence[float] = (0.5, 0.75, 1.0),
    depth: bool = True,
    kernel: bool = False,
    leaf_modules: Sequence[str] = (),
) -> BootstrapModel:
    """Build ``source``, load ``weights``, fit head and stem to the data (see
    :mod:`hwnas.bootstrap.source`) and convert it for inputs ``(B, *input_shape)``."""
    model = load_source(source, kwargs)
    in_channels = int(input_shape[0])
    model = load_and_fit(model, weights, in_channels, num_classes, head, stem)
    example = torch.randn(
        (_EXAMPLE_BATCH, *input_shape), generator=torch.Generator().manual_seed(0)
    )
    try:
        return convert(
            model,
            example,
            width_ratios=tuple(width_ratios),
            depth=bool(depth),
            kernel=bool(kernel),
            leaf_modules=tuple(leaf_modules),
        )
    except ValueError as err:
        raise ValueError(f"model.source={source!r}: {err}") from None


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
    from hwnas import compose_config
    from hwnas.pipeline import run

    source = register_module(f"{type(model).__name__}_{next(_counter)}", model)
    args = ["model=bootstrap", *overrides, f"model.source={source}"]
    args.append(f"paths.output_dir={Path(output_dir)}")
    if weights is not None:
        args.append(f"model.weights={Path(weights)}")
    return run(compose_config(args))
