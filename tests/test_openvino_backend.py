"""OpenVINO as a latency backend (``hardware=openvino``): its session gives ONNX
Runtime's and torch's outputs, ``measure_latency`` and the cost model time subnets
with it, records fingerprint its version, and a missing OpenVINO is one line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from hwnas.app.config import compose_config
from hwnas.app.pipeline import run
from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.hardware import build_cost_model, openvino
from hwnas.hardware.factory import HardwareConfig, table_cache_name
from hwnas.hardware.latency import BACKENDS, LatencyStats, MeasuredLatency, measure_latency
from hwnas.hardware.openvino import OvSession, ov_session
from hwnas.hardware.records import FINGERPRINT_KEYS, fingerprint, fingerprint_changes
from hwnas.hardware.sessions import input_names, onnx_session, ort_session
from hwnas.hardware.table import LatencyTable
from tests.conftest import CONF, FAST, TINY

pytest.importorskip("openvino")

SRC = Path(__file__).resolve().parents[1] / "src"
MISSING = "hardware.backend=openvino: OpenVINO is not installed; "


@pytest.fixture(scope="module")
def model() -> ElasticCNN:
    torch.manual_seed(0)
    return ElasticCNN(**TINY)


@pytest.fixture
def no_openvino(monkeypatch) -> None:
    monkeypatch.setattr(openvino, "openvino_version", lambda: None)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TinyTokens(nn.Module):
    """Token ids (int64) and a float mask: an embedding model's inputs."""

    def __init__(self):
        super().__init__()
        self.embed, self.out = nn.Embedding(30, 8), nn.Linear(8, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) * mask.unsqueeze(-1)
        return self.out(h.sum(1) / mask.sum(1, keepdim=True))


def _export(net: nn.Module, xs: tuple, path: Path) -> Path:
    names = input_names(xs)
    torch.onnx.export(net.eval(), xs, str(path), input_names=names, output_names=["y"],
                      dynamic_axes={n: {0: "batch"} for n in names}, opset_version=17,
                      dynamo=False)  # fmt: skip
    return path


def _hw(**over) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "hardware" / "openvino.yaml"))
    return {**cfg, "warmup": 1, "repeats": 3, **over}


# ------------------------------------------------------------------ the session
def test_session_matches_onnxruntime_and_torch(tmp_path) -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.body[1].running_mean.uniform_(-0.5, 0.5)
        net.body[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, 12, 12)
    path = _export(net, (x,), tmp_path / "cnn.onnx")
    ov, ort = ov_session(path, threads=1), ort_session(path, threads=1)
    assert isinstance(ov, OvSession)
    with torch.no_grad():
        expected = net(x).numpy()
    for batch in (x, x[:1]):  # the exported batch and another (dynamic batch)
        (got,) = ov.run(None, {"x": batch.numpy()})
        (ref,) = ort.run(None, {"x": batch.numpy()})
        assert got.shape == ref.shape == (len(batch), 5) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, expected[: len(batch)], rtol=1e-4, atol=1e-5)
    (inp,) = ov.get_inputs()
    ref_inp = ort.get_inputs()[0]
    assert (inp.name, inp.type) == (ref_inp.name, ref_inp.type) == ("x", "tensor(float)")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 12, 12]
    with pytest.raises(ValueError, match="pass None"):
        ov.run(["y"], {"x": x.numpy()})


def test_session_takes_int64_token_inputs(tmp_path) -> None:
    torch.manual_seed(1)
    net = TinyTokens().eval()
    ids, mask = torch.randint(0, 30, (2, 7)), torch.ones(2, 7)
    mask[1, 4:] = 0
    path = _export(net, (ids, mask), tmp_path / "tokens.onnx")
    ov = ov_session(path)
    assert [(i.name, i.type) for i in ov.get_inputs()] == [
        ("x0", "tensor(int64)"), ("x1", "tensor(float)")]  # fmt: skip
    (got,) = ov.run(None, {"x0": ids.numpy(), "x1": mask.numpy()})
    (ref,) = ort_session(path).run(None, {"x0": ids.numpy(), "x1": mask.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, net(ids, mask).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_onnx_session_opens_the_backend_asked_for() -> None:
    net, xs = TinyCNN().eval(), (torch.randn(1, 3, 8, 8),)
    assert isinstance(onnx_session(net, xs, "cpu", 1, backend="openvino"), OvSession)
    assert not isinstance(onnx_session(net, xs, "cpu", 1), OvSession)  # onnxruntime
    with pytest.raises(ValueError, match="no ONNX session for backend 'torch'"):
        onnx_session(net, xs, "cpu", 1, backend="torch")


# ------------------------------------------------------------------ timing
def test_measure_latency_with_openvino(model) -> None:
    assert "openvino" in BACKENDS
    sub = model.export(model.space.min_arch()).train()
    before = torch.get_num_threads()
    stats = measure_latency(sub, model.input_shape, batch_size=2, backend="openvino", **FAST)
    assert isinstance(stats, LatencyStats) and sub.training
    assert (stats.backend, stats.threads, stats.batch_size, stats.repeats) == ("openvino", 1, 2, 3)
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert "cpu, openvino, 1 thread, batch 2" in stats.describe()
    assert torch.get_num_threads() == before


def test_measure_latency_with_openvino_on_token_inputs() -> None:
    def tokens(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return torch.randint(0, 30, (batch, 6), generator=gen), torch.ones(batch, 6)

    stats = measure_latency(TinyTokens(), tokens, backend="openvino", **FAST)
    assert stats.backend == "openvino" and stats.median_ms > 0


def test_openvino_times_on_the_cpu_only(model) -> None:
    sub = model.export(model.space.min_arch())
    with pytest.raises(ValueError, match="cpu only") as err:
        measure_latency(sub, model.input_shape, device="cuda", backend="openvino", **FAST)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="hardware.backend='openvino' times on the cpu only"):
        HardwareConfig.from_mapping(_hw(device="cuda"))
    with pytest.raises(ValueError, match="not 'cuda'"):
        ov_session("unused.onnx", device="cuda")


def test_hardware_openvino_cost_model_measures_subnets(model, tmp_path) -> None:
    cost = build_cost_model(_hw(), model, tmp_path / "cache")
    assert cost.hw.name == "openvino" and cost.hw.backend == "openvino"
    assert isinstance(cost.latency, MeasuredLatency)
    assert "latency: measured (cpu, openvino, 1 thread, batch 1" in cost.describe()
    small, large = model.space.min_arch(), model.space.max_arch()
    costs = {a: cost(a) for a in (small, large)}
    assert all(c["latency_ms"] > 0 and c["params_m"] > 0 for c in costs.values())
    assert {s.backend for s in cost.latency.stats.values()} == {"openvino"}
    record = json.loads(cost.save_record(tmp_path / "run").read_text())
    assert record["meta"]["backend"] == "openvino" and record["meta"]["timed"] == 2
    assert record["meta"]["openvino_version"] == openvino.openvino_version()
    replay = build_cost_model(_hw(table=str(tmp_path / "run" / "measured_latency.json")), model)
    assert replay(large)["latency_ms"] == costs[large]["latency_ms"]  # replayed, as recorded


def test_hardware_openvino_builds_a_latency_table(model, tmp_path) -> None:
    hw = _hw(latency="table", correction_samples=3)
    cost = build_cost_model(hw, model, tmp_path)
    path = tmp_path / table_cache_name(model, HardwareConfig.from_mapping(hw))
    assert "-openvino-" in path.name and path.is_file()
    table = LatencyTable.load(path, model)
    assert table.meta["backend"] == "openvino" and table.meta["openvino_version"]
    assert cost(model.space.max_arch())["latency_ms"] > 0
    assert "openvino" in table.setting()


# ------------------------------------------------------------------ records
def test_fingerprint_records_the_openvino_version() -> None:
    assert "openvino_version" in FINGERPRINT_KEYS
    fp = fingerprint("cpu", "openvino", 1, 1)
    assert fp["openvino_version"] == openvino.openvino_version() is not None
    assert fp["backend"] == "openvino" and fp["onnxruntime_version"]


def test_a_record_without_the_openvino_version_still_matches_other_backends() -> None:
    for backend in ("torch", "onnxruntime"):
        now = fingerprint("cpu", backend, 1, 1)
        old = {k: v for k, v in now.items() if k != "openvino_version"}
        assert fingerprint_changes(old, now) == []
        assert fingerprint_changes({**now, "openvino_version": "2020.1"}, now) == [
            f"openvino_version: '2020.1' recorded, {now['openvino_version']!r} now"
        ]
    now = fingerprint("cpu", "openvino", 1, 1)
    old = {k: v for k, v in now.items() if k != "openvino_version"}
    (change,) = fingerprint_changes(old, now)
    assert change.startswith("openvino_version: 'not recorded' recorded")


def test_old_cached_table_without_the_version_is_reused(model, tmp_path, caplog) -> None:
    cpu = {**_hw(name="cpu", backend="torch", latency="flops"), "correction_samples": 2}
    build_cost_model(cpu, model, tmp_path)
    (path,) = tmp_path.glob("flops_latency-*.json")
    blob = json.loads(path.read_text())
    del blob["meta"]["openvino_version"]  # written before the version was recorded
    path.write_text(json.dumps(blob))
    with caplog.at_level(logging.WARNING, logger="hwnas.hardware.factory"):
        build_cost_model(cpu, model, tmp_path)
    assert "rebuilding" not in caplog.text
    assert "openvino_version" not in json.loads(path.read_text())["meta"]  # not rewritten


# ------------------------------------------------------------------ no OpenVINO
def test_missing_openvino_is_one_line_naming_the_key(model, no_openvino) -> None:
    with pytest.raises(ValueError) as err:
        build_cost_model(_hw(), model)
    text = str(err.value)
    assert text.startswith(MISSING) and "\n" not in text, text
    assert "pip install 'hwnas[openvino]'" in text and "hardware.backend=onnxruntime" in text
    sub = model.export(model.space.min_arch())
    with pytest.raises(ValueError, match="^backend=openvino: OpenVINO is not installed"):
        measure_latency(sub, model.input_shape, backend="openvino", **FAST)
    assert fingerprint("cpu", "torch", 1, 1)["openvino_version"] is None


def test_a_recorded_openvino_table_needs_no_openvino(model, tmp_path, monkeypatch) -> None:
    table = LatencyTable.build(model, backend="openvino", correction_samples=0, rounds=1, **FAST)
    path = table.save(tmp_path / "t.json")
    monkeypatch.setattr(openvino, "openvino_version", lambda: None)
    cost = build_cost_model(_hw(latency="table", table=str(path)), model)
    arch = model.space.max_arch()
    assert cost(arch)["latency_ms"] == table.predict(model, arch)


def test_a_run_with_hardware_openvino_without_it_is_refused(tmp_path, no_openvino) -> None:
    out = tmp_path / "run"
    cfg = compose_config(["experiment=synthetic_tiny", "threads=1", "final.onnx=false",
                          "hardware=openvino", f"paths.output_dir={out}",
                          f"paths.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    assert cfg.hardware.name == "openvino" and cfg.hardware.latency == "measured"
    with pytest.raises(ValueError) as err:
        run(cfg)
    assert str(err.value).startswith(MISSING) and "\n" not in str(err.value)
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------ the command line
@pytest.mark.slow
def test_tiny_pipeline_with_hardware_openvino(tmp_path) -> None:
    """``python -m hwnas hardware=openvino`` (test_reproduce's onnxruntime run): every
    arch the searches looked at is timed whole with OpenVINO and recorded."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "hwnas", "experiment=synthetic_tiny", "threads=1",
           "final.onnx=false", "hardware=openvino", "search.max_latency_ratio=null",
           "hardware.warmup=0", "hardware.repeats=1", f"hydra.run.dir={out}",
           f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "latency_table.json").exists()
    record = json.loads((out / "measured_latency.json").read_text())
    n = len(record["latencies"])
    assert n >= 10 and record["meta"]["timed"] == n
    assert record["meta"]["backend"] == "openvino" and record["meta"]["openvino_version"]
    log = (out / "hwnas.log").read_text()
    assert "latency: measured (cpu, openvino, 1 thread, batch 1" in log
