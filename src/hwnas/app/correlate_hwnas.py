"""``space=hwnas``: the correlation harness over subnets of any hwnas space.

A user who trained subnets of an hwnas space (or ran its search) re-scores them here:
the table's ``arch_column`` holds each subnet's arch JSON (as the search journals and
``pareto.csv`` write it), and each is built the way the zero-shot stage builds it,
``model.proxy_module(model.export(arch))``, scored on the task's data-free proxy batch
(``task.proxy_inputs``)::

    python -m hwnas.correlate space=hwnas model=elastic_vit data=synthetic \
        csv_path=subnets.csv arch_column=arch accuracy_column=acc
    python -m hwnas.correlate space=hwnas hwnas.run_dir=outputs/run1 \
        hwnas.weights=inherited csv_path=outputs/run1/search/pareto.csv ...

With ``hwnas.run_dir`` the model and data come from that run's recorded config; with
``hwnas.weights=inherited`` the subnets are exported from its trained supernet
(``supernet/supernet.pt``), as DE-NAS scored BERT subnets, instead of a seeded random
initialisation. Proxies that re-initialise the network (zen, the AZ-NAS terms, synflow's
|W|) see the architecture, not the inherited weights; docs/proxies.md says which.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from hwnas.app.config import ConfigError
from hwnas.app.data import build_data
from hwnas.core import atomic
from hwnas.elastic import build_model
from hwnas.spaces.base import Arch
from hwnas.spaces.parsing import register_arch_parser

log = logging.getLogger(__name__)

SPACE = "hwnas"
RUN_CONFIG = "hwnas_config.yaml"  # what a run folder records
WEIGHTS = ("init", "inherited")


def register_hwnas_space(cfg: DictConfig) -> dict[str, Any]:
    """Register the ``hwnas`` arch parser for this run's model and return the settings
    that identify it in the score journal. Sets ``cfg.num_classes`` to the data's."""
    node = cfg.get("hwnas") or {}
    run_dir, weights = node.get("run_dir"), str(node.get("weights", "init"))
    if weights not in WEIGHTS:
        raise ConfigError(f"hwnas.weights={weights!r}: choose one of {list(WEIGHTS)}")
    if run_dir:
        run_dir = Path(str(run_dir)).expanduser()
        saved = run_dir / RUN_CONFIG
        if not saved.is_file():  # read as recorded: composing again would need Hydra
            raise ConfigError(f"hwnas.run_dir={run_dir}: no {RUN_CONFIG}; give a hwnas run folder")
        run_cfg = OmegaConf.load(saved)
    elif cfg.get("model") is not None and cfg.get("data") is not None:
        run_cfg = OmegaConf.create(
            {"model": cfg.model, "data": cfg.data, "paths": cfg.get("paths"), "seed": cfg.seed}
        )
    else:
        raise ConfigError(
            "space=hwnas needs the model and data the archs belong to: add model=<name> "
            "data=<name> (e.g. model=elastic_vit data=synthetic), or hwnas.run_dir=<a run>"
        )
    if weights == "inherited" and not run_dir:
        raise ConfigError(
            "hwnas.weights=inherited needs hwnas.run_dir=<a run whose supernet stage finished>"
        )
    seed = int(cfg.seed)
    L.seed_everything(seed, workers=False, verbose=False)
    dm = build_data(run_cfg.data, seed)
    dm.setup()
    model = build_model(run_cfg.model, dm.input_shape, dm.num_classes)
    if weights == "inherited":
        _load_supernet(model, run_dir / "supernet" / "supernet.pt")
    model.eval()
    task = dm.task()
    shape = tuple(int(d) for d in (model.proxy_shape or dm.input_shape))

    def parse(text: str) -> Arch:
        arch = Arch.from_str(text)
        if not model.space.contains(arch):
            raise ValueError(f"arch {text} is not in the {model.space.name} space")
        return arch

    def build(arch: Arch, num_classes: int, seed: int | None = None, **_: Any) -> torch.nn.Module:
        with torch.no_grad():
            return model.proxy_module(model.export(arch))

    def data_free(batch: int, _shape: tuple[int, ...], seed: int) -> torch.Tensor:
        return task.proxy_inputs(batch, seed, "cpu", shape=model.proxy_shape).x

    register_arch_parser(SPACE, parse, build, shape, overwrite=True, data_free_input=data_free)
    OmegaConf.set_struct(cfg, False)
    cfg.num_classes = int(dm.num_classes)
    return {"model": model.space.name, "run_dir": str(run_dir or ""), "weights": weights}


def _load_supernet(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(
            f"hwnas.weights=inherited: no trained supernet at {path}; give a run folder "
            "whose supernet stage finished, or hwnas.weights=init"
        )
    fix = f"rerun the supernet stage of {path.parents[1]}"
    state = atomic.check_finite_weights(path, atomic.torch_load(path, fix), fix)
    model.load_state_dict(state)
    log.info("space=hwnas: subnets inherit the weights of %s", path)
