"""What every stage shares: the run :class:`Context`, built once per run, and
:class:`ConfigError`, the error for a configuration value a user must change."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from hwnas.app.config import ConfigError
from hwnas.app.data import build_data
from hwnas.app.schema import settings
from hwnas.app.schema.run import RunConfig
from hwnas.core.runtime import process_rank
from hwnas.core.types import ProxyInputs
from hwnas.data import DATAMODULES
from hwnas.data.base import DataModule
from hwnas.elastic import build_model
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints
from hwnas.hardware.factory import build_cost_model
from hwnas.hardware.records import MEASURED_NAME, RECORD_NAME
from hwnas.proxies.descore import DEScore
from hwnas.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Everything the stages share, built once per run."""

    cfg: DictConfig
    out: Path
    dm: DataModule
    model: ElasticModel
    cost_model: CostModel
    constraints: Constraints
    descore: DEScore
    inputs: ProxyInputs
    task: Task
    seed: int
    device: torch.device
    settings: RunConfig = field(default_factory=RunConfig)  # typed: what the stages read
    results: dict[str, Any] = field(default_factory=dict)
    rank: int = 0  # global rank of this process in a multi-process (DDP) run

    def stage_dir(self, stage: str) -> Path:
        folder = self.out / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def progress(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hwnas.core.progress.progress_bar` from config."""
        s = self.settings
        return {"mode": str(s.progress), "interval_s": float(s.progress_interval_s)}


def _hardware(cfg: DictConfig, out: Path) -> Any:
    """The ``hardware`` node; a resumed run (its folder holds the latency model it
    recorded, or with ``latency: measured`` the latencies it measured) keeps that model
    instead of fitting a new one or timing again, so its latencies hold."""
    hw = cfg.hardware
    record = out / (MEASURED_NAME if hw.latency == "measured" else RECORD_NAME)
    if hw.get("table") is None and record.is_file():
        log.info("latency model of the run folder: %s", record)
        hw = OmegaConf.merge(hw, {"table": str(record)})
    return hw


def zero_shot_device(setting: str) -> str:
    """The device train-free scoring runs on: ``auto`` is CUDA when a GPU is visible,
    else the CPU; ``cpu`` / ``cuda`` as given (``checks`` rejects CUDA without a GPU)."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(setting)


def _named_data_dir_exists(cfg: DictConfig) -> None:
    """A ``data.data_dir`` the user named (not the default ``paths.data_dir``) must exist
    for a data module that reads it: an input is never silently replaced by a fallback
    (the system's FashionMNIST, the packaged SQuAD)."""
    named = cfg.data.get("data_dir")
    if named is None or str(named) == str(cfg.paths.data_dir) or Path(named).is_dir():
        return
    name = cfg.data.get("name")
    if name in DATAMODULES and DATAMODULES.get(name).reads_data_dir:
        raise ConfigError(
            f"data.data_dir={named}: no such folder; give the folder that holds the "
            f"{name} files, or leave data.data_dir out to use the default places"
        )


def build_context(cfg: DictConfig) -> Context:
    """Data, supernet, cost model, constraints, DE-Score and proxy inputs of a run.

    Writes nothing into the run folder (the cost model may fill ``paths.cache_dir``)."""
    out = Path(cfg.paths.output_dir)
    seed = int(cfg.seed)
    L.seed_everything(seed, workers=True, verbose=False)
    _named_data_dir_exists(cfg)
    try:
        dm = build_data(cfg.data, seed)
    except TypeError as err:
        raise ConfigError(f"data: {err}") from err
    dm.setup()
    model = build_model(cfg.model, dm.input_shape, dm.num_classes)
    cost_model = build_cost_model(_hardware(cfg, out), model, cfg.paths.cache_dir)
    constraints = Constraints.from_config(OmegaConf.to_container(cfg.constraints, resolve=True))
    descore = DEScore.from_config(OmegaConf.to_container(cfg.proxy, resolve=True))
    task = dm.task()
    if model.example_seconds is not None:  # one audio length (speech models)
        task.example_seconds = model.example_seconds
    zs = cfg.zero_shot
    device = torch.device(zero_shot_device(zs.device))
    if zs.inputs == "data":
        x, y = dm.proxy_batch(int(zs.batch_size), seed)
        inputs = ProxyInputs(x=x.to(device), y=y.to(device), num_classes=dm.num_classes)
    else:
        inputs = task.proxy_inputs(int(zs.batch_size), seed, device, shape=model.proxy_shape)
    run = settings(cfg)
    rank = process_rank(int(run.trainer.num_nodes))
    return Context(
        cfg, out, dm, model, cost_model, constraints, descore, inputs, task, seed, device,
        settings=run, rank=rank,
    )  # fmt: skip
