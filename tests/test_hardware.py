"""Hardware cost models: analytic costs, measured latency, lookup tables, factory, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from hwnas.app.profile import run_profile
from hwnas.domains.image.models.cnn import ElasticCNN, cnn_peak_elements
from hwnas.hardware.analytic import (
    AnalyticCost,
    covering_archs,
    traced_peak_elements,
    unit_keys,
)
from hwnas.hardware.factory import HardwareConfig, build_cost_model, table_cache_name
from hwnas.hardware.latency import MeasuredLatency, measure_latency
from hwnas.hardware.table import LatencyTable, TableLatency, fit_correction
from tests.conftest import CONF, FAST, TINY


@pytest.fixture(scope="module")
def model() -> ElasticCNN:
    torch.manual_seed(0)
    return ElasticCNN(**TINY)


@pytest.fixture(scope="module")
def table(model: ElasticCNN) -> LatencyTable:
    return LatencyTable.build(model, correction_samples=5, rounds=1, **FAST)


def _archs(model: ElasticCNN, n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [model.space.min_arch(), model.space.max_arch()] + [
        model.space.sample(rng) for _ in range(n)
    ]


def test_analytic_costs_are_monotone_in_every_choice(model: ElasticCNN) -> None:
    cost = AnalyticCost(model, batch_size=2)
    checked = 0
    for arch in _archs(model, 15):
        base = cost(arch)
        for gene in model.space.genes:
            i = gene.choices.index(arch[gene.name])
            for bigger in gene.choices[i + 1 :]:
                grown = cost(model.space.canonical(arch.replace(**{gene.name: bigger})))
                for key in ("params_m", "flops_m", "memory_mb"):
                    assert grown[key] >= base[key] - 1e-12, (gene.name, bigger, key)
                checked += 1
    assert checked > 100
    small, large = cost(model.space.min_arch()), cost(model.space.max_arch())
    assert all(large[k] > small[k] for k in ("params_m", "flops_m", "memory_mb"))


def test_flops_match_flop_counter(model: ElasticCNN) -> None:
    cost = AnalyticCost(model)
    for arch in _archs(model, 4, seed=1):
        sub = model.export(arch).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            sub(torch.randn(1, *model.input_shape))
        assert counter.get_total_flops() == round(cost(arch)["flops_m"] * 1e6)
        params = sum(p.numel() for p in sub.parameters())
        assert params == round(cost(arch)["params_m"] * 1e6)


def test_memory_estimate_scales_with_batch_and_bounds_the_layer_trace(model: ElasticCNN) -> None:
    one, four = AnalyticCost(model, 1), AnalyticCost(model, 4)
    for arch in _archs(model, 4, seed=2):
        assert four(arch)["memory_mb"] == pytest.approx(4 * one(arch)["memory_mb"])
        estimate = cnn_peak_elements(model, arch)
        traced = traced_peak_elements(model.export(arch), model.input_shape)
        # the estimate also counts the live block input, so it bounds the leaf trace
        assert traced <= estimate <= 2 * traced


def test_measure_latency_torch_restores_threads_and_mode(model: ElasticCNN) -> None:
    sub = model.export(model.space.max_arch()).train()
    before = torch.get_num_threads()
    stats = measure_latency(sub, model.input_shape, batch_size=2, **FAST)
    assert torch.get_num_threads() == before and sub.training
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert (stats.threads, stats.batch_size, stats.backend, stats.repeats) == (1, 2, "torch", 3)
    assert stats.device == "cpu" and "cpu" in stats.describe()


def test_measure_latency_onnxruntime(model: ElasticCNN) -> None:
    sub = model.export(model.space.min_arch())
    stats = measure_latency(sub, model.input_shape, backend="onnxruntime", **FAST)
    assert stats.backend == "onnxruntime" and stats.median_ms > 0 and stats.threads == 1


def test_measure_latency_rejects_bad_settings(model: ElasticCNN) -> None:
    sub = model.export(model.space.min_arch())
    with pytest.raises(ValueError, match="backend 'tvm'"):
        measure_latency(sub, model.input_shape, backend="tvm")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        measure_latency(sub, model.input_shape, threads=0)


def test_measured_latency_is_cached(model: ElasticCNN, monkeypatch) -> None:
    cost = MeasuredLatency(model, **FAST)
    exports = []
    original = model.export
    monkeypatch.setattr(model, "export", lambda arch: exports.append(arch) or original(arch))
    arch = model.space.max_arch()
    first, second = cost(arch), cost(arch)
    assert first == second and first["latency_ms"] > 0
    assert len(exports) == 1 and list(cost.stats) == [arch]
    assert "measured (cpu, torch eager, 1 thread, batch 1" in cost.describe()


def test_table_covers_every_unit_and_round_trips(model, table, tmp_path: Path) -> None:
    n_blocks = sum(len(stage) for stage in model.stages)
    kinds = len(model.space.gene("k0_0").choices) * len(model.space.gene("e0_0").choices)
    assert len(table.units) == 2 + n_blocks * kinds  # stem + head + every block kind
    assert len(covering_archs(model.space)) <= 2 * kinds
    path = table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(path, model)
    assert loaded.units == table.units and loaded.correction == table.correction
    blob = json.loads(path.read_text())
    for key in ("space_id", "space_name", "device", "device_name", "torch_version",
                "onnxruntime_version", "threads", "batch_size", "backend", "date", "warmup",
                "repeats"):  # fmt: skip
        assert key in blob["meta"], key
    assert blob["meta"]["threads"] == 1 and blob["meta"]["space_id"] == model.space.id
    for arch in _archs(model, 10, seed=3):
        assert loaded.predict(model, arch) == pytest.approx(table.predict(model, arch))
        assert loaded.predict(model, arch) > 0


def test_fast_unit_keys_match_latency_units(model: ElasticCNN) -> None:
    for arch in _archs(model, 12, seed=5):
        assert unit_keys(model, arch) == [k for k, _, _ in model.latency_units(arch)]


def test_foreign_space_table_is_refused(model, table, tmp_path: Path) -> None:
    other = ElasticCNN(**{**TINY, "kernel_choices": (3, 5)})
    path = table.save(tmp_path / "t.json")
    for make in (lambda: TableLatency(other, table), lambda: LatencyTable.load(path, other)):
        with pytest.raises(ValueError) as err:
            make()
        text = str(err.value)
        assert model.space.id in text and other.space.id in text
        assert "python -m hwnas.profile" in text


def test_table_for_other_layer_sizes_is_refused(model, table) -> None:
    wider = ElasticCNN(**{**TINY, "stage_channels": (8, 24)})
    assert wider.space.id != model.space.id  # the id covers the layer sizes too
    with pytest.raises(ValueError, match="hwnas.profile"):
        TableLatency(wider, table)
    assert TableLatency(ElasticCNN(**TINY), table)(model.space.min_arch())["latency_ms"] > 0


def test_fit_correction_recovers_a_line() -> None:
    sums = torch.linspace(1.0, 5.0, 8).double().numpy()
    units = (sums * 2).round()
    fit = fit_correction(sums, units, 1.3 * sums + 0.2)
    assert fit.kind in ("affine", "per_unit") and fit.loo_mape < 1e-6
    assert fit.apply(3.0, 6) == pytest.approx(1.3 * 3.0 + 0.2)


def _hw(**over) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(CONF / "hardware" / "cpu.yaml")),
            "warmup": 1, "repeats": 3, "correction_samples": 4, **over}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "words"),
    [("measured", "measured"), ("table", "lookup table"), ("flops", "FLOPs-linear")],
)
def test_factory_builds_every_latency_method(model, method, words, tmp_path: Path) -> None:
    cost = build_cost_model(_hw(latency=method), model, tmp_path)
    costs = cost(model.space.max_arch())
    assert set(costs) == {"params_m", "flops_m", "memory_mb", "latency_ms"}
    assert costs["latency_ms"] > 0
    text = cost.describe()
    assert words in text and "cpu, torch eager, 1 thread, batch 1" in text
    cached = list(tmp_path.glob("latency_table-*.json"))
    assert len(cached) == (1 if method == "table" else 0)


def test_factory_reuses_the_cached_table(model, tmp_path: Path) -> None:
    hw = _hw(latency="table")
    first = build_cost_model(hw, model, tmp_path)
    path = tmp_path / table_cache_name(model, HardwareConfig.from_mapping(hw))
    stamp = path.stat().st_mtime_ns
    second = build_cost_model(hw, model, tmp_path)
    assert path.stat().st_mtime_ns == stamp
    arch = model.space.sample(random.Random(4))
    assert second(arch)["latency_ms"] == pytest.approx(first(arch)["latency_ms"])
    given = build_cost_model(_hw(latency="table", table=str(path)), model, None)
    assert given(arch)["latency_ms"] == pytest.approx(first(arch)["latency_ms"])


def test_factory_flops_without_samples_omits_latency(model) -> None:
    cost = build_cost_model(_hw(latency="flops", correction_samples=0), model)
    assert "latency_ms" not in cost(model.space.min_arch())
    assert "not estimated" in cost.describe()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"thread": 2}, "unknown hardware config keys \\['thread'\\]"),
        ({"latency": "guess"}, "hardware.latency='guess'"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"batch_size": "4"}, "hardware.batch_size must be an integer"),
        ({"repeats": None}, "hardware.repeats must be an integer"),
        ({"latency": "table", "correction_samples": 2}, "correction_samples must be 0"),
    ],
)
def test_factory_rejects_bad_config(model, over, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_cost_model(_hw(**over), model)


def test_missing_table_file_names_the_fix(model, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m hwnas.profile"):
        build_cost_model(_hw(latency="table", table=str(tmp_path / "none.json")), model)


@pytest.mark.parametrize("name", ["cpu", "cuda", "onnxruntime", "openvino", "analytic"])
def test_hardware_yaml_files_validate(name: str) -> None:
    cfg = OmegaConf.load(CONF / "hardware" / f"{name}.yaml")
    assert set(cfg) == {f for f in HardwareConfig.__dataclass_fields__}
    if cfg.device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            HardwareConfig.from_mapping(cfg)
    else:
        assert HardwareConfig.from_mapping(cfg).name == name


def test_profile_cli_writes_a_table(model, tmp_path: Path, capsys) -> None:
    overrides = [
        "data=synthetic", "data.shape=[1,16,16]", "model.stem_channels=8",
        "model.stage_channels=[8,16]", "model.stage_strides=[2,2]", "model.max_depth=[2,2]",
        "model.depth_choices=[1,2]", "model.stem_stride=1",
        "model.expand_choices=[2,4,6]", "hardware.warmup=1", "hardware.repeats=3",
        "hardware.correction_samples=4", "rounds=1", "progress=false",
        f"output={tmp_path / 'table.json'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("profile", overrides=overrides)
    figures = run_profile(cfg)
    table = LatencyTable.load(tmp_path / "table.json", model)
    assert figures["units"] == len(table.units) > 10
    hw = HardwareConfig.from_mapping({**_hw(), "correction_samples": 4})
    assert (tmp_path / "cache" / table_cache_name(model, hw)).is_file()
    out = capsys.readouterr().out
    assert "elastic_cnn" in out and "leave-one-out MAPE" in out


def test_timing_settings_have_one_home():
    """The six timing settings and their defaults live in core's Timing; the hardware
    config extends it and the timing functions default to it."""
    import inspect

    from hwnas.core.types import Timing
    from hwnas.hardware.factory import HardwareConfig
    from hwnas.quantize.ort_runtime import time_onnx

    assert issubclass(HardwareConfig, Timing)
    hw = HardwareConfig.from_mapping({"warmup": 2, "repeats": 3, "threads": 1})
    assert hw.measure_kwargs() == Timing("cpu", "torch", 1, 1, 2, 3).kwargs()
    for fn in (measure_latency, time_onnx):
        params = inspect.signature(fn).parameters
        assert params["warmup"].default == Timing.warmup
        assert params["repeats"].default == Timing.repeats
