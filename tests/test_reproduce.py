"""``hwnas reproduce RUN_DIR``: a finished run rerun from its record with the same
latency model, in a folder of its own, ends "equal" for every CPU target (analytic:
the FLOPs line; cpu: the latency table; onnxruntime: the measured latencies replayed);
a changed record is a table of differences (exit 1); input to fix is one line (exit 2).

The runs start with ``python -m hwnas`` from a temporary folder; the command itself runs
in-process (:func:`hwnas.app.cli.main`), its rerun being ``python -m hwnas`` again."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hwnas.app import cli
from hwnas.app.reproduce import plan
from hwnas.app.run_diff import compare_runs, format_differences

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["experiment=synthetic_tiny", "threads=1", "final.onnx=false"]
# the tiny nets are too alike for the default latency cap (60 % of the largest)
NO_CAP = "search.max_latency_ratio=null"


def _hwnas_run(tmp: Path, name: str, *overrides: str) -> Path:
    """A finished tiny run ``tmp/name`` started by ``python -m hwnas`` from ``tmp``."""
    out = tmp / name
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "hwnas", *TINY, *overrides, f"hydra.run.dir={out}",
           f"paths.cache_dir={tmp / 'cache'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _reproduce(monkeypatch, capfd, *argv: str) -> tuple[int, str, str]:
    """``hwnas reproduce argv`` in-process: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["hwnas"])
    capfd.readouterr()
    with pytest.raises(SystemExit) as done:
        cli.main(["reproduce", *argv])
    out, err = capfd.readouterr()
    return done.value.code, out, err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _assert_equal(monkeypatch, capfd, run: Path) -> Path:
    """Reproduce ``run``: equal, exit 0, in ``<run>-reproduce-1`` with hwnas's log; the
    recorded run is left as it was."""
    before = _snapshot(run)
    code, out, err = _reproduce(monkeypatch, capfd, str(run))
    new = run.parent / f"{run.name}-reproduce-1"
    assert code == 0, (out[-3000:], err[-3000:])
    assert "\nequal: " in out and "final weights tensor for tensor" in out
    assert "stage final: starting" in (new / "hwnas.log").read_text()  # hwnas's own log
    summary = json.loads((new / "reproduction.json").read_text())
    assert summary["equal"] and not summary["differences"]
    assert {"search/chosen.json", "search/pareto.csv", "final/subnet.pt"} <= set(summary["files"])
    assert {"zero_shot/result.json", "supernet/phase3_width/history.csv"} <= set(summary["files"])
    assert _snapshot(run) == before
    return new


@pytest.fixture(scope="module")
def analytic_run(tmp_path_factory) -> Path:
    return _hwnas_run(tmp_path_factory.mktemp("analytic"), "run")


# ------------------------------------------------------------ each target: equal
@pytest.mark.slow
def test_analytic_run_reproduces_equal(analytic_run, monkeypatch, capfd):
    new = _assert_equal(monkeypatch, capfd, analytic_run)
    overrides = yaml.safe_load((new / ".hydra" / "overrides.yaml").read_text())
    assert f"hardware.table={analytic_run / 'latency_table.json'}" in overrides
    assert overrides[:3] == TINY  # the recorded command line, then the record
    # the folder now holds something: a second reproduction there is refused
    code, _, err = _reproduce(monkeypatch, capfd, str(analytic_run), f"hydra.run.dir={new}")
    assert code == 2 and len(_errors(err)) == 1 and "never overwrites" in err


@pytest.mark.slow
def test_cpu_table_run_reproduces_equal(tmp_path, monkeypatch, capfd):
    run = _hwnas_run(tmp_path, "run", "hardware=cpu", NO_CAP)
    table = json.loads((run / "latency_table.json").read_text())
    assert table["format"] == "hwnas.latency_table/1"
    _assert_equal(monkeypatch, capfd, run)


@pytest.mark.slow
def test_onnxruntime_run_reproduces_equal_with_its_measured_latencies(tmp_path, monkeypatch, capfd):
    run = _hwnas_run(tmp_path, "run", "hardware=onnxruntime", NO_CAP, "hardware.warmup=0",
                     "hardware.repeats=1")  # fmt: skip
    assert not (run / "latency_table.json").exists()
    record = json.loads((run / "measured_latency.json").read_text())
    n = len(record["latencies"])
    assert record["format"] == "hwnas.measured_latency/1" and n >= 10
    assert record["meta"]["backend"] == "onnxruntime" and record["meta"]["timed"] == n
    new = _assert_equal(monkeypatch, capfd, run)
    log = (new / "hwnas.log").read_text()
    assert f"{n} archs' latencies replayed" in log and "not in the measured-latency" not in log
    again = json.loads((new / "measured_latency.json").read_text())
    assert (again["meta"]["replayed"], again["meta"]["timed"]) == (n, 0)
    assert again["latencies"] == record["latencies"]


# ------------------------------------------------- a changed record: the differences
def _edit_record(run: Path) -> dict[str, object]:
    """Change one value of a result, one CSV cell and one weight; what was changed."""
    chosen = json.loads((run / "search/chosen.json").read_text())
    metric = next(k for k, v in chosen["val_metrics"].items() if isinstance(v, float))
    chosen["val_metrics"][metric] += 0.25
    (run / "search/chosen.json").write_text(json.dumps(chosen, indent=2))
    path = run / "zero_shot/history.csv"
    rows = list(csv.reader(path.open()))
    column = rows[0].index("fitness")
    rows[1][column] = "12345"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    state = torch.load(run / "final/subnet.pt", weights_only=True)
    weights = state["state_dict"] if "state_dict" in state else state
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 1.0
    torch.save(state, run / "final/subnet.pt")
    return {"metric": f"val_metrics.{metric}", "weight": name}


@pytest.mark.slow
def test_changed_record_of_an_amended_run_is_a_table_of_differences(
    analytic_run, tmp_path, monkeypatch, capfd
):
    run = tmp_path / "edited"
    shutil.copytree(analytic_run, run)
    changed = _edit_record(run)
    (run / "amendments.jsonl").write_text(json.dumps(
        {"time": "t", "changed": {"final.epochs": [2, 1]}, "unfinished_stages": ["final"]}
    ) + "\n")  # fmt: skip
    code, out, err = _reproduce(monkeypatch, capfd, str(run))
    assert code == 2 and len(_errors(err)) == 1, err
    assert "cannot be reproduced exactly" in err and "--compare-anyway" in err
    assert "final.epochs" in err and not (tmp_path / "edited-reproduce-1").exists()

    code, out, err = _reproduce(monkeypatch, capfd, str(run), "--compare-anyway")
    assert code == 1, (out[-3000:], err[-3000:])
    table = out[out.index("\ndiffers: ") :]
    assert "differs: 3 values in 3 of 13 files compared" in table, table
    assert "file" in table and "recorded" in table and "now" in table
    for file, key in [("search/chosen.json", changed["metric"]),
                      ("zero_shot/history.csv", "#0.fitness"),
                      ("final/subnet.pt", changed["weight"])]:  # fmt: skip
        assert any(file in line and key in line for line in table.splitlines()), (file, key)
    assert "12345" in table and "max |diff| 1" in table
    new = tmp_path / "edited-reproduce-1"
    summary = json.loads((new / "reproduction.json").read_text())
    assert not summary["equal"] and summary["amended"] == {"final.epochs": 1}
    assert "final.epochs=1" in yaml.safe_load((new / ".hydra" / "overrides.yaml").read_text())


# ------------------------------------------------------------ input to fix: exit 2
def _fake_run(folder: Path, stages=("zero_shot",), done=("zero_shot",), **cfg) -> Path:
    """A run folder's record without running anything (the checks come first)."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"stages": list(stages), "threads": 1, "hardware": {"latency": "flops"}, **cfg}
    (folder / "hwnas_config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(TINY))
    hydra = {"hydra": {"runtime": {"cwd": str(folder.parent)}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    for stage in done:
        (folder / stage).mkdir()
        (folder / stage / "DONE.json").write_text("{}")
    return folder


def _amend(run: Path) -> Path:
    (run / "amendments.jsonl").write_text(json.dumps({"changed": {"final.lr": [0.1, 0.01]}}) + "\n")
    return run


def _no_hydra_record(t: Path) -> list[str]:
    shutil.rmtree(_fake_run(t / "r") / ".hydra")
    return [str(t / "r")]


BAD_INPUT = [
    ("no run dir", lambda t: [], "no RUN_DIR given"),
    ("two run dirs", lambda t: [str(t), str(t)], "one RUN_DIR"),
    ("unknown flag", lambda t: [str(_fake_run(t / "r")), "--fast"], "unknown option '--fast'"),
    ("no such folder", lambda t: [str(t / "nothing")], "no such folder"),
    ("not a run", lambda t: [str(t)], "is not a run folder"),
    ("no hydra record", _no_hydra_record, "no .hydra/overrides.yaml"),
    ("unfinished", lambda t: [str(_fake_run(t / "r", stages=("zero_shot", "supernet")))],
     "unfinished run (stages ['supernet'] have no DONE.json)"),
    ("amended", lambda t: [str(_amend(_fake_run(t / "r")))], "--compare-anyway"),
    ("output_dir", lambda t: [str(_fake_run(t / "r")), "paths.output_dir=x"], "hydra.run.dir"),
    ("folder taken",
     lambda t: [str(_fake_run(t / "r")), f"hydra.run.dir={_fake_run(t / 'other')}"],
     "never overwrites"),
]  # fmt: skip


@pytest.mark.parametrize("argv,message", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_input_to_fix_exits_2_in_one_line(tmp_path, monkeypatch, capfd, argv, message):
    args = argv(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _reproduce(monkeypatch, capfd, *args)
    assert code == 2
    assert len(_errors(err)) == 1 and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing started


def test_help_prints_the_usage(monkeypatch, capfd):
    code, out, _ = _reproduce(monkeypatch, capfd, "--help")
    assert code == 0 and "hwnas reproduce RUN_DIR" in out


# ------------------------------------------------------------ the plan and the diff
def test_plan_reuses_the_record_and_puts_the_command_line_last(tmp_path):
    run = _fake_run(tmp_path / "r", hardware={"latency": "measured"})
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        [*TINY, "hardware=onnxruntime", "hardware.table=/elsewhere.json", "paths.output_dir=o"]
    ))  # fmt: skip
    (run / "measured_latency.json").write_text("{}")
    (tmp_path / "r-reproduce-1").mkdir()  # taken: the next number
    p = plan([str(run), "threads=2"])
    assert p.out == tmp_path / "r-reproduce-2" and p.cwd == tmp_path and p.threads == 2
    assert p.overrides == [
        "experiment=synthetic_tiny", "final.onnx=false", "hardware=onnxruntime", "threads=2",
        f"hardware.table={run / 'measured_latency.json'}", f"hydra.run.dir={p.out}",
    ]  # fmt: skip
    assert "replayed" in p.latency
    _amend(run)
    p = plan([str(run), "--compare-anyway", f"hydra.run.dir={tmp_path / 'my dir'}"])
    assert p.amended == {"final.lr": 0.01} and "final.lr=0.01" in p.overrides
    assert p.overrides[-1] == f"hydra.run.dir='{tmp_path / 'my dir'}'"  # quoted for Hydra


def test_plan_reruns_the_stages_a_resume_added(tmp_path):
    run = _fake_run(tmp_path / "r", stages=("zero_shot",), done=("zero_shot", "supernet"))
    (run / "quantize").mkdir()  # python -m hwnas.quantize: not a stage of the pipeline run
    (run / "quantize" / "DONE.json").write_text("{}")
    assert "stages=[zero_shot,supernet]" in plan([str(run)]).overrides
    assert "stages=[zero_shot]" in plan([str(run), "stages=[zero_shot]"]).overrides


def test_compare_runs_names_each_value_that_differs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, acc, cell, weight in ((a, 0.5, "1.0", 0.0), (b, 0.75, "2.0", 0.5)):
        (root / "search").mkdir(parents=True)
        (root / "final").mkdir()
        (root / "search/chosen.json").write_text(json.dumps({"metrics": {"acc": acc}, "n": 3}))
        (root / "search/history.csv").write_text(f"arch,fitness\nx,{cell}\n")
        state = {"w": torch.tensor([1.0, weight]), "b": torch.zeros(2)}
        torch.save(state, root / "final/subnet.pt")
    (a / "search/result.json").write_text('{"n": 1}')
    (b / "search/result.json").write_text('{"n":1}')  # the same value, other bytes
    (a / "search/pareto.csv").write_text("x\n")
    files, diffs = compare_runs(a, b)
    rows = {(d.file, d.key): (d.recorded, d.now) for d in diffs}
    assert rows == {
        ("search/chosen.json", "metrics.acc"): ("0.5", "0.75"),
        ("search/history.csv", "#0.fitness"): ("1.0", "2.0"),
        ("final/subnet.pt", "w"): (rows[("final/subnet.pt", "w")][0],
                                   rows[("final/subnet.pt", "w")][1]),
        ("search/result.json", "(bytes; same values)"): ("8 bytes", "7 bytes"),
        ("search/pareto.csv", "(file)"): ("present", "missing"),
    }  # fmt: skip
    assert "max |diff| 0.5" in rows[("final/subnet.pt", "w")][1]
    text = format_differences(files, diffs)
    assert text.startswith("differs: 5 values in 5 of 5 files compared")
    assert text.splitlines()[1].split() == ["file", "key", "recorded", "now"]
    assert compare_runs(a, a)[1] == [] and format_differences(*compare_runs(a, a)).startswith(
        "equal: 4 result files"
    )
