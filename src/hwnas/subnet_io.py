"""Saving and loading the final subnet: state dict + arch JSON (+ ONNX)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf
from torch import nn

from hwnas.elastic import build_model
from hwnas.spaces.base import Arch

if TYPE_CHECKING:
    from hwnas.context import Context

log = logging.getLogger(__name__)


def export_onnx(net: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``net`` (eval mode, CPU copy) as ONNX with a dynamic batch dimension."""
    path = Path(path)
    net = net.eval().to("cpu")
    dummy = torch.zeros(1, *input_shape)
    torch.onnx.export(
        net,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


def save_subnet(
    folder: str | Path, net: nn.Module, arch: Arch, ctx: Context, onnx: bool = True
) -> None:
    """``subnet.pt`` (state dict), ``arch.json`` (everything needed to rebuild it) and,
    with ``onnx``, ``subnet.onnx``."""
    folder = Path(folder)
    torch.save(net.state_dict(), folder / "subnet.pt")
    spec = {
        "arch": arch.to_dict(),
        "space": ctx.model.space.name,
        "space_id": ctx.model.space.id,
        "model": OmegaConf.to_container(ctx.cfg.model, resolve=True),
        "input_shape": list(ctx.dm.input_shape),
        "num_classes": ctx.dm.num_classes,
        "data": ctx.dm.name,
        "normalization": {"mean": list(ctx.dm.mean), "std": list(ctx.dm.std)},
    }
    (folder / "arch.json").write_text(json.dumps(spec, indent=2))
    if onnx:
        export_onnx(net, tuple(ctx.dm.input_shape), folder / "subnet.onnx")


def load_subnet(folder: str | Path) -> nn.Module:
    """Rebuild the final subnet saved by :func:`save_subnet` (eval mode, CPU)."""
    folder = Path(folder)
    spec_path, weights = folder / "arch.json", folder / "subnet.pt"
    if not spec_path.exists() or not weights.exists():
        raise FileNotFoundError(
            f"{folder} has no arch.json + subnet.pt: point to a run's final/ folder"
        )
    spec = json.loads(spec_path.read_text())
    supernet = build_model(spec["model"], tuple(spec["input_shape"]), int(spec["num_classes"]))
    if supernet.space.id != spec["space_id"]:
        raise ValueError(
            f"{spec_path} was saved for space id {spec['space_id']}, but this "
            f"hwnas builds {supernet.space.id}: use the hwnas version of the run"
        )
    net = supernet.export(supernet.space.validate(spec["arch"]))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()
