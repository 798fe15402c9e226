"""The real config tree: every group option composes, bad input is rejected clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hwnas.app.checks import validate
from hwnas.app.context import ConfigError
from tests.conftest import CONF_DIR, compose_config

GROUPS = [
    "data",
    "model",
    "proxy",
    "zero_shot/strategy",
    "search/strategy",
    "hardware",
    "supernet",
    "final",
    "trainer",
    "paths",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


# what an option needs besides itself (data=custom: the user's class, here a built-in one)
REQUIRED = {"data=custom": ["data._target_=hwnas.domains.image.data.synthetic.SyntheticDataModule"]}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option):
    extra = REQUIRED.get(f"{group}={option}", [])
    cfg = compose_config([f"{group}={option}", "paths.output_dir=/tmp/x", *extra])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    validate(cfg)


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
)
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    OmegaConf.to_container(cfg, resolve=True)
    validate(cfg)


def test_default_is_the_fashion_mnist_demo_and_overrides_apply():
    cfg = compose_config(["zero_shot.strategy.population=7", "seed=3", "paths.output_dir=/tmp/x"])
    assert cfg.data.name == "fashion_mnist" and cfg.model.name == "elastic_cnn"
    assert cfg.zero_shot.strategy.population == 7 and cfg.seed == 3 and cfg.data.seed == 3
    assert cfg.stages == ["zero_shot", "supernet", "search", "final"]


def test_experiment_is_a_delta():
    cfg = compose_config(["experiment=synthetic_tiny", "paths.output_dir=/tmp/x"])
    assert cfg.data.name == "synthetic" and cfg.hardware.latency == "flops"
    assert cfg.model.kernel_choices == [3, 5, 7]  # untouched default survives


def test_unknown_keys_are_rejected():
    with pytest.raises(Exception, match="populaton"):
        compose_config(["zero_shot.strategy.populaton=5"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("stages=[final,zero_shot]", "order"),
        ("stages=[train]", "subset"),
        ("zero_shot.strategy.name=annealing", "choose one of"),
        ("search.max_latency_ratio=1.5", "max_latency_ratio"),
        ("zero_shot.inputs=images", "gaussian or data"),
        ("zero_shot.device=gpu", "auto, cpu or cuda"),
        ("search.budget=0", "search.budget"),
        # values of the wrong type name the key instead of failing deep inside
        ("zero_shot.strategy.population=abc", "zero_shot.strategy.*population"),
        ("search.strategy.top_k=1.5", "search.strategy.*top_k"),
        ("search.val_samples=0", "search.val_samples"),
        ("threads=0", "threads"),
        ("progress=quiet", "progress"),
        ("trainer.logger=wandb", "trainer.logger"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps"),
        ("trainer.accelerator=tpu", "trainer.accelerator"),
        ("zero_shot.workers=2", "zero_shot/strategy=tpe or nsga2"),
        ("search.storage=/tmp/s.journal", "search/strategy=tpe or nsga2"),
        ("search.workers=0", "search.workers=0"),
        ("supernet.warmup_fraction=-0.1", "supernet.warmup_fraction"),
        ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val"),
        ("trainer.strategy=fsdp", "trainer.strategy"),
        ("final.kd_hidden=-1", r"final.kd_hidden=-1(\.0)? must be >= 0"),
        ("final.kd_teacher=best", "final.kd_teacher='best': choose one of"),
        ("final.kd_teacher=finetuned final.finetune_largest=false",
         "needs final.finetune_largest=true"),
        ("supernet.smallest=false supernet.num_random=0", "set num_random >= 1"),
        ("supernet.pool_within_cap=true search.max_latency_ratio=null",
         "needs search.max_latency_ratio"),
    ],
)
def test_invalid_values_get_one_line_errors(override, match):
    cfg = compose_config([*override.split(" "), "paths.output_dir=/tmp/x"])
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override",
    [
        "constraints.latency_ms.max=abc",
        "final.epochs=abc",
        "supernet.phases.0.epochs=two",
        "supernet.kd_hidden=abc",
        "supernet.smallest=maybe",
    ],
)
def test_values_of_the_wrong_type_fail_when_composed(override):
    """The typed schemas refuse them before any check runs, naming the override."""
    with pytest.raises(Exception, match=override.split("=")[0].replace(".", r"\.")):
        compose_config([override, "paths.output_dir=/tmp/x"])


def test_gpu_accelerator_without_gpu_names_the_fix(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = compose_config(["trainer.accelerator=gpu", "paths.output_dir=/tmp/x"])
    with pytest.raises(ConfigError, match="trainer.accelerator=cpu"):
        validate(cfg)


def test_zero_shot_device_auto_takes_the_gpu_when_there(monkeypatch):
    from hwnas.app.context import zero_shot_device

    assert compose_config(["paths.output_dir=/tmp/x"]).zero_shot.device == "auto"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert zero_shot_device("auto") == "cpu" and zero_shot_device("cuda") == "cuda"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert zero_shot_device("auto") == "cuda" and zero_shot_device("cpu") == "cpu"


def test_stage_groups_share_the_stage_names():
    """Each stage maps to the config node of the same name (README <-> config)."""
    cfg = compose_config(["paths.output_dir=/tmp/x"])
    for stage in cfg.stages:
        assert stage in cfg, stage
    assert cfg.zero_shot.strategy.name == "evolution"
    assert cfg.search.strategy.name == "evolution"
    assert "Stage 5" not in (Path(CONF_DIR) / "final" / "default.yaml").read_text()


def test_phase_groups_must_be_the_models(tmp_path):
    from hwnas.app.checks import preflight
    from hwnas.app.context import build_context

    cfg = compose_config(
        [
            "experiment=synthetic_tiny",
            "supernet.phases.0.elastic=[colour]",
            f"paths.output_dir={tmp_path}/r",
            f"paths.cache_dir={tmp_path}/c",
        ]
    )
    validate(cfg)
    with pytest.raises(ConfigError, match=r"elastic must be a subset of the elastic_cnn groups"):
        preflight(build_context(cfg))


def test_unknown_optimizer_is_rejected():
    cfg = compose_config(["final.optimizer=adam", "paths.output_dir=/tmp/x"])
    with pytest.raises(ConfigError, match="final.optimizer='adam'"):
        validate(cfg)
