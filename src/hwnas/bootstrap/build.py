"""The ``model=bootstrap`` builder: a supernet converted from a model named in config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hwnas.bootstrap.convert import convert
from hwnas.bootstrap.model import BootstrapModel
from hwnas.bootstrap.source import load_and_fit, load_source

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
