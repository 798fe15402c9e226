"""Kernel: the convolutions of a traced graph whose kernel size can shrink.

A convolution with an odd square kernel of 5 or more that pads 'same'-like
(``(k - 1) // 2 * dilation``) gets a gene offering every odd size from 3 up to its own:
a smaller kernel is the centre crop of the full one and the padding shrinks with it, so
the output keeps its shape. This is Once-for-All's elastic kernel without its
kernel-transform matrices (which learn a linear map from the larger kernel's centre to
the smaller one): the plain crop needs no new parameters, keeps the state dict as the
original's, and the largest kernel is the original conv, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from hwnas.bootstrap.analysis import Layer
from hwnas.bootstrap.ops import CONV_TYPES, kernel_choices

KERNEL_TRANSFORM = "centre crop of the full kernel (no kernel-transform matrices)"


@dataclass
class KernelConv:
    """A convolution whose kernel shrinks: ``choices`` are odd sizes, the largest its own."""

    gene: str
    module: str
    node: str
    kernel: int
    choices: tuple[int, ...]


def find_kernel_convs(
    gm: fx.GraphModule, layers: dict[str, Layer]
) -> tuple[list[KernelConv], list[dict[str, object]]]:
    """The elastic-kernel convolutions of ``gm`` in graph order, and the convolutions
    with a kernel of 5 or more that stay as they are, each with the reason."""
    found: list[KernelConv] = []
    fixed: list[dict[str, object]] = []
    seen: set[str] = set()
    for n in gm.graph.nodes:
        if n.op != "call_module" or n.target in seen:
            continue
        m = gm.get_submodule(n.target)
        if not isinstance(m, CONV_TYPES):
            continue
        seen.add(n.target)
        choices, why = kernel_choices(m)
        if n.target not in layers and (choices or why):
            why = (
                "its channels are not sliced (the channel analysis treats it as opaque: "
                "called more than once, grouped with unequal input and output channels, "
                "or an input it does not understand; see fixed_groups)"
            )
            choices = ()
        if len(choices) > 1:
            gene = f"k{len(found)}"
            found.append(KernelConv(gene, n.target, n.name, choices[-1], choices))
        elif why:
            fixed.append({"module": n.target, "kernel": list(m.kernel_size), "reason": why})
    return found, fixed
