"""Plumbing shared by the proxy modules (no proxies here).

:func:`prepare` readies the working copy a proxy receives (device of the batch, train
or eval mode, dropout off), :func:`weight_matrices` lists the weights of conv / linear
/ attention-projection layers, :func:`as_logits` turns a model output into (B, classes)
logits and :func:`labels` draws labels when the inputs carry none.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hwnas.core.types import ProxyInputs

ConvNd = nn.modules.conv._ConvNd  # every nn.ConvNd / ConvTransposeNd
_ATTN_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def prepare(model: nn.Module, inputs: ProxyInputs, train: bool = True) -> torch.Tensor:
    """Ready the working copy in place and return the batch in the model's float dtype.

    Moves the model to ``inputs.x``'s device, sets train (or eval) mode, switches
    dropout off (it would draw from the global RNG) and makes every parameter
    trainable. Only ever call it on the copy a proxy receives.
    """
    x = inputs.x
    params = list(model.parameters())
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    model.to(device=x.device)
    model.train(train)
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
            m.eval()
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
    for p in params:
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    return x.to(dtype) if x.is_floating_point() else x


def weight_matrices(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every conv, linear and attention projection, each weight once."""
    out: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, ConvNd)):
            cands = [("weight", m.weight)]
        elif isinstance(m, nn.MultiheadAttention):
            cands = [(a, getattr(m, a, None)) for a in _ATTN_WEIGHTS]
        else:
            continue
        for attr, w in cands:
            if isinstance(w, nn.Parameter) and id(w) not in seen:
                seen.add(id(w))
                out.append((f"{name}.{attr}" if name else attr, w))
    return out


def as_logits(out: object) -> torch.Tensor:
    """(B, classes) logits from a model output: tensors, tuples, ``.logits`` objects;
    a (B, T, classes) sequence output is mean-pooled over T."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    elif isinstance(out, Mapping) and "logits" in out:
        out = out["logits"]
    elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model output of type {type(out).__name__} is not a tensor of logits")
    if out.ndim == 3:  # (B, T, C) -> (B, C)
        out = out.mean(dim=1)
    if out.ndim != 2:
        raise ValueError(
            f"expected logits shaped (B, classes) or (B, T, classes), got {tuple(out.shape)}; "
            "make the model pool its output"
        )
    return out


def labels(inputs: ProxyInputs, gen: torch.Generator, num_logits: int) -> torch.Tensor:
    """``inputs.y`` on the batch's device, or labels drawn uniformly from ``gen``."""
    b = inputs.x.shape[0]
    if inputs.num_classes > num_logits:
        raise ValueError(
            f"ProxyInputs.num_classes={inputs.num_classes} but the model outputs {num_logits} "
            "logits; set num_classes to the model's class count"
        )
    if inputs.y is not None:
        y = inputs.y.to(inputs.x.device, torch.long)
        if y.shape != (b,):
            raise ValueError(f"labels must be shaped ({b},), got {tuple(y.shape)}")
        return y
    return torch.randint(0, inputs.num_classes, (b,), generator=gen, device=gen.device).to(
        inputs.x.device
    )
