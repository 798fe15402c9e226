"""The real config tree: every group option composes, bad input is rejected clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hwnas.pipeline import ConfigError, validate
from tests.conftest import CONF_DIR, compose_config

GROUPS = ["data", "model", "proxy", "search", "selection", "hardware", "supernet", "final",
          "paths"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option):
    cfg = compose_config([f"{group}={option}", "paths.output_dir=/tmp/x"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    validate(cfg)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in Path(CONF_DIR, "experiment")
                                              .glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    OmegaConf.to_container(cfg, resolve=True)
    validate(cfg)


def test_default_is_the_fashion_mnist_demo_and_overrides_apply():
    cfg = compose_config(["search.population=7", "seed=3", "paths.output_dir=/tmp/x"])
    assert cfg.data.name == "fashion_mnist" and cfg.model.name == "elastic_cnn"
    assert cfg.search.population == 7 and cfg.seed == 3 and cfg.data.seed == 3
    assert cfg.stages == ["zero_shot", "supernet", "search", "final"]


def test_experiment_is_a_delta():
    cfg = compose_config(["experiment=synthetic_tiny", "paths.output_dir=/tmp/x"])
    assert cfg.data.name == "synthetic" and cfg.hardware.latency == "flops"
    assert cfg.model.kernel_choices == [3, 5, 7]  # untouched default survives


def test_unknown_keys_are_rejected():
    with pytest.raises(Exception, match="search.populaton|populaton"):
        compose_config(["search.populaton=5"])


@pytest.mark.parametrize("override,match", [
    ("stages=[final,zero_shot]", "order"),
    ("stages=[train]", "subset"),
    ("search.name=annealing", "choose one of"),
    ("selection.max_latency_ratio=1.5", "max_latency_ratio"),
    ("supernet.phases.0.elastic=[colour]", "elastic must be"),
    ("zero_shot.inputs=images", "gaussian or data"),
    ("selection.budget=0", "selection.budget"),
])
def test_invalid_values_get_one_line_errors(override, match):
    cfg = compose_config([override, "paths.output_dir=/tmp/x"])
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg)
    assert "\n" not in str(err.value)
