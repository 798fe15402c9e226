"""Saving and loading the final subnet: state dict + arch JSON (+ ONNX)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf
from torch import nn

from hwnas.core import atomic
from hwnas.elastic import build_model
from hwnas.spaces.base import Arch

if TYPE_CHECKING:
    from hwnas.app.context import Context

log = logging.getLogger(__name__)


def export_onnx(
    net: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Write ``net`` (eval mode, CPU copy) as ONNX for example ``inputs``, every input
    and output with a dynamic batch dimension, plus ``dynamic_axes`` (e.g. time). The
    file is exported beside ``path`` and then moved over it (a kill leaves no half
    file)."""
    path = Path(path)
    tmp = atomic.temporary_path(path)
    net = net.eval().to("cpu")
    input_names = input_names or [f"input{i}" for i in range(len(inputs))]
    output_names = output_names or ["output"]
    torch.onnx.export(
        net,
        tuple(inputs),
        str(tmp),
        input_names=input_names,
        output_names=output_names,
        dynamic_axes={
            name: {0: "batch", **(dynamic_axes or {}).get(name, {})}
            for name in [*input_names, *output_names]
        },
        dynamo=False,
    )
    return atomic.replace_file(tmp, path)


def cpu_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net.state_dict()``, its tensors copied to the CPU when ``net`` lives elsewhere
    (the same object for a CPU net: what is saved does not depend on the device)."""
    state = net.state_dict()
    if all(t.device.type == "cpu" for t in state.values()):
        return state
    moved = OrderedDict((k, t.detach().cpu()) for k, t in state.items())
    moved._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return moved


def save_subnet(
    folder: str | Path, net: nn.Module, arch: Arch, ctx: Context, onnx: bool = True
) -> None:
    """``subnet.pt`` (state dict), ``arch.json`` (everything needed to rebuild and feed
    it: arch, model config, data shapes and the task's spec) and, with ``onnx``,
    ``subnet.onnx``; the weights are saved as CPU tensors wherever ``net`` lives."""
    folder = Path(folder)
    atomic.torch_save(cpu_state_dict(net), folder / "subnet.pt")
    spec = {
        **ctx.task.spec(),
        "arch": arch.to_dict(),
        "space": ctx.model.space.name,
        "space_id": ctx.model.space.id,
        "model": OmegaConf.to_container(ctx.cfg.model, resolve=True),
        "input_shape": list(ctx.dm.input_shape),
        "num_classes": ctx.dm.num_classes,
        "data": ctx.dm.name,
    }
    atomic.write_json(folder / "arch.json", spec)
    if onnx:
        inputs = ctx.task.example_inputs(1, torch.Generator().manual_seed(0))
        names = ctx.task.input_names(), ctx.task.output_names()
        axes = ctx.task.dynamic_axes()
        export_onnx(net, inputs, folder / "subnet.onnx", *names, dynamic_axes=axes)


def load_subnet(folder: str | Path) -> nn.Module:
    """Rebuild the final subnet saved by :func:`save_subnet` (eval mode, CPU)."""
    folder = Path(folder)
    spec_path, weights = folder / "arch.json", folder / "subnet.pt"
    if not spec_path.exists() or not weights.exists():
        raise FileNotFoundError(
            f"{folder} has no arch.json + subnet.pt: point to a run's final/ folder"
        )
    fix = f"rerun the final stage of that run (delete {folder / 'DONE.json'} and rerun)"
    spec = atomic.read_json(spec_path, fix)
    supernet = build_model(spec["model"], tuple(spec["input_shape"]), int(spec["num_classes"]))
    if supernet.space.id != spec["space_id"]:
        raise ValueError(
            f"{spec_path} was saved for space id {spec['space_id']}, but this "
            f"hwnas builds {supernet.space.id}: use the hwnas version of the run"
        )
    net = supernet.export(supernet.space.validate(spec["arch"]))
    net.load_state_dict(atomic.check_finite_weights(weights, atomic.torch_load(weights, fix), fix))
    return net.eval()
