"""The whole pipeline on synthetic data with tiny settings, in-process and via the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwnas.hardware.constraints import InfeasibleError
from hwnas.pipeline import ConfigError, run
from hwnas.subnet_io import load_subnet
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=synthetic_tiny"]


def _run(out: Path, *overrides: str) -> dict[str, float]:
    return run(compose_config([*TINY, f"paths.output_dir={out}",
                               f"paths.cache_dir={out.parent / 'cache'}", *overrides]))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe") / "run"
    return out, _run(out)


def test_all_stages_write_their_artifacts(full_run):
    out, metrics = full_run
    for rel in ["hwnas_config.yaml", "metrics.json",
                "zero_shot/history.csv", "zero_shot/pareto.csv", "zero_shot/pareto.png",
                "zero_shot/pool.json", "supernet/supernet.pt", "supernet/phase1_kernel/pool.json",
                "supernet/phase3_width/history.csv", "search/pareto.csv", "search/pareto.png",
                "search/chosen.json", "final/subnet.pt", "final/arch.json", "final/subnet.onnx",
                "final/report.json", "final/report.md"]:
        assert (out / rel).is_file(), rel
    for stage in ("zero_shot", "supernet", "search", "final"):
        assert (out / stage / "DONE.json").is_file()
    report = json.loads((out / "final/report.json").read_text())
    for side in ("largest", "subnet"):
        for key in ("test_acc", "params_m", "flops_m", "latency_ms", "throughput_img_s"):
            assert report[side][key] > 0
    assert report["speedup_latency"] == pytest.approx(
        report["largest"]["latency_ms"] / report["subnet"]["latency_ms"])
    assert report["subnet"]["flops_m"] < report["largest"]["flops_m"]
    assert metrics["final/test_acc"] == report["subnet"]["test_acc"]


def test_chosen_subnet_meets_the_latency_cap(full_run):
    out, _ = full_run
    chosen = json.loads((out / "search/chosen.json").read_text())
    assert chosen["costs"]["latency_ms"] <= 0.6 * chosen["largest_latency_ms"] + 1e-9


def test_saved_subnet_reloads_and_matches_onnx(full_run):
    out, _ = full_run
    net = load_subnet(out / "final")
    spec = json.loads((out / "final/arch.json").read_text())
    x = torch.randn(3, *spec["input_shape"])
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "final/subnet.onnx"))
    (onnx_out,) = sess.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), net(x).detach(), rtol=1e-4,
                               atol=1e-4)


def test_rerun_in_the_same_folder_resumes_without_redoing(full_run):
    out, metrics = full_run
    stamp = (out / "final/subnet.pt").stat().st_mtime_ns
    again = _run(out)
    assert again == metrics
    assert (out / "final/subnet.pt").stat().st_mtime_ns == stamp


def test_folder_of_another_config_is_refused(full_run):
    out, _ = full_run
    with pytest.raises(ConfigError, match="different config"):
        _run(out, "seed=5")


def test_same_seed_reproduces_the_search(tmp_path):
    stages = "stages=[zero_shot]"
    _run(tmp_path / "a", stages)
    _run(tmp_path / "b", stages)
    _run(tmp_path / "c", stages, "seed=1")
    hist = [(tmp_path / r / "zero_shot/history.csv").read_text() for r in "abc"]
    assert hist[0] == hist[1] and hist[0] != hist[2]


def test_infeasible_constraints_report_the_smallest(tmp_path):
    with pytest.raises(InfeasibleError, match="smallest achievable.*params_m"):
        _run(tmp_path / "x", "stages=[zero_shot]", "constraints.params_m.max=0.000001")


def test_later_stage_without_supernet_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="add supernet to stages"):
        _run(tmp_path / "x", "stages=[search]")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "hwnas", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_multirun_sweep_gives_one_folder_per_job(tmp_path):
    proc = _cli("-m", *TINY, "stages=[zero_shot]", "zero_shot.budget=6,9",
                f"hydra.sweep.dir={tmp_path}/sweep", f"paths.cache_dir={tmp_path}/cache",
                cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "zero_shot/DONE.json").is_file()
        assert (job / ".hydra/config.yaml").is_file()
    pops = sorted(json.loads((j / "zero_shot/result.json").read_text())["evaluations"]
                  for j in jobs)
    assert pops[0] < pops[1]


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path):
    proc = _cli(*TINY, "stages=[zero_shot]", "selection.max_latency_ratio=3",
                f"hydra.run.dir={tmp_path}/r", cwd=ROOT)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "max_latency_ratio" in errors[0]


@pytest.mark.parametrize("strategy", ["evolution", "random", "nsga2", "tpe"])
def test_every_strategy_runs_through_the_pipeline(tmp_path, strategy):
    """Each strategy drives both the zero-shot stage and the supernet search, within a
    latency window."""
    out = tmp_path / "run"
    _run(out, f"search={strategy}", f"selection={strategy}",
         "supernet.phases=[{name:largest,elastic:[],epochs:1,lr:0.1},"
         "{name:all,elastic:[kernel,depth,width],epochs:1,lr:0.03}]",
         "selection.search.top_k=2", "final.epochs=0", "final.onnx=false")
    chosen = json.loads((out / "search/chosen.json").read_text())
    assert chosen["costs"]["latency_ms"] <= 0.6 * chosen["largest_latency_ms"] + 1e-9
    zero = json.loads((out / "zero_shot/result.json").read_text())
    assert zero["strategy"] == strategy and zero["evaluations"] >= 5
    assert (out / "final/report.json").is_file()
