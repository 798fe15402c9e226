"""``convert``: from a plain model to a :class:`BootstrapModel` supernet."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from hwnas.bootstrap.analysis import ChannelAnalysis
from hwnas.bootstrap.depth import find_stages
from hwnas.bootstrap.model import BootstrapModel
from hwnas.bootstrap.ops import make_elastic
from hwnas.bootstrap.tracing import ShapeProp, trace


def convert(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    width_ratios: Sequence[float] = (0.5, 0.75, 1.0),
    depth: bool = True,
    kernel: bool = False,
    leaf_modules: Sequence[str | type] = (),
) -> BootstrapModel:
    """Turn ``model`` into a weight-sharing supernet whose largest arch equals it.

    The model is deep-copied (the original is left untouched) and traced with torch.fx
    in eval mode (Python branches on ``self.training`` are frozen at eval). Submodules
    named (or typed) in ``leaf_modules`` stay opaque: they run whole and keep their
    channels. ``width_ratios`` are the fractions of each channel group offered;
    ``depth`` makes the number of skippable residual blocks per stage elastic;
    ``kernel`` the kernel size of every convolution with an odd square kernel of 5 or
    more that pads 'same'-like (centre crops down to 3, see
    :mod:`hwnas.bootstrap.kernel`). Raises a one-line ``ValueError`` naming the module or
    node that cannot be converted.
    """
    if not isinstance(example_input, torch.Tensor):
        raise ValueError("example_input must be one tensor (batch first)")
    if not width_ratios or any(not 0 < r <= 1 for r in width_ratios):
        raise ValueError(f"width_ratios must lie in (0, 1], got {list(width_ratios)}")
    was_training = model.training
    net = copy.deepcopy(model).eval()
    gm = trace(net, leaf_modules)
    with torch.no_grad():
        ShapeProp(gm).run(example_input)
    analysis = ChannelAnalysis(gm)
    stages = find_stages(gm.graph) if depth else []
    for layer in analysis.layers.values():
        make_elastic(gm.get_submodule(layer.target), tied=layer.kind == "tied")
    supernet = BootstrapModel(gm, analysis, stages, width_ratios, example_input, kernel)
    return supernet.train(was_training)
