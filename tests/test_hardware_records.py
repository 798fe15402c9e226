"""Latency records: fingerprinted caches, explicit tables from elsewhere, file errors a
user can act on, and a run's record reproducing its latencies."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from hwnas.domains.image.models import cnn as cnn_module
from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.hardware import analytic as analytic_module
from hwnas.hardware import factory
from hwnas.hardware.base import CostModel
from hwnas.hardware.factory import (
    HardwareConfig,
    build_cost_model,
    flops_cache_name,
    table_cache_name,
)
from hwnas.hardware.flops import FlopsLine
from hwnas.hardware.records import MEASURED_NAME, RECORD_NAME
from hwnas.hardware.table import LatencyTable
from tests.conftest import CONF, FAST, TINY

LOG = "hwnas.hardware.factory"


@pytest.fixture(scope="module")
def model() -> ElasticCNN:
    torch.manual_seed(0)
    return ElasticCNN(**TINY)


@pytest.fixture(scope="module")
def table(model: ElasticCNN) -> LatencyTable:
    return LatencyTable.build(model, correction_samples=4, rounds=1, **FAST)


@pytest.fixture(scope="module")
def line(model: ElasticCNN) -> FlopsLine:
    return FlopsLine.build(model, correction_samples=3, **FAST)


@pytest.fixture
def builds(monkeypatch, table, line) -> list[str]:
    """Count table builds and line fits of the factory (each returns the fixture's)."""
    calls: list[str] = []
    monkeypatch.setattr(factory, "build_table", lambda *a, **k: calls.append("table") or table)
    monkeypatch.setattr(factory, "build_flops_line", lambda *a, **k: calls.append("line") or line)
    return calls


def _hw(**over) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(CONF / "hardware" / "cpu.yaml")),
            "warmup": 1, "repeats": 3, "correction_samples": 4, **over}  # fmt: skip


def _archs(model: ElasticCNN, n: int = 6) -> list:
    rng = random.Random(7)
    return [model.space.min_arch(), model.space.max_arch()] + [
        model.space.sample(rng) for _ in range(n)
    ]


def _edit(path: Path, **meta) -> None:
    blob = json.loads(path.read_text())
    blob["meta"].update(meta)
    path.write_text(json.dumps(blob))


# ------------------------------------------------------------ fingerprinted caches
@pytest.mark.parametrize(
    ("key", "value"),
    [("device_name", "Some Other CPU (64 logical cores)"), ("threads", 4),
     ("torch_version", "1.0.0"), ("onnxruntime_version", "0.0.0")],
)  # fmt: skip
@pytest.mark.parametrize("method", ["table", "flops"])
def test_cache_from_another_setup_is_rebuilt(model, builds, tmp_path, caplog, method, key, value):
    hw = _hw(latency=method)
    build_cost_model(hw, model, tmp_path)
    config = HardwareConfig.from_mapping(hw)
    name = table_cache_name if method == "table" else flops_cache_name
    path = tmp_path / name(model, config)
    assert len(builds) == 1 and path.is_file()
    build_cost_model(hw, model, tmp_path)
    assert len(builds) == 1  # same setup: reused
    _edit(path, **{key: value})
    with caplog.at_level(logging.WARNING, logger=LOG):
        build_cost_model(hw, model, tmp_path)
    assert len(builds) == 2  # measured elsewhere: rebuilt, not reused
    assert any(key in r.message and "rebuilding" in r.message for r in caplog.records)
    assert json.loads(path.read_text())["meta"][key] != value


def test_unreadable_or_old_cache_is_rebuilt(model, builds, tmp_path, caplog) -> None:
    hw = _hw(latency="flops")
    path = tmp_path / flops_cache_name(model, HardwareConfig.from_mapping(hw))
    path.write_text(json.dumps({"kind": "affine", "scale": 8.58, "offset": 0.1}))  # old format
    with caplog.at_level(logging.WARNING, logger=LOG):
        cost = build_cost_model(hw, model, tmp_path)
    assert builds == ["line"] and "8.58" not in cost.describe()
    assert any("rebuilding" in r.message for r in caplog.records)


def test_table_records_the_fingerprint(table) -> None:
    fp = table.fingerprint()
    assert fp["threads"] == 1 and fp["batch_size"] == 1 and fp["backend"] == "torch"
    assert fp["torch_version"] == torch.__version__ and fp["device_name"]


# ------------------------------------------------------- explicit table from elsewhere
def test_explicit_table_from_another_machine_is_used_as_given(model, table, tmp_path, caplog):
    path = table.save(tmp_path / "t.json")
    _edit(path, device_name="Target Board CPU", torch_version="0.0.1")
    with caplog.at_level(logging.INFO, logger=LOG):
        cost = build_cost_model(_hw(latency="table", table=str(path)), model)
    arch = model.space.max_arch()
    assert cost(arch)["latency_ms"] == table.predict(model, arch)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("Target Board CPU" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("over", "recorded", "named"),
    [({"threads": 4}, 1, ("threads=1", "hardware.threads=4")),
     ({"batch_size": 8}, 1, ("batch_size=1", "hardware.batch_size=8")),
     ({"backend": "onnxruntime"}, "torch", ("backend=torch", "hardware.backend=onnxruntime"))],
)  # fmt: skip
def test_explicit_table_with_another_setting_warns(model, table, tmp_path, caplog, over, recorded,
                                                   named) -> None:  # fmt: skip
    path = table.save(tmp_path / "t.json")
    with caplog.at_level(logging.WARNING, logger=LOG):
        build_cost_model(_hw(latency="table", table=str(path), **over), model)
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert all(text in warnings[0] for text in named), warnings[0]


# ------------------------------------------------------------ errors a user can act on
GOOD = {"format": "hwnas.latency_table/1"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("garbage, not JSON", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not"),
        ("[1, 2]", "holds a JSON list"),
        (json.dumps({"format": "something/else"}), "is not a latency table"),
        (json.dumps({**GOOD, "units": {}}), "no 'meta'"),
        ("META_NO_UNITS", "no 'units'"),
        ("META_BAD_UNIT", "numeric 'median_ms'"),
        ("META_NO_CORRECTION", "no 'correction'"),
        ("META_BAD_CORRECTION", "malformed 'correction'"),
    ],
)
def test_bad_table_file_is_one_line_naming_file_and_fix(model, table, tmp_path, content, problem):
    path = tmp_path / "bad.json"
    if isinstance(content, str) and content.startswith("META_"):
        blob = json.loads(json.dumps(table.to_json()))  # a copy: the fixture stays intact
        if content == "META_NO_UNITS":
            del blob["units"]
        elif content == "META_BAD_UNIT":
            blob["units"][next(iter(blob["units"]))] = {"ms": 1.0}
        elif content == "META_NO_CORRECTION":
            del blob["correction"]
        else:
            blob["correction"]["slope"] = 2.0
        content = json.dumps(blob)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as err:
        build_cost_model(_hw(latency="table", table=str(path)), model)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and problem in text, text
    assert "python -m hwnas.profile" in text and "hardware.table=null" in text


def test_missing_table_file_names_file_and_fix(model, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        build_cost_model(_hw(latency="table", table="nowhere.json"), model)
    text = str(err.value)
    assert "\n" not in text and str(Path.cwd() / "nowhere.json") in text
    assert "python -m hwnas.profile" in text


def test_record_of_the_other_kind_says_which_latency_it_is_for(model, table, line, tmp_path):
    t, f = table.save(tmp_path / "t.json"), line.save(tmp_path / "f.json")
    with pytest.raises(ValueError, match="use it with hardware.latency=flops"):
        build_cost_model(_hw(latency="table", table=str(f)), model)
    with pytest.raises(ValueError, match="use it with hardware.latency=table"):
        build_cost_model(_hw(latency="flops", table=str(t)), model)


# ------------------------------------------------------------------- run records
@pytest.mark.parametrize("method", ["table", "flops"])
def test_recorded_latency_reproduces_predictions(model, tmp_path, monkeypatch, method) -> None:
    first = build_cost_model(_hw(latency=method, correction_samples=3), model, tmp_path / "a")
    record = first.save_record(tmp_path / "run")
    assert record == tmp_path / "run" / RECORD_NAME and record.is_file()

    def no_timing(*args, **kwargs):
        raise AssertionError("a recorded latency model must not measure anything")

    for mod in ("hwnas.hardware.table", "hwnas.hardware.flops"):
        monkeypatch.setattr(f"{mod}.measure_latency", no_timing)
    # another cache (another working directory) and other sample counts: same numbers
    again = build_cost_model(
        _hw(latency=method, table=str(record), correction_samples=0), model, tmp_path / "b"
    )
    for arch in _archs(model):
        assert again(arch)["latency_ms"] == first(arch)["latency_ms"]
    assert again.describe() == first.describe()
    assert not (tmp_path / "b").exists()


def test_nothing_to_record_without_a_latency_model(model, tmp_path) -> None:
    none = build_cost_model(_hw(latency="flops", correction_samples=0), model)
    assert none.save_record(tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_recorded_line_is_refused_for_another_space(model, line, tmp_path) -> None:
    path = line.save(tmp_path / RECORD_NAME)
    other = ElasticCNN(**{**TINY, "kernel_choices": (3, 5)})
    with pytest.raises(ValueError, match="hardware.table=null"):
        build_cost_model(_hw(latency="flops", table=str(path)), other)


def test_measured_latency_records_what_it_timed_and_replays_it(model, tmp_path, caplog):
    measured = build_cost_model(_hw(latency="measured", **FAST), model)
    archs = [model.space.min_arch(), model.space.max_arch()]
    timed = [measured(a)["latency_ms"] for a in archs]
    path = measured.save_record(tmp_path)
    assert path == tmp_path / MEASURED_NAME
    blob = json.loads(path.read_text())
    assert blob["format"] == "hwnas.measured_latency/1" and len(blob["latencies"]) == 2
    replay = build_cost_model(_hw(latency="measured", table=str(path), **FAST), model)
    assert [replay(a)["latency_ms"] for a in archs] == timed  # bit for bit, nothing timed
    assert replay.latency.replayed == 2 and replay.latency.timed == 0
    other = model.space.sample(random.Random(3))
    while other in archs:
        other = model.space.sample(random.Random(other.to_str()))
    with caplog.at_level(logging.WARNING):
        assert replay(other)["latency_ms"] > 0  # not in the record: timed, and said so
    assert "not in the measured-latency record" in caplog.text and replay.latency.timed == 1
    (tmp_path / "again").mkdir()
    again = json.loads(replay.save_record(tmp_path / "again").read_text())
    assert len(again["latencies"]) == 3  # the replayed and the newly timed
    assert (again["meta"]["replayed"], again["meta"]["timed"]) == (2, 1)
    # a resumed run that looks nothing up (its stages are done) keeps the whole record
    idle = build_cost_model(_hw(latency="measured", table=str(path), **FAST), model)
    (tmp_path / "idle").mkdir()
    kept = json.loads(idle.save_record(tmp_path / "idle").read_text())
    assert kept["latencies"] == blob["latencies"]


def test_a_measured_record_is_refused_for_another_space_or_method(model, table, tmp_path):
    measured = build_cost_model(_hw(latency="measured", **FAST), model)
    measured(model.space.min_arch())
    path = measured.save_record(tmp_path)
    other = ElasticCNN(**{**TINY, "kernel_choices": (3, 5)})
    with pytest.raises(ValueError, match="hardware.table=null"):
        build_cost_model(_hw(latency="measured", table=str(path)), other)
    with pytest.raises(ValueError, match="use it with hardware.latency=measured"):
        build_cost_model(_hw(latency="table", table=str(path)), model)
    tables = table.save(tmp_path / RECORD_NAME)
    with pytest.raises(ValueError, match="use it with hardware.latency=table"):
        build_cost_model(_hw(latency="measured", table=str(tables)), model)
    blob = json.loads(path.read_text())
    blob["latencies"][0]["latency_ms"] = "fast"
    path.write_text(json.dumps(blob))
    with pytest.raises(ValueError, match="entry 0 has latency_ms='fast'"):
        build_cost_model(_hw(latency="measured", table=str(path)), model)


# --------------------------------------------------------------- shared helpers
def test_conv_out_size_is_one_function_matching_torch() -> None:
    assert not hasattr(analytic_module, "conv_out_size")  # the CNN's own helper
    assert not hasattr(cnn_module, "_out_size")
    for size in range(1, 20):
        for stride in (1, 2, 3):
            for k in (1, 3, 5, 7):
                conv = nn.Conv2d(1, 1, k, stride, padding=k // 2)
                out = conv(torch.zeros(1, 1, size, size)).shape[-1]
                assert cnn_module.conv_out_size(size, stride, k) == out, (size, stride, k)


def test_cost_model_has_no_unused_batch_api() -> None:
    assert not hasattr(CostModel, "many")  # removed: a plain list comprehension does it
