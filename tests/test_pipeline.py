"""The whole pipeline on synthetic data with tiny settings, in-process and via the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwnas.app.checks import preflight
from hwnas.app.context import ConfigError, build_context
from hwnas.app.pipeline import CONFIG_FILE, run
from hwnas.app.subnet_io import load_subnet
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
        for key in ("test_acc", "params_m", "flops_m", "latency_ms", "throughput_per_s"):
            assert report[side][key] > 0
    assert report["speedup_latency"] == pytest.approx(
        report["largest"]["latency_ms"] / report["subnet"]["latency_ms"])
    assert report["subnet"]["flops_m"] < report["largest"]["flops_m"]
    assert metrics["final/test_acc"] == report["deployed_test_acc"]
    assert report["task"] == "image_classification" and report["metric"] == "acc"


def test_report_compares_like_with_like(full_run):
    """By default the largest subnet is fine-tuned with the chosen one's budget, and
    every accuracy says how it was obtained."""
    out, metrics = full_run
    report = json.loads((out / "final/report.json").read_text())
    assert report["comparison"].startswith("fine-tuned 1 epoch ")
    for side in ("largest", "subnet"):
        row = report[side]
        assert row["test_acc"] == row["finetuned_test_acc"]
        assert row["test_method"] == report["comparison"]
        assert 0 <= row["inherited_test_acc"] <= 1
    assert report["drop"] == pytest.approx(
        report["largest"]["test_acc"] - report["subnet"]["test_acc"])
    assert metrics["final/drop"] == pytest.approx(report["drop"])
    md = (out / "final/report.md").read_text()
    assert "inherited supernet weights, BN recalibrated" in md and "fine-tuned 1 epoch " in md


def test_report_without_finetuning_the_largest_compares_inherited(tmp_path):
    out = tmp_path / "run"
    _run(out, "final.finetune_largest=false", "supernet.phases=[{name:largest,elastic:[],"
         "epochs:1,lr:0.1},{name:all,elastic:[kernel,depth,width],epochs:1,lr:0.03}]",
         "final.onnx=false")
    report = json.loads((out / "final/report.json").read_text())
    assert report["comparison"] == "inherited supernet weights, BN recalibrated"
    assert report["largest"]["finetuned_test_acc"] is None
    assert report["subnet"]["finetuned_test_acc"] is not None
    assert report["subnet"]["test_acc"] == report["subnet"]["inherited_test_acc"]
    assert "n/a (not fine-tuned)" in (out / "final/report.md").read_text()


def test_chosen_subnet_is_on_its_own_pareto_front(full_run):
    out, _ = full_run
    chosen = json.loads((out / "search/chosen.json").read_text())
    front = (out / "search/pareto.csv").read_text()
    arch = json.dumps(chosen["arch"], separators=(",", ":"))
    assert arch.replace('"', '""') in front or arch in front


def test_training_logs_epoch_means(full_run):
    out, _ = full_run
    header = (out / "supernet/logs/metrics.csv").read_text().splitlines()[0]
    assert "train/loss_epoch" in header and "val/acc_largest" in header
    header = (out / "final/logs_subnet/metrics.csv").read_text().splitlines()[0]
    assert "train/loss_epoch" in header


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
    with pytest.raises(ConfigError, match="smallest achievable params_m=.*raise the max"):
        _run(tmp_path / "x", "stages=[zero_shot]", "constraints.params_m.max=0.000001")


def test_infeasible_min_names_the_largest_achievable(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="params_m.min=5 is above .*largest achievable"):
        _run(out, "stages=[zero_shot]", "constraints.params_m.min=5")
    assert not (out / CONFIG_FILE).exists()


def test_invalid_strategy_value_writes_nothing_and_the_fix_reruns(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="population"):
        _run(out, "stages=[zero_shot]", "zero_shot.strategy.population=0")
    assert not (out / CONFIG_FILE).exists()
    _run(out, "stages=[zero_shot]", "zero_shot.strategy.population=4")
    assert (out / "zero_shot/DONE.json").is_file()


def test_latency_cap_below_the_smallest_is_refused_before_any_stage(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="max_latency_ratio=0.01 caps latency.*at least"):
        _run(out, "search.max_latency_ratio=0.01")
    assert not out.exists() or not any(out.iterdir())


def test_phase_without_feasible_arch_samples_its_space(tmp_path):
    """A params cap the whole space meets but the kernel phase (depth and width at their
    maximum) does not: the run warns at start-up and trains that phase on its space."""
    overrides = [*TINY, f"paths.output_dir={tmp_path / 'p'}",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    ctx = build_context(compose_config(overrides))
    space = ctx.model.space
    kernel_min = ctx.cost_model(space.restrict(["kernel"]).min_arch())["params_m"]
    whole_min = ctx.cost_model(space.min_arch())["params_m"]
    assert whole_min < kernel_min
    cap = (whole_min + kernel_min) / 2
    warnings = preflight(build_context(compose_config(
        [*overrides, f"constraints.params_m.max={cap}"])))
    assert any("phase 1 (kernel)" in w for w in warnings)
    out = tmp_path / "run"
    _run(out, f"constraints.params_m.max={cap}", "stages=[zero_shot,supernet]")
    assert (out / "supernet/DONE.json").is_file()
    assert not (out / "supernet/phase1_kernel").exists()


def test_pool_within_cap_trains_subnets_under_the_search_cap(tmp_path):
    """supernet.pool_within_cap: every between-phase pool keeps to the latency cap of
    stage search, so the random subnets each step trains lie where the choice is made."""
    ratio = 0.6
    overrides = [f"search.max_latency_ratio={ratio}", "supernet.pool_within_cap=true",
                 "supernet.smallest=false", "supernet.num_random=1"]
    out = tmp_path / "run"
    _run(out, "stages=[zero_shot,supernet,search]", *overrides)
    ctx = build_context(compose_config([*TINY, f"paths.output_dir={tmp_path / 'ctx'}",
                                        f"paths.cache_dir={tmp_path / 'cache'}", *overrides]))
    cap = ratio * ctx.cost_model(ctx.model.space.max_arch())["latency_ms"]
    pools = sorted(out.glob("supernet/phase*/pool.json"))
    assert pools
    archs = [ctx.model.space.validate(a) for p in pools for a in json.loads(p.read_text())]
    assert archs and all(ctx.cost_model(a)["latency_ms"] <= cap for a in archs)
    # stage search measures the subnets the last phase trained
    with open(out / "search/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    measured = {ctx.model.space.validate(json.loads(r["arch"])) for r in rows}
    last = json.loads((out / "supernet/phase3_width/pool.json").read_text())
    assert {ctx.model.space.validate(a) for a in last} <= measured
    # zero-shot seeds above the cap (they could never be chosen) are not measured
    seeds = [ctx.model.space.validate(a)
             for a in json.loads((out / "zero_shot/pool.json").read_text())[:3]]
    over = [a for a in seeds if ctx.cost_model(a)["latency_ms"] > cap]
    space = ctx.model.space
    assert over and not (set(over) - {space.max_arch(), space.min_arch()}) & measured
    # without the option the width phase's pool reaches above the cap
    loose = tmp_path / "loose"
    _run(loose, "stages=[supernet]", f"search.max_latency_ratio={ratio}")
    wide = json.loads((loose / "supernet/phase3_width/pool.json").read_text())
    assert max(ctx.cost_model(ctx.model.space.validate(a))["latency_ms"] for a in wide) > cap


def test_readme_params_cap_is_accepted_on_the_default_model():
    """README: constraints.params_m.max=0.1 on the default model; the kernel phase
    starts above it, which is a warning, not an error."""
    cfg = compose_config(["constraints.params_m.max=0.1", "hardware=analytic",
                          "paths.output_dir=/tmp/unused", "data.train_limit=512",
                          "data.val_size=64", "data.test_limit=64"])
    warnings = preflight(build_context(cfg))
    assert any("(kernel)" in w for w in warnings)


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


def test_cli_refused_rerun_keeps_the_folder_record(tmp_path):
    run_dir = tmp_path / "r"
    args = (*TINY, "stages=[zero_shot]", f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path}/cache")
    assert _cli(*args, cwd=ROOT).returncode == 0
    record = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    resolved = (run_dir / CONFIG_FILE).read_bytes()
    proc = _cli(*args, "seed=5", cwd=ROOT)
    assert proc.returncode == 2 and "different config" in proc.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == record
    assert (run_dir / CONFIG_FILE).read_bytes() == resolved


def test_cli_hydra_errors_exit_2(tmp_path):
    proc = _cli(*TINY, "zero_shot.strategy.populaton=5", f"hydra.run.dir={tmp_path}/r",
                cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]


def test_cli_sweep_runs_every_valid_job_and_reports_the_invalid(tmp_path):
    proc = _cli("-m", *TINY, "stages=[zero_shot]", "zero_shot.strategy.population=0,4",
                f"hydra.sweep.dir={tmp_path}/sweep", f"paths.cache_dir={tmp_path}/cache",
                cwd=ROOT)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "job 0" in errors[0] and "population" in errors[0]
    done = list((tmp_path / "sweep").glob("*/zero_shot/DONE.json"))
    assert len(done) == 1 and "population=4" in str(done[0])


def test_cli_logs_progress_when_not_a_terminal(tmp_path):
    proc = _cli(*TINY, "stages=[zero_shot]", f"hydra.run.dir={tmp_path}/r",
                f"paths.cache_dir={tmp_path}/cache", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / "r" / "hwnas.log").read_text()
    assert "zero-shot search: 16/16 done" in log


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path):
    proc = _cli(*TINY, "stages=[zero_shot]", "search.max_latency_ratio=3",
                f"hydra.run.dir={tmp_path}/r", cwd=ROOT)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "max_latency_ratio" in errors[0]


@pytest.mark.parametrize("strategy", ["evolution", "random", "nsga2", "tpe"])
def test_every_strategy_runs_through_the_pipeline(tmp_path, strategy):
    """Each strategy drives both the zero-shot stage and the supernet search, within a
    latency window."""
    out = tmp_path / "run"
    _run(out, f"zero_shot/strategy={strategy}", f"search/strategy={strategy}",
         "supernet.phases=[{name:largest,elastic:[],epochs:1,lr:0.1},"
         "{name:all,elastic:[kernel,depth,width],epochs:1,lr:0.03}]",
         "search.strategy.top_k=2", "final.epochs=0", "final.onnx=false")
    chosen = json.loads((out / "search/chosen.json").read_text())
    assert chosen["costs"]["latency_ms"] <= 0.6 * chosen["largest_latency_ms"] + 1e-9
    zero = json.loads((out / "zero_shot/result.json").read_text())
    assert zero["strategy"] == strategy and zero["evaluations"] >= 5
    assert (out / "final/report.json").is_file()


def test_quickstart_notebook_runs(full_run):
    """notebooks/quickstart.ipynb executes top to bottom (on the finished tiny run, which
    it resumes: every stage is already done)."""
    import nbclient
    import nbformat

    out, _ = full_run
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    os.environ["HWNAS_RUN_DIR"] = str(out)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        del os.environ["HWNAS_RUN_DIR"]
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "predicted classes" in text and "phase1_kernel" in text
