"""Model cards of exported subnets: ``card.json`` (every figure, machine-readable) and
``card.md`` (the same for a reader): what the subnet scores and how that was obtained,
how fast it runs on which hardware, its size, where it comes from, and the commands
that reproduce it."""

from __future__ import annotations

import json
import platform
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

import hwnas
from hwnas.core import atomic
from hwnas.hardware.records import fingerprint
from hwnas.quantize.onnx_quant import cpu_flags

if TYPE_CHECKING:
    from hwnas.app.context import Context

# CPU features that decide which kernels a runtime can use (printed beside speeds)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
               "amx_int8", "amx_bf16", "neon", "asimd")  # fmt: skip


def speed_flags() -> list[str]:
    """The :data:`SPEED_FLAGS` this machine's CPU has (``/proc/cpuinfo``)."""
    have = cpu_flags()
    return [f for f in SPEED_FLAGS if f in have]


def _parent(ctx: Context) -> dict[str, Any]:
    model = OmegaConf.to_container(ctx.cfg.model, resolve=True)
    parent = {"model": model.get("name")}
    for key in ("source", "weights", "pretrained"):
        if model.get(key):
            parent[key] = model[key]
    parent["license"] = model.get("license") or ("not recorded (record it with +model.license=...)")
    largest = ctx.model.space.max_arch()
    parent["largest_subnet"] = ctx.model.cost_of(largest)
    return parent


def run_command(run_dir: Path) -> str | None:
    """The command that made the run (Hydra's record of its overrides), or None."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    from hwnas.app.reproduce import hydra_overrides

    overrides = [*hydra_overrides(run_dir), *(str(o) for o in OmegaConf.load(path))]
    return "python -m hwnas " + " ".join(shlex.quote(o) for o in overrides)


def _commands(run_dir: Path, point: Any, tuned: bool) -> dict[str, str]:
    commands = {}
    if point.index >= 0:
        tail = " finetune=true" if tuned else ""
        where = shlex.quote(str(run_dir))
        commands["export"] = f"python -m hwnas.export run_dir={where} pick={point.index}{tail}"
    made = run_command(run_dir)
    if made:
        commands["run"] = made
        commands["reproduce"] = f"hwnas reproduce {shlex.quote(str(run_dir))}"
    return commands


def write_card(
    ctx: Context,
    folder: Path,
    point: Any,
    metrics: dict[str, float],
    method: str,
    speed: dict[str, float],
    chosen: bool = False,
) -> dict[str, Any]:
    """Write ``folder/card.json`` and ``folder/card.md`` for the subnet saved in
    ``folder``; returns the card."""
    hw = ctx.cfg.hardware
    m = ctx.task.primary_metric
    sizes = {
        name: (folder / name).stat().st_size / 1e6
        for name in ("subnet.pt", "subnet.onnx")
        if (folder / name).exists()
    }
    hardware = fingerprint(str(hw.device), str(hw.backend), hw.threads, int(hw.batch_size))
    hardware.update(machine=platform.machine(), cpu_flags=speed_flags())
    card = {
        "format": "hwnas.model_card/1",
        "point": point.index,
        "chosen": chosen,
        "folder": folder.name,
        "arch": point.arch.to_dict(),
        "space": ctx.model.space.name,
        "data": ctx.dm.name,
        "task": ctx.task.name,
        "test": {**{k: float(v) for k, v in metrics.items()}, "method": method},
        f"search_val_{m}": point.val,
        "speed": {k: float(v) for k, v in speed.items()},
        "throughput_batch": int(ctx.settings.final.throughput_batch),
        "hardware": hardware,
        **ctx.model.cost_of(point.arch),
        "size_mb": sizes,
        "parent": _parent(ctx),
        "commands": _commands(ctx.out, point, method.startswith("fine-tuned")),
        "hwnas_version": hwnas.__version__,
        "seed": ctx.seed,
    }
    atomic.write_json(folder / "card.json", card)
    atomic.write_text(folder / "card.md", card_markdown(card, m))
    return card


def card_markdown(card: dict[str, Any], m: str) -> str:
    hw, sp, parent = card["hardware"], card["speed"], card["parent"]
    flags = ", ".join(hw.get("cpu_flags") or []) or "none of the listed"
    largest = parent["largest_subnet"]
    lines = [
        f"# Model card: subnet {card['point']} of {card['space']} on {card['data']}"
        + (" (the chosen one)" if card["chosen"] else ""),
        "",
        "## Accuracy",
        f"- test {m}: **{card['test'][m]:.4f}** ({card['test']['method']})",
        *[f"- test {k}: {v:.4f}" for k, v in card["test"].items() if k not in (m, "method")],
        f"- validation {m} during the search (inherited weights): {card[f'search_val_{m}']:.4f}",
        "",
        "## Speed",
        f"- latency: **{sp['latency_ms']:.3f} ms** median (p90 {sp.get('latency_p90_ms', 0):.3f}),"
        f" batch {hw['batch_size']}; throughput {sp['throughput_per_s']:.0f}/s at batch "
        f"{card['throughput_batch']}",
        f"- measured on {hw['device_name']} ({hw['machine']}; CPU flags: {flags}), device "
        f"{hw['device']}, backend {hw['backend']}, {hw['threads']} threads, torch "
        f"{hw['torch_version']}, onnxruntime {hw.get('onnxruntime_version')}"
        + (f", openvino {hw['openvino_version']}" if hw.get("openvino_version") else ""),
        "",
        "## Size",
        f"- parameters: {card['params_m']:.4f} M (largest subnet {largest['params_m']:.4f} M)",
        f"- FLOPs: {card['flops_m']:.2f} M (largest subnet {largest['flops_m']:.2f} M)",
        *[f"- {name}: {mb:.3f} MB on disk" for name, mb in card["size_mb"].items()],
        "",
        "## Origin",
        f"- parent model: {parent['model']}"
        + "".join(f"; {k} {parent[k]}" for k in ("source", "weights", "pretrained") if k in parent),
        f"- parent's license: {parent['license']}",
        f"- task {card['task']}, seed {card['seed']}, hwnas {card['hwnas_version']}",
        f"- arch: `{json.dumps(card['arch'], separators=(',', ':'))}`",
        "",
        "## Reproduce",
        *[f"- {what}: `{cmd}`" for what, cmd in card["commands"].items()],
        "",
        "Load it: `hwnas.app.subnet_io.load_subnet(<this folder>)` (a plain `nn.Module`), or "
        "`subnet.onnx` with any ONNX runtime.",
        "",
    ]
    return "\n".join(lines)
