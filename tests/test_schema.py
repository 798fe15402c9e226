"""The typed config schemas (hwnas.app.schema): the configs compose exactly as before the
schemas owned the defaults, misspelled keys and wrong types fail at composition, every
field has a default, and each schema's validate() rejects values out of range."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hwnas.app import schema
from hwnas.app.config import CONFIG_DIR, compose_config
from hwnas.app.schema import (
    GROUP_SCHEMAS,
    ConstraintsConfig,
    ConstraintWindow,
    FinalConfig,
    PathsConfig,
    PhaseConfig,
    ProfileConfig,
    QatConfig,
    QuantizeConfig,
    QuantizeConstraints,
    RunConfig,
    SearchConfig,
    SupernetConfig,
    TrainerConfig,
    ZeroShotConfig,
    register,
    validate_config,
)

register()  # hwnas.app.config will call it itself; here it must precede every compose

FIXTURE = Path(__file__).parent / "fixtures" / "composed_configs.json"
COMPOSED = json.loads(FIXTURE.read_text())
OUT = "paths.output_dir=/tmp/x"  # ${hydra:runtime.output_dir} resolves only in a run
ALL_SCHEMAS = [
    ZeroShotConfig, SupernetConfig, PhaseConfig, SearchConfig, FinalConfig, QuantizeConfig,
    QuantizeConstraints, QatConfig, TrainerConfig, PathsConfig, RunConfig, ConstraintsConfig,
    ConstraintWindow, ProfileConfig,
]  # fmt: skip


def _canonical(node) -> str:
    """Type-exact: 1 and 1.0, true and 1 differ; dict key order does not matter."""
    return json.dumps(node, sort_keys=True)


def _args(key: str) -> tuple[str, list[str]]:
    """A fixture key (the overrides, ``config_name=...`` first) as compose arguments."""
    parts = [] if key == "(default)" else key.split()
    name = "config"
    if parts and parts[0].startswith("config_name="):
        name = parts.pop(0).split("=", 1)[1]
    return name, parts


# ----------------------------------------------------------------- nothing changes
@pytest.mark.parametrize("key", sorted(COMPOSED))
def test_composed_config_is_unchanged(key):
    """Every recorded composition (default run, each experiment, the option swaps, the
    profile and correlate configs) is key for key and value for value what it was
    before the schemas (tests/fixtures/composed_configs.json, recorded then)."""
    name, overrides = _args(key)
    now = OmegaConf.to_container(compose_config(overrides, config_name=name), resolve=False)
    assert _canonical(now) == _canonical(COMPOSED[key])


def test_fixture_covers_every_experiment_and_option_swap():
    experiments = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
    assert {f"experiment={e}" for e in experiments} <= set(COMPOSED)
    swaps = ["supernet=bootstrap", "model=bootstrap", "hardware=cpu", "hardware=cuda",
             "hardware=onnxruntime", "hardware=openvino", "hardware=analytic",
             "proxy=descore", "proxy=denas_rank",
             "proxy=denas_reference", "proxy=descore_transformer"]  # fmt: skip
    for group in ("zero_shot/strategy", "search/strategy"):
        swaps += [f"{group}={s}" for s in ("random", "nsga2", "tpe")]
    assert {"(default)", *swaps} <= set(COMPOSED)


@pytest.mark.parametrize("group", sorted(GROUP_SCHEMAS))
def test_default_option_is_the_schema(group):
    """The default option of a group holds no value of its own: the schema's defaults
    are the composed values (but for ``strategy``, which its own group fills)."""
    composed = OmegaConf.to_container(compose_config([])[group], resolve=False)
    defaults = OmegaConf.to_container(OmegaConf.structured(GROUP_SCHEMAS[group]))
    if group in ("zero_shot", "search"):
        assert defaults.pop("strategy") == {}
        composed.pop("strategy")
    assert _canonical(composed) == _canonical(defaults)


def _options() -> list[Path]:
    return sorted(p for g in GROUP_SCHEMAS for p in (Path(CONFIG_DIR) / g).glob("*.yaml"))


@pytest.mark.parametrize("path", _options(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_option_yaml_extends_the_schema(path):
    text = path.read_text()
    assert yaml.safe_load(text)["defaults"] == ["_schema", "_self_"]
    group = path.parent.name
    assert (
        f"# keys, types and defaults: hwnas/app/schema/{group}.py "
        "(python -m hwnas --cfg job shows the composed config)"
    ) in text


def test_config_yaml_starts_with_the_run_schema():
    top = yaml.safe_load((Path(CONFIG_DIR) / "config.yaml").read_text())
    assert top["defaults"][0] == {"schema": "run"}
    assert set(top) == {"defaults"}  # every top-level value lives in RunConfig
    cfg = compose_config([OUT])
    assert OmegaConf.get_type(cfg) is RunConfig
    assert OmegaConf.get_type(compose_config([], config_name="profile")) is ProfileConfig


# ------------------------------------------------------ typos and wrong types fail
@pytest.mark.parametrize(
    "override",
    [
        "supernet.num_randon=3",
        "final.epoch=2",
        "zero_shot.pool=3",
        "search.val_sample=3",
        "quantize.qat.epoch=1",
        "trainer.acelerator=gpu",
        "paths.data=x",
        "constraints.latency_ms.mx=5",
        "sed=1",
    ],
)
def test_misspelled_key_on_the_command_line_fails(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigCompositionException, match=key.replace(".", r"\.")):
        compose_config([override])


@pytest.mark.parametrize(
    "override",
    [
        "supernet.num_random=abc",
        "final.epochs=abc",
        "final.lr=fast",
        "supernet.smallest=maybe",
        "supernet.phases.0.epochs=two",
        "supernet.phases=[{name:a,elastic:[],epochs:x,lr:0.1}]",
        "search.max_latency_ratio=abc",
        "zero_shot.budget=many",
        "quantize.qat.lr=abc",
        "trainer.log_every_n_steps=often",
        "constraints.latency_ms.max=abc",
        "seed=abc",
        "supernet.limit_train_batches=all",
    ],
)
def test_wrong_type_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException, match="Error merging override"):
        compose_config([override])


def _experiment(tmp_path: Path, name: str, body: str) -> list[str]:
    folder = tmp_path / "experiment"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text("# @package _global_\n" + body)
    return [f"hydra.searchpath=[file://{tmp_path}]", f"experiment={name}"]


@pytest.mark.parametrize(
    "body,match",
    [
        ("supernet:\n  num_randon: 3\n", "Key 'num_randon' not in 'SupernetConfig'"),
        ("final:\n  epoch: 2\n", "Key 'epoch' not in 'FinalConfig'"),
        ("supernet:\n  phases:\n    - {name: a, elastic: [], epoch: 1, lr: 0.1}\n",
         "Key 'epoch' not in 'PhaseConfig'"),
        ("superne:\n  num_random: 3\n", "Key 'superne' not in 'RunConfig'"),
        ("constraints:\n  latency_ms: {maximum: 3}\n", "Key 'maximum' not in 'ConstraintWindow'"),
        ("final:\n  epochs: abc\n", "final.epochs"),
        ("supernet:\n  num_random: abc\n", "supernet.num_random"),
        ("trainer:\n  deterministic: maybe\n", "trainer.deterministic"),
    ],
)  # fmt: skip
def test_misspelled_key_or_wrong_type_in_an_experiment_fails(tmp_path, body, match):
    with pytest.raises(ConfigCompositionException, match=match):
        compose_config(_experiment(tmp_path, "bad", body))


def test_experiments_still_add_keys_under_data_and_model(tmp_path):
    body = "data:\n  new_key: 1\nmodel:\n  other: [1, 2]\nsupernet:\n  num_random: 3\n"
    cfg = compose_config(_experiment(tmp_path, "good", body))
    assert cfg.data.new_key == 1 and list(cfg.model.other) == [1, 2]
    assert cfg.supernet.num_random == 3


def test_types_keep_the_values_they_are_given():
    """Counts or fractions stay what they are; a bare number is still a max."""
    cfg = compose_config(
        [
            "final.limit_train_batches=5",
            "supernet.limit_train_batches=0.5",
            "progress_interval_s=0.5",
            "threads=3",
            "trainer.precision=16",
            "trainer.devices=[0,1]",
            "constraints.latency_ms=5",
            "quantize.constraints.size_mb=2",
            "+constraints.size_mb.max=4",
        ]
    )
    assert cfg.final.limit_train_batches == 5 and isinstance(cfg.final.limit_train_batches, int)
    assert cfg.supernet.limit_train_batches == 0.5 and cfg.progress_interval_s == 0.5
    assert cfg.threads == 3 and cfg.trainer.precision == 16
    assert list(cfg.trainer.devices) == [0, 1]
    assert cfg.constraints.latency_ms == 5 and cfg.quantize.constraints.size_mb == 2
    assert cfg.constraints.size_mb.max == 4
    validate_config(OmegaConf.merge(cfg, {"paths": {"output_dir": "/tmp/x"}}))


# ------------------------------------------------------------- defaults and objects
@pytest.mark.parametrize("cls", ALL_SCHEMAS, ids=lambda c: c.__name__)
def test_every_field_has_a_default(cls):
    for f in dataclasses.fields(cls):
        has = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        assert has, f"{cls.__name__}.{f.name} has no default"
    cls()  # builds
    OmegaConf.structured(cls)  # and OmegaConf accepts its types


@pytest.mark.parametrize("group", sorted(GROUP_SCHEMAS))
def test_to_object_returns_the_schema(group):
    cfg = compose_config(["experiment=squad_tiny", OUT])
    obj = OmegaConf.to_object(cfg[group])
    assert type(obj) is GROUP_SCHEMAS[group]
    obj.validate()


def test_root_to_object_is_typed_throughout():
    run = OmegaConf.to_object(compose_config(["experiment=synthetic_tiny", OUT]))
    assert isinstance(run, RunConfig) and isinstance(run.supernet, SupernetConfig)
    assert all(isinstance(p, PhaseConfig) for p in run.supernet.phases)
    assert isinstance(run.constraints.params_m, ConstraintWindow)
    assert isinstance(run.quantize.qat, QatConfig)
    assert isinstance(run.data, dict) and run.data["name"] == "synthetic"
    run.validate()


def test_register_is_idempotent_and_called_on_import():
    register()
    register()
    cs = ConfigStore.instance()
    for group, cls in GROUP_SCHEMAS.items():
        assert OmegaConf.get_type(cs.load(f"{group}/_schema.yaml").node) is cls
    assert OmegaConf.get_type(cs.load("schema/run.yaml").node) is RunConfig
    assert OmegaConf.get_type(cs.load("schema/profile.yaml").node) is ProfileConfig
    assert schema._registered


@pytest.mark.parametrize("key", sorted(COMPOSED))
def test_every_recorded_run_config_validates(key):
    name, overrides = _args(key)
    if name != "config":
        return  # profile / correlate: not a run's config
    validate_config(compose_config([*overrides, OUT]))


def test_a_saved_plain_config_is_typed_before_it_is_validated():
    plain = OmegaConf.create(
        OmegaConf.to_container(compose_config(["experiment=synthetic_tiny", OUT]), resolve=True)
    )
    validate_config(plain)
    plain.supernet.kd_alpha = 2.0
    with pytest.raises(ValueError, match=r"supernet\.kd_alpha=2\.0 must be in \[0, 1\]"):
        validate_config(plain)
    plain.supernet.kd_alpha = 0.5
    plain.constraints.colour = {"max": 1}
    with pytest.raises(ValueError, match="constraints.colour: unknown metric"):
        validate_config(plain)
    del plain.constraints["colour"]
    del plain.final["kd_hidden"]  # a run made before that key: the default
    validate_config(plain)
    plain.final.epoch = 2
    with pytest.raises(ValueError, match="final.epoch: Key 'epoch' not in 'FinalConfig'"):
        validate_config(plain)


# ------------------------------------------------------------------------ validate()
def _fails(obj, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        obj.validate()
    assert "\n" not in str(err.value)


NAN, INF = float("nan"), float("inf")


def test_defaults_validate():
    for cls in ALL_SCHEMAS:
        if cls is not ProfileConfig:
            cls().validate()
    ProfileConfig(progress=True).validate()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(inputs="images"), "zero_shot.inputs='images': use gaussian or data"),
        (dict(device="gpu"), "zero_shot.device='gpu': use auto, cpu or cuda"),
        (dict(batch_size=0), "zero_shot.batch_size=0 must be >= 1; use 1 or more"),
        (dict(pool_size=0), "zero_shot.pool_size=0 must be >= 1"),
        (dict(budget=0), r"zero_shot.budget=0 must be null \(the strategy's own\) or >= 1"),
        (dict(workers=0), "zero_shot.workers=0 must be an integer >= 1"),
        (dict(storage=""), "zero_shot.storage='': use null"),
    ],
)
def test_zero_shot_validate(kw, match):
    _fails(ZeroShotConfig(**kw), match)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(num_random=-1), "supernet.num_random=-1 must be >= 0"),
        (dict(smallest=False, num_random=0), "set num_random >= 1 or smallest=true"),
        (dict(pool_size=0), "supernet.pool_size=0 must be >= 1"),
        (dict(search_budget=0), "supernet.search_budget=0 must be >= 1"),
        (dict(teacher="ema"), r"supernet.teacher='ema': choose one of \['inplace', 'frozen'\]"),
        (dict(kd_temperature=0.0), "supernet.kd_temperature=0.0 must be > 0"),
        (dict(kd_alpha=NAN), "supernet.kd_alpha=nan: not a finite number; give a finite value"),
        (dict(kd_alpha=1.5), r"supernet.kd_alpha=1.5 must be in \[0, 1\]"),
        (dict(kd_hidden=-1.0), "supernet.kd_hidden=-1.0 must be >= 0; use 0 .off."),
        (dict(weight_decay=INF), "supernet.weight_decay=inf: not a finite number"),
        (dict(label_smoothing=1.0), r"supernet.label_smoothing=1.0 must be in \[0, 1\)"),
        (dict(optimizer="adam"), r"supernet.optimizer='adam': choose one of \['sgd', 'adamw'\]"),
        (dict(momentum=-0.1), "supernet.momentum=-0.1 must be in"),
        (dict(importance="random"), "supernet.importance='random': choose one of"),
        (dict(importance_samples=0), "supernet.importance_samples=0 must be >= 1"),
        (dict(calib_samples=0), "supernet.calib_samples=0 must be >= 1"),
        (dict(warmup_fraction=1.0), r"supernet.warmup_fraction=1.0 must be in \[0, 1\)"),
        (dict(warmup_fraction=-0.1), "supernet.warmup_fraction=-0.1 must be in"),
        (dict(limit_train_batches=1.5), "supernet.limit_train_batches=1.5: use a fraction"),
        (dict(limit_train_batches=0), "supernet.limit_train_batches=0: use a fraction"),
        (dict(smallest=1), "supernet.smallest=1: use true or false"),
        (dict(pool_within_cap="yes"), "supernet.pool_within_cap='yes': use true or false"),
        (dict(phases=[PhaseConfig(epochs=-1)]), r"supernet.phases\[0\].epochs=-1 must be >= 0"),
        (dict(phases=[PhaseConfig(), PhaseConfig(lr=NAN)]), r"supernet.phases\[1\].lr=nan"),
        (dict(phases=[PhaseConfig(lr=0.0)]), r"supernet.phases\[0\].lr=0.0 must be > 0"),
        (dict(phases=[PhaseConfig(elastic="depth")]), r"phases\[0\].elastic='depth': expected"),
    ],
)
def test_supernet_validate(kw, match):
    _fails(SupernetConfig(**kw), match)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(max_latency_ratio=1.5), r"search.max_latency_ratio=1.5 must be in \(0, 1\] or null"),
        (dict(max_latency_ratio=0.0), "search.max_latency_ratio=0.0 must be in"),
        (dict(max_latency_ratio=NAN), "search.max_latency_ratio=nan: not a finite number"),
        (dict(val_samples=0), "search.val_samples=0 must be >= 1"),
        (dict(calib_samples=0), "search.calib_samples=0 must be >= 1"),
        (dict(seed_with_zero_shot=-1), "search.seed_with_zero_shot=-1 must be >= 0"),
        (dict(budget=0), "search.budget=0 must be null"),
        (dict(workers=0), "search.workers=0 must be an integer >= 1"),
    ],
)
def test_search_validate(kw, match):
    _fails(SearchConfig(**kw), match)
    SearchConfig(max_latency_ratio=None).validate()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(epochs=-1), "final.epochs=-1 must be >= 0"),
        (dict(lr=0.0), "final.lr=0.0 must be > 0"),
        (dict(lr=NAN), "final.lr=nan: not a finite number"),
        (dict(optimizer="adam"), "final.optimizer='adam': choose one of"),
        (dict(momentum=1.0), "final.momentum=1.0 must be in"),
        (dict(weight_decay=-1.0), "final.weight_decay=-1.0 must be >= 0"),
        (dict(label_smoothing=-0.1), "final.label_smoothing=-0.1 must be in"),
        (dict(limit_train_batches=2.5), "final.limit_train_batches=2.5: use a fraction"),
        (dict(warmup_fraction=INF), "final.warmup_fraction=inf: not a finite number"),
        (dict(kd_alpha=-0.5), r"final.kd_alpha=-0.5 must be in \[0, 1\]; use 0 \(off\) up to 1"),
        (dict(kd_temperature=-1.0), "final.kd_temperature=-1.0 must be > 0"),
        (dict(kd_hidden=-1.0), "final.kd_hidden=-1.0 must be >= 0"),
        (dict(kd_teacher="best"), "final.kd_teacher='best': choose one of"),
        (dict(kd_teacher="finetuned", finetune_largest=False), "needs final.finetune_largest"),
        (dict(throughput_batch=0), "final.throughput_batch=0 must be >= 1"),
    ],
)
def test_final_validate(kw, match):
    _fails(FinalConfig(**kw), match)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(choices=["int8"]), r"quantize.choices=\['int8'\]: offer fp32 and int8"),
        (dict(choices=["int4", "fp32"]), "quantize.choices="),
        (dict(estimate="guess"), "quantize.estimate='guess': choose one of"),
        (dict(max_drop=1.0), r"quantize.max_drop=1.0 must be in \[0, 1\)"),
        (dict(max_drop=NAN), "quantize.max_drop=nan: not a finite number"),
        (dict(calib_samples=0), "quantize.calib_samples=0 must be >= 1"),
        (dict(val_samples=0), "quantize.val_samples=0 must be >= 1"),
        (dict(hessian_batch=0), "quantize.hessian_batch=0 must be >= 1"),
        (dict(measure_front=0), "quantize.measure_front=0 must be >= 1"),
        (dict(hessian_samples=1), "quantize.hessian_samples=1 must be >= 2"),
        (dict(calibration="kl"), "quantize.calibration='kl': choose one of"),
        (dict(activations="fp16"), "quantize.activations='fp16': choose one of"),
        (dict(reduce_range="yes"), "quantize.reduce_range='yes': use true or false"),
        (dict(repeats=0), "quantize.repeats=0 must be >= 1"),
        (dict(qat=QatConfig(epochs=-1)), "quantize.qat.epochs=-1 must be >= 0"),
        (dict(qat=QatConfig(assignment="best")), "quantize.qat.assignment='best': choose"),
        (dict(qat=QatConfig(lr=0.0)), "quantize.qat.lr=0.0 must be > 0"),
        (dict(qat=QatConfig(optimizer="adam")), "quantize.qat.optimizer='adam'"),
        (dict(qat=QatConfig(limit_train_batches=0.0)), "quantize.qat.limit_train_batches=0.0"),
        (
            dict(constraints=QuantizeConstraints(size_mb=ConstraintWindow(min=NAN))),
            "quantize.constraints.size_mb.min=nan: not a finite number",
        ),
        (
            dict(constraints=QuantizeConstraints(latency_ms=ConstraintWindow(min=3.0, max=1.0))),
            "quantize.constraints.latency_ms.min=3.0 is above",
        ),
    ],
)
def test_quantize_validate(kw, match):
    _fails(QuantizeConfig(**kw), match)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(accelerator="tpu"), "trainer.accelerator='tpu': choose one of"),
        (dict(logger="wandb"), "trainer.logger='wandb': choose one of"),
        (dict(log_every_n_steps=0), "trainer.log_every_n_steps=0 must be an integer >= 1"),
        (dict(strategy="fsdp"), "trainer.strategy='fsdp': choose one of"),
        (dict(gradient_clip_val=0.0), "trainer.gradient_clip_val=0.0 must be a number > 0"),
        (dict(gradient_clip_val=NAN), "trainer.gradient_clip_val=nan: not a finite number"),
        (dict(num_nodes=0), "trainer.num_nodes=0 must be an integer >= 1"),
        (dict(devices=0), "trainer.devices=0 must be >= 1"),
        (dict(checkpoint_every_n_steps=-1), "trainer.checkpoint_every_n_steps=-1 must be"),
    ],
)
def test_trainer_validate(kw, match):
    _fails(TrainerConfig(**kw), match)
    TrainerConfig(checkpoint_every_n_steps=None, devices="auto").validate()


def test_paths_validate():
    _fails(PathsConfig(data_dir=""), "paths.data_dir='': expected a folder")


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(stages=["final", "zero_shot"]), "must keep the order"),
        (dict(stages=["train"]), "use a non-empty subset of"),
        (dict(stages=[]), "use a non-empty subset of"),
        (dict(threads=0), "threads=0: use auto or an integer >= 1"),
        (dict(threads="many"), "threads='many': use auto"),
        (dict(progress="quiet"), r"progress='quiet': choose one of \['auto', 'bar', 'log'\]"),
        (dict(progress_interval_s=-1), "progress_interval_s=-1 must be >= 0"),
        (dict(progress_interval_s=NAN), "progress_interval_s=nan: not a finite number"),
        (
            dict(constraints=ConstraintsConfig(params_m=ConstraintWindow(max=INF))),
            "constraints.params_m.max=inf: not a finite number",
        ),
        (
            dict(constraints=ConstraintsConfig(flops_m=ConstraintWindow(min=5.0, max=1.0))),
            "constraints.flops_m.min=5.0 is above constraints.flops_m.max=1.0",
        ),
        (dict(constraints=ConstraintsConfig(latency_ms=NAN)), "constraints.latency_ms=nan"),
        (
            dict(
                supernet=SupernetConfig(pool_within_cap=True),
                search=SearchConfig(max_latency_ratio=None),
            ),
            "supernet.pool_within_cap=true needs search.max_latency_ratio",
        ),  # fmt: skip
        (dict(final=FinalConfig(lr=-1.0)), "final.lr=-1.0 must be > 0"),
    ],
)
def test_run_validate(kw, match):
    _fails(RunConfig(**kw), match)
    RunConfig(constraints=ConstraintsConfig(latency_ms=5)).validate()  # a bare max


def test_profile_validate():
    _fails(ProfileConfig(rounds=0), "rounds=0 must be >= 1")
    _fails(ProfileConfig(progress="auto"), "progress='auto': use true or false")


def test_nan_from_the_command_line_is_refused():
    cfg = compose_config(["supernet.kd_alpha=nan", OUT])
    assert math.isnan(cfg.supernet.kd_alpha)
    with pytest.raises(ValueError, match="supernet.kd_alpha=nan: not a finite number"):
        validate_config(cfg)


def _attr(name: str, *modules: str):
    """``name`` from the first of ``modules`` that exists (the app package is moving)."""
    import importlib

    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    pytest.skip(f"none of {modules} defines {name}")


def test_choices_match_the_modules_that_use_them():
    """The schemas keep their own copies of the choice lists (importing Lightning to
    compose a config would be slow); they must stay those the code accepts."""
    from hwnas.app.schema import base, quantize, run, supernet, trainer
    from hwnas.core.progress import MODES
    from hwnas.hardware.constraints import KNOWN_METRICS
    from hwnas.quantize.onnx_quant import ACTIVATION_TYPES, CALIBRATIONS
    from hwnas.quantize.qat import QAT_TARGETS
    from hwnas.training import importance, optim
    from hwnas.training import supernet as training_supernet

    assert supernet.TEACHERS == training_supernet.TEACHERS
    assert supernet.OPTIMIZERS == optim.OPTIMIZERS
    assert supernet.IMPORTANCE == importance.IMPORTANCE
    assert run.PROGRESS == MODES
    assert base.KNOWN_METRICS == KNOWN_METRICS
    for name in ("ACCELERATORS", "LOGGERS", "STRATEGIES"):
        owner = _attr(name, "hwnas.training.settings", "hwnas.training.trainer")
        assert getattr(trainer, name) == owner, name
    assert quantize.CALIBRATIONS == CALIBRATIONS
    assert quantize.ACTIVATION_TYPES == ACTIVATION_TYPES
    assert quantize.QAT_TARGETS == QAT_TARGETS
    assert quantize.ESTIMATES == _attr(
        "ESTIMATES", "hwnas.app.stages.quantize", "hwnas.app.quantize_stage"
    )
    from hwnas.app import checks

    assert checks.STAGES is run.STAGES  # one home: the schema
