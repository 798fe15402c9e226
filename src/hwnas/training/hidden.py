"""Hidden-state distillation (DynaBERT, TinyBERT): a smaller transformer subnet learns
to reproduce, layer by layer, what its teacher's encoder layers output.

Subnets of the elastic transformer run the first ``depth`` layers of the supernet, at
the first ``embed`` channels (after importance re-ordering), so student layer ``i`` is
compared with teacher layer ``i`` on the student's channels: ``sum_i MSE(h_i,
t_i[..., :E])``. The logits' distillation (``Task.distill_loss``) gives a few numbers
per example; the hidden states give every token's full representation, so a width- or
depth-reduced subnet catches up with its teacher in far fewer steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import hidden_layers_of


def hidden_layers(net: nn.Module, key: str = "kd_hidden") -> list[nn.Module]:
    """The encoder layers of a transformer model (elastic or exported); ValueError,
    naming ``key``, for a model without them (the CNN)."""
    layers = hidden_layers_of(net)
    if not layers:
        raise ValueError(
            f"{key} > 0 needs a transformer model (elastic_bert, elastic_vit, "
            f"elastic_rnnt): {type(net).__name__} has no encoder layers; set {key}=0"
        )
    return list(layers)


@contextmanager
def captured(net: nn.Module, on: bool = True) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``net`` appends its encoder layers' outputs,
    in the order they run (an elastic encoder runs only its active layers); with
    ``on=False`` the list stays empty and ``net`` is not touched."""
    states: list[torch.Tensor] = []
    if not on:
        yield states
        return

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        states.append(output)

    hooks = [layer.register_forward_hook(keep) for layer in hidden_layers(net)]
    try:
        yield states
    finally:
        for hook in hooks:
            hook.remove()


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over the student's layers of the mean squared error to the teacher's layer
    of the same index, on the student's channels (the teacher's are detached)."""
    if not student:
        raise ValueError("hidden_loss: the student ran no encoder layer")
    if len(student) > len(teacher):
        raise ValueError(
            f"hidden_loss: the student ran {len(student)} layers, its teacher only "
            f"{len(teacher)}"
        )
    return sum(
        (F.mse_loss(s, t.detach()[..., : s.shape[-1]]) for s, t in zip(student, teacher)),
        torch.zeros((), device=student[0].device),
    )
