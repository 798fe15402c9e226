"""The hwnas pipeline as a pure function of the composed Hydra config.

``run(cfg)`` executes the configured stages in order (zero_shot, supernet, search,
final), each writing under ``cfg.paths.output_dir/<stage>/`` and finishing with a
``DONE.json`` marker; rerunning in the same folder skips finished stages (resume).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from hwnas.data import build_datamodule
from hwnas.data.base import HwnasDataModule
from hwnas.elastic import build_model
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints
from hwnas.hardware.factory import build_cost_model
from hwnas.proxies import DEScore, ProxyInputs, gaussian_inputs
from hwnas.search.base import list_strategies

log = logging.getLogger(__name__)

STAGES = ("zero_shot", "supernet", "search", "final")
CONFIG_FILE = "hwnas_config.yaml"


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


@dataclass
class Context:
    """Everything the stages share, built once per run."""

    cfg: DictConfig
    out: Path
    dm: HwnasDataModule
    model: ElasticModel
    cost_model: CostModel
    constraints: Constraints
    descore: DEScore
    inputs: ProxyInputs
    seed: int
    device: torch.device
    results: dict[str, Any] = field(default_factory=dict)

    def stage_dir(self, stage: str) -> Path:
        folder = self.out / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def validate(cfg: DictConfig) -> None:
    """Reject invalid values with one-line messages (Hydra already rejects unknown keys)."""
    stages = list(cfg.stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ConfigError(f"stages={stages}: use a non-empty subset of {list(STAGES)}")
    if stages != [s for s in STAGES if s in stages]:
        raise ConfigError(f"stages={stages} must keep the order {list(STAGES)}")
    for key, node in (("search", cfg.search), ("selection.search", cfg.selection.search)):
        if node.name not in list_strategies():
            raise ConfigError(f"{key}.name={node.name!r}: choose one of {list_strategies()}")
    groups = ("kernel", "depth", "width")
    for i, ph in enumerate(cfg.supernet.phases):
        unknown = [g for g in ph.elastic if g not in groups]
        if unknown or ph.epochs < 0 or ph.lr <= 0:
            raise ConfigError(
                f"supernet.phases[{i}] ({ph.name}): elastic must be a subset of {list(groups)}, "
                f"epochs >= 0 and lr > 0; got elastic={list(ph.elastic)}, epochs={ph.epochs}, "
                f"lr={ph.lr}"
            )
    ratio = cfg.selection.max_latency_ratio
    if ratio is not None and not 0 < ratio <= 1:
        raise ConfigError(f"selection.max_latency_ratio={ratio} must be in (0, 1] or null")
    for key in ("val_samples", "calib_samples"):
        if cfg.selection[key] < 1:
            raise ConfigError(f"selection.{key} must be >= 1, got {cfg.selection[key]}")
    for key, value in (("zero_shot.budget", cfg.zero_shot.budget),
                       ("selection.budget", cfg.selection.budget)):
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value} must be null (the strategy's own) or >= 1")
    if cfg.zero_shot.inputs not in ("gaussian", "data"):
        raise ConfigError(f"zero_shot.inputs={cfg.zero_shot.inputs!r}: use gaussian or data")
    if cfg.zero_shot.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("zero_shot.device=cuda but no CUDA device is visible: use cpu")
    if cfg.final.epochs < 0:
        raise ConfigError(f"final.epochs must be >= 0, got {cfg.final.epochs}")


def check_run_dir(out: Path, cfg: DictConfig) -> None:
    """Save the resolved config; refuse a folder that holds a run with another config."""
    mine = _comparable(cfg)
    path = out / CONFIG_FILE
    if path.exists():
        theirs = _comparable(OmegaConf.load(path))
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ConfigError(
                f"{out} holds a run made with a different config (differs in {diff[:5]}); "
                f"resume it with its own config or choose a new folder (hydra.run.dir=...)"
            )
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)


def _comparable(cfg: DictConfig) -> dict[str, Any]:
    """Flattened resolved config without keys that may differ between resumes."""
    data = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(data, "")
    return {k: v for k, v in flat.items() if k != "stages" and not k.startswith("paths.")}


def stage_summary(out: Path, stage: str) -> dict[str, Any] | None:
    """The ``DONE.json`` summary of a finished stage, or None."""
    path = out / stage / "DONE.json"
    return json.loads(path.read_text()) if path.exists() else None


def mark_done(out: Path, stage: str, summary: Mapping[str, Any]) -> None:
    (out / stage / "DONE.json").write_text(json.dumps(dict(summary), indent=2))


def build_context(cfg: DictConfig) -> Context:
    out = Path(cfg.paths.output_dir)
    seed = int(cfg.seed)
    L.seed_everything(seed, workers=True, verbose=False)
    try:
        dm = build_datamodule(cfg.data)
    except TypeError as err:
        raise ConfigError(str(err)) from err
    dm.setup()
    model = build_model(cfg.model, dm.input_shape, dm.num_classes)
    cost_model = build_cost_model(cfg.hardware, model, cfg.paths.cache_dir)
    constraints = Constraints.from_config(OmegaConf.to_container(cfg.constraints, resolve=True))
    descore = DEScore.from_config(OmegaConf.to_container(cfg.proxy, resolve=True))
    zs = cfg.zero_shot
    device = torch.device(zs.device)
    if zs.inputs == "data":
        x, y = dm.proxy_batch(int(zs.batch_size), seed)
        inputs = ProxyInputs(x=x.to(device), y=y.to(device), num_classes=dm.num_classes)
    else:
        inputs = gaussian_inputs(dm.input_shape, int(zs.batch_size), dm.num_classes, seed, device)
    return Context(cfg, out, dm, model, cost_model, constraints, descore, inputs, seed, device)


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the configured stages; returns the run's headline metrics."""
    from hwnas import stages as st

    validate(cfg)
    for name in ("lightning.pytorch", "lightning.fabric"):  # keep the run log readable
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(cfg.paths.output_dir)
    check_run_dir(out, cfg)
    ctx = build_context(cfg)
    log.info("output folder: %s", out)
    log.info(
        "space %s (%d archs); cost model: %s; constraints: %s",
        ctx.model.space.name,
        ctx.model.space.size(),
        ctx.cost_model.describe(),
        ctx.constraints.describe(),
    )
    steps = {
        "zero_shot": st.zero_shot,
        "supernet": st.supernet,
        "search": st.search,
        "final": st.final,
    }
    metrics: dict[str, float] = {}
    for stage in cfg.stages:
        done = stage_summary(out, stage)
        if done is not None:
            log.info("stage %s: already done in %s, skipped", stage, out / stage)
            ctx.results[stage] = done
        else:
            log.info("stage %s: starting", stage)
            ctx.results[stage] = steps[stage](ctx)
            mark_done(out, stage, ctx.results[stage])
        metrics.update({k: float(v) for k, v in ctx.results[stage].get("metrics", {}).items()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
