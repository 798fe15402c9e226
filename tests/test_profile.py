"""``python -m hwnas.profile``: its config composes like a run's, experiments included."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from hwnas.app.config import CONFIG_DIR
from hwnas.app.profile import model_from_config, run_profile
from hwnas.hardware import factory
from hwnas.hardware.factory import HardwareConfig, build_cost_model, table_cache_name
from hwnas.hardware.table import LatencyTable

CONF = str(CONFIG_DIR)


def compose_profile(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="profile", overrides=overrides)


def compose_run(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_profile_composes_the_groups_of_a_run() -> None:
    for overrides in ([], ["experiment=synthetic_tiny"], ["hardware=onnxruntime", "data=cifar10"]):
        profile, run = compose_profile(overrides), compose_run(overrides)
        for group in ("hardware", "model", "data"):
            assert profile[group] == run[group], (overrides, group)
    with pytest.raises(Exception, match="outptu"):  # typos still refused by Hydra
        compose_profile(["outptu=t.json"])


def test_profile_experiment_synthetic_tiny_builds_the_runs_table(tmp_path, monkeypatch) -> None:
    cfg = compose_profile(
        [
            "experiment=synthetic_tiny",
            "rounds=1",
            "progress=false",
            f"output={tmp_path / 'table.json'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert cfg.hardware.name == "analytic" and list(cfg.data.shape) == [1, 16, 16]
    figures = run_profile(cfg)
    model = model_from_config(cfg)  # the experiment's space: stage_channels [8, 16], 16x16
    table = LatencyTable.load(tmp_path / "table.json", model)
    assert figures["units"] == len(table.units) > 10
    assert (table.meta["warmup"], table.meta["repeats"]) == (1, 3)  # the experiment's settings
    hw = HardwareConfig.from_mapping({**cfg.hardware, "latency": "table"})
    cached = tmp_path / "cache" / table_cache_name(model, hw)
    assert cached.is_file()
    # a run of the same space with latency=table finds and reuses it, measuring nothing
    monkeypatch.setattr(factory, "build_table", lambda *a, **k: pytest.fail("rebuilt"))
    cost = build_cost_model({**cfg.hardware, "latency": "table"}, model, tmp_path / "cache")
    assert cost(model.space.max_arch())["latency_ms"] == table.predict(
        model, model.space.max_arch()
    )
