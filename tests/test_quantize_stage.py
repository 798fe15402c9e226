"""Stage ``quantize`` in the pipeline and ``python -m hwnas.quantize`` on tiny runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.app.context import ConfigError
from hwnas.app.pipeline import run
from hwnas.quantize.layers import layer_nodes_by_name
from hwnas.quantize.onnx_quant import quantized_nodes
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "quantize.val_samples=32", "quantize.calib_samples=32", "quantize.hessian_samples=4",
    "quantize.hessian_batch=16", "quantize.strategy.trials=8",
    "quantize.strategy.population_size=4", "quantize.repeats=3", "quantize.warmup=1",
    "quantize.throughput_batch=8", "quantize.max_drop=0.05",
    "quantize.compare=false",  # the other runtime: tested where it is asserted
]  # fmt: skip
STAGES = "stages=[zero_shot,supernet,search,final,quantize]"


def _run(out: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_config([
        "experiment=synthetic_tiny", f"paths.output_dir={out}",
        f"paths.cache_dir={out.parent / 'cache'}", STAGES, *SMALL, *overrides,
    ])  # fmt: skip
    return run(cfg)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = tmp_path_factory.mktemp("quant") / "run"
    size_cap = "quantize.constraints.size_mb.max=1.0"
    return out, _run(out, size_cap)


def test_stage_writes_model_assignment_front_and_report(quantized):
    out, metrics = quantized
    q = out / "quantize"
    for rel in ("model.onnx", "assignment.json", "sensitivity.csv", "pareto.csv",
                "pareto.png", "report.json", "report.md", "DONE.json"):  # fmt: skip
        assert (q / rel).is_file(), rel
    report = json.loads((q / "report.json").read_text())
    for side in ("fp32", "int8", "chosen"):
        assert 0 <= report[side]["test"] <= 1 and report[side]["latency_ms"] > 0
        assert report[side]["size_mb"] > 0 and report[side]["throughput_per_s"] > 0
    assert metrics["quantize/test_acc"] == report["chosen"]["test"]
    # the deployed file runs exactly the INT8 layers of the assignment
    assignment = json.loads((q / "assignment.json").read_text())
    nodes = layer_nodes_by_name(q / "fp32.onnx", list(assignment))
    int8 = {n for layer, p in assignment.items() if p == "int8" for n in nodes[layer]}
    assert quantized_nodes(q / "model.onnx") == int8
    # uniform INT8 quantizes every layer; the FP32 reference none
    with (q / "pareto.csv").open() as f:
        rows = list(csv.DictReader(f))
    fp32_row = next(r for r in rows if r["mark"].startswith("uniform FP32"))
    assert int(fp32_row["int8_layers"]) == 0
    int8_row = next(r for r in rows if r["mark"].startswith("uniform INT8"))
    assert int(int8_row["int8_layers"]) == report["assignment"]["layers"]
    sens = list(csv.DictReader((q / "sensitivity.csv").open()))
    assert {r["layer"] for r in sens} == set(assignment)
    assert all(r["omega"] not in ("", "nan") for r in sens)


def test_chosen_assignment_meets_its_constraints_and_drop(quantized):
    out, _ = quantized
    q = out / "quantize"
    with (q / "pareto.csv").open() as f:
        rows = list(csv.DictReader(f))
    chosen = next(r for r in rows if "chosen" in r["mark"])
    fp32 = json.loads((q / "report.json").read_text())["val"]["fp32"]
    assert float(chosen["size_mb"]) <= 1.0 and chosen["feasible"] == "True"
    assert fp32 - float(chosen["val"]) <= 0.05 + 1e-9
    # nothing faster and feasible within the drop was measured
    faster = [r for r in rows if float(r["latency_ms"]) < float(chosen["latency_ms"])]
    assert all(fp32 - float(r["val"]) > 0.05 or r["feasible"] == "False" for r in faster)


def test_stage_resumes_like_the_others(quantized):
    out, metrics = quantized
    stamp = (out / "quantize" / "model.onnx").stat().st_mtime_ns
    again = _run(out, "quantize.constraints.size_mb.max=1.0")
    assert (out / "quantize" / "model.onnx").stat().st_mtime_ns == stamp
    assert again["quantize/test_acc"] == metrics["quantize/test_acc"]


def test_cli_quantizes_a_finished_run_elsewhere_and_never_overwrites(quantized, tmp_path):
    out, _ = quantized
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hwnas.quantize"]
    busy = subprocess.run([*cmd, f"run_dir={out}"], capture_output=True, text=True, env=env)
    assert busy.returncode == 2 and "already holds a quantization" in busy.stderr
    assert busy.stderr.count("\n") == 1
    dest = tmp_path / "q"
    ok = subprocess.run([*cmd, f"run_dir={out}", f"output_dir={dest}", *SMALL],
                        capture_output=True, text=True, env=env, cwd=ROOT)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (dest / "model.onnx").is_file() and (dest / "DONE.json").is_file()
    args = [f"run_dir={out}", f"output_dir={tmp_path / 'b'}", "quantize.estimate=guess"]
    bad = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "quantize.estimate='guess'" in bad.stderr
    assert not (tmp_path / "b").exists()


def test_quantize_without_final_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="quantize reads final/subnet.pt.*add final to stages"):
        _run(tmp_path / "r", "stages=[quantize]")


def test_openvino_int4_on_a_gemm_head_compares_on_onnxruntime_in_int8(quantized, tmp_path):
    """OpenVINO compresses a Gemm (a 2-D linear head) to INT4; ONNX Runtime has no INT4
    kernel for it, so the side-by-side deployment there runs that layer in INT8."""
    from hwnas.app.quantize_cli import main

    out, _ = quantized
    q = tmp_path / "ov"
    args = [f"run_dir={out}", f"output_dir={q}", *SMALL, "quantize.runtime=openvino",
            "quantize.choices=[int4,int8,fp32]", "quantize.compare=true"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((q / "report.json").read_text())
    assert report["runtime"] == "openvino" and report["int4_layers"]
    assert set(report["compare"]["onnxruntime"]) >= {"fp32", "int8", "int4", "chosen"}
    assert 0 <= report["int4"]["test"] <= 1
    assert 0 <= report["compare"]["onnxruntime"]["int4"]["test"] <= 1
