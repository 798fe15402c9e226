"""The bad-input matrix: every input a user can get wrong is refused with exactly one
line that names the key (or file) and a fix, before anything is written, and nothing
a run folder held changes. Cases run in-process (the command line's composition check,
the pipeline's checks) on copies of one finished tiny run; a few go through the real
``python -m hwnas`` to check the exit code and stderr."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.app.config import compose_config
from hwnas.app.errors import precheck
from hwnas.app.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=synthetic_tiny", "threads=1", "final.onnx=false"]

# ---------------------------------------------------------------- composition (Hydra)
# (command line, text the one line must contain)
COMPOSITION = [
    ("model=elastic_cnnn", "did you mean model=elastic_cnn"),
    ("data=fashion_mnistt", "did you mean data=fashion_mnist"),
    ("hardware=gpu", "choose one of"),
    ("proxy=descor", "did you mean proxy=descore"),
    ("experiment=synthetic_tny", "did you mean experiment=synthetic_tiny"),
    ("zero_shot/strategy=evo", "choose one of ['evolution'"),
    ("search/strategy=annealing", "search/strategy=annealing: no such option"),
    ("supernet=shrinking", "supernet=shrinking: no such option"),
    ("final=best", "final=best: no such option"),
    ("trainer=gpu", "trainer=gpu: no such option"),
    ("supernet.num_randon=3", "did you mean supernet.num_random"),
    ("final.epoch=2", "did you mean final.epochs"),
    ("sed=3", "did you mean seed"),
    ("trainer.loger=csv", "did you mean trainer.logger"),
    ("zero_shot.pool_sise=3", "did you mean zero_shot.pool_size"),
    ("search.budgt=3", "did you mean search.budget"),
    ("quantize.max_dorp=0.1", "did you mean quantize.max_drop"),
    ("paths.output=/tmp/x", "paths.output: unknown key"),
    ("final.epochs=abc", "final.epochs=abc"),
    ("supernet.num_random=x", "supernet.num_random=x"),
    ("seed=abc", "seed=abc"),
    ("search.val_samples=1.5", "search.val_samples=1.5"),
    ("trainer.log_every_n_steps=ten", "trainer.log_every_n_steps=ten"),
    ("supernet.phases.0.lr=fast", "supernet.phases.0.lr=fast"),
    ("final.finetune_largest=maybe", "final.finetune_largest=maybe"),
    ("+foo=1 ]", "cannot parse"),
    ("a=[1,2", "cannot parse"),
]


@pytest.mark.parametrize("arg,expect", COMPOSITION, ids=[c[0] for c in COMPOSITION])
def test_composition_errors_are_one_line(arg, expect):
    line = precheck([*TINY, arg])
    assert line is not None and "\n" not in line, line
    assert expect in line, line


def test_a_valid_command_line_passes_the_precheck():
    assert precheck([*TINY, "seed=3", "hydra.run.dir=/tmp/x"]) is None
    assert precheck(["--help"]) is None and precheck(["-m", "seed=1,2"]) is None


# ---------------------------------------------------------------- values (checks)
# (overrides, the key the one line must name)
VALUES = [
    ("supernet.phases.0.lr=nan", "supernet.phases[0].lr=nan"),
    ("final.lr=nan", "final.lr=nan"),
    ("final.lr=inf", "final.lr=inf"),
    ("data.noise=nan", "data.noise=nan"),
    ("constraints.params_m.max=nan", "constraints.params_m.max=nan"),
    ("supernet.kd_temperature=-inf", "supernet.kd_temperature=-inf"),
    ("stages=[final,zero_shot]", "stages="),
    ("stages=[train]", "stages="),
    ("stages=[]", "stages="),
    ("threads=0", "threads"),
    ("progress=quiet", "progress"),
    ("search.max_latency_ratio=1.5", "search.max_latency_ratio"),
    ("zero_shot.inputs=images", "zero_shot.inputs"),
    ("zero_shot.device=gpu", "zero_shot.device"),
    ("zero_shot.batch_size=0", "zero_shot.batch_size"),
    ("search.budget=0", "search.budget"),
    ("search.workers=0", "search.workers"),
    ("zero_shot.workers=2", "zero_shot/strategy=tpe or nsga2"),
    ("trainer.logger=wandb", "trainer.logger"),
    ("trainer.accelerator=tpu", "trainer.accelerator"),
    ("trainer.strategy=fsdp", "trainer.strategy"),
    ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val"),
    ("final.kd_teacher=best", "final.kd_teacher"),
    ("final.kd_teacher=finetuned final.finetune_largest=false", "final.finetune_largest"),
    ("final.kd_hidden=-1", "final.kd_hidden"),
    ("final.epochs=-1", "final.epochs"),
    ("supernet.smallest=false supernet.num_random=0", "num_random"),
    ("supernet.pool_within_cap=true search.max_latency_ratio=null", "max_latency_ratio"),
    ("supernet.teacher=oracle", "supernet.teacher"),
    ("supernet.optimizer=adam", "supernet.optimizer"),
    ("supernet.importance=random", "supernet.importance"),
    ("supernet.warmup_fraction=-0.1", "supernet.warmup_fraction"),
    ("constraints.latency_ms.min=5 constraints.latency_ms.max=1", "constraints.latency_ms"),
    ("zero_shot.strategy.name=annealing", "zero_shot.strategy.name"),
    ("zero_shot.strategy.population=abc", "population"),
    ("search.strategy.top_k=1.5", "top_k"),
    ("quantize.estimate=guess", "quantize.estimate"),
    ("quantize.max_drop=-1", "quantize.max_drop"),
    ("hardware.threads=0", "hardware.threads"),
    ("hardware.latency=guess", "hardware.latency"),
    ("model.stage_channels=[8]", "model"),
    ("data.train_size=0", "data.train_size"),
    ("proxy.weights.expressivity=abc", "proxy"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _refused(out: Path, overrides: list[str]) -> str:
    """Run the pipeline on ``out``; the refusal's message (one line, nothing written)."""
    before = _snapshot(out) if out.exists() else None
    cfg = compose_config([*TINY, *overrides, f"paths.output_dir={out}",
                          f"paths.cache_dir={out.parent / 'cache'}"])  # fmt: skip
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        run(cfg)
    message = str(err.value)
    assert "\n" not in message, message
    if before is None:
        assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    else:
        assert _snapshot(out) == before
    return message


@pytest.mark.parametrize("overrides,key", VALUES, ids=[c[0] for c in VALUES])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, overrides, key, one_thread):
    message = _refused(tmp_path / "run", overrides.split(" "))
    assert key in message, message


# ---------------------------------------------------------------- run folders
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run (zero-shot, supernet, search, final), copied by each case."""
    out = tmp_path_factory.mktemp("finished") / "run"
    torch_threads = __import__("torch").get_num_threads()
    __import__("torch").set_num_threads(1)
    try:
        run(compose_config([*TINY, f"paths.output_dir={out}",
                            f"paths.cache_dir={out.parent / 'cache'}"]))  # fmt: skip
    finally:
        __import__("torch").set_num_threads(torch_threads)
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nan_in_latency_record(out: Path) -> None:
    path = out / "latency_table.json"
    record = json.loads(path.read_text())
    record["correction"]["scale"] = float("nan")  # json writes NaN
    path.write_text(json.dumps(record))
    (out / "final" / "DONE.json").unlink()


def _nan_in_done_metrics(out: Path) -> None:
    path = out / "final" / "DONE.json"
    done = json.loads(path.read_text())
    done["metrics"][next(iter(done["metrics"]))] = float("nan")
    path.write_text(json.dumps(done))


def _nan_weight(path: Path, key: str | None = None) -> None:
    torch = __import__("torch")
    state = torch.load(path, weights_only=True)
    weights = state["state_dict"] if key else state
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name].clone().fill_(float("nan"))
    torch.save(state, path)


def _nan_in_supernet(out: Path) -> None:
    (out / "search" / "DONE.json").unlink()
    (out / "final" / "DONE.json").unlink()
    _nan_weight(out / "supernet" / "supernet.pt")


def _nan_in_checkpoint(out: Path) -> None:
    (out / "final" / "DONE.json").unlink()
    _nan_weight(out / "final" / "checkpoints" / "last_largest.ckpt", "state_dict")


# (what to break, overrides of the rerun, text of the one line)
FOLDERS = [
    (_nan_in_done_metrics, [], r"final/DONE.json: metrics\..* is not a finite number"),
    (_nan_in_supernet, [], r"supernet.pt .*holds NaN or inf"),
    (_nan_in_checkpoint, [], r"last_largest.ckpt .*holds NaN or inf"),
    (_nan_in_latency_record, [], "latency_table.json"),
    (lambda out: _truncate(out / "zero_shot" / "DONE.json"), [], "zero_shot/DONE.json"),
    (lambda out: _truncate(out / "supernet" / "DONE.json"), [], "supernet/DONE.json"),
    (lambda out: _truncate(out / "search" / "DONE.json"), [], "search/DONE.json"),
    (lambda out: (out / "final" / "DONE.json").write_text("{not json"), [], "final/DONE.json"),
    # cut where the YAML still parses, it is another config; else a damaged file
    (lambda out: _truncate(out / "hwnas_config.yaml"), [], "hwnas_config.yaml|different config"),
    (lambda out: (out / "hwnas_config.yaml").write_text("seed: [\n"), [], "hwnas_config.yaml"),
    (lambda out: None, ["seed=5"], "different config"),
    (lambda out: None, ["final.lr=0.5"], "different config"),
    (
        lambda out: (
            (out / "final" / "DONE.json").unlink() or _truncate(out / "search" / "chosen.json")
        ),
        [],
        "chosen.json",
    ),
    (
        lambda out: (
            (out / "search" / "DONE.json").unlink()
            or (out / "final" / "DONE.json").unlink()
            or _truncate(out / "supernet" / "supernet.pt")
        ),
        [],
        "supernet.pt",
    ),
]


@pytest.mark.parametrize("case", range(len(FOLDERS)))
def test_a_broken_run_folder_is_refused_and_left_as_it_was(finished, tmp_path, case, one_thread):
    breaks, overrides, expect = FOLDERS[case]
    out = _copy(finished, tmp_path)
    breaks(out)
    message = _refused(out, overrides)
    assert re.search(expect, message), message


def test_a_stage_without_its_input_in_a_new_folder_writes_nothing(tmp_path, one_thread):
    for stages, writer in (("[search]", "supernet"), ("[final]", "search"),
                           ("[quantize]", "final")):  # fmt: skip
        out = tmp_path / stages.strip("[]")
        message = _refused(out, [f"stages={stages}"])
        assert f"add {writer} to stages" in message, message


# ---------------------------------------------------------------- data inputs
def _refused_with(out: Path, overrides: list[str]) -> str:
    cfg = compose_config([*overrides, f"paths.output_dir={out}",
                          f"paths.cache_dir={out.parent / 'cache'}"])  # fmt: skip
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        run(cfg)
    assert "\n" not in str(err.value) and not out.exists()
    return str(err.value)


def test_a_named_data_dir_that_does_not_exist_is_not_replaced(tmp_path, one_thread):
    message = _refused_with(tmp_path / "run", ["data.data_dir=/nonexistent", "stages=[zero_shot]"])
    assert "data.data_dir=/nonexistent: no such folder" in message


def raising_builder(**_kw):
    """A user's builder that fails: the refusal names model.source and the error."""
    raise RuntimeError("the user's builder is broken")


class Untraceable(__import__("torch").nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = __import__("torch").nn.Conv2d(1, 8, 3, padding=1)
        self.fc = __import__("torch").nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # a branch on a value: not traceable
            x = x.relu()
        return self.fc(x.mean((2, 3)))


BOOTSTRAP = [
    ("model.source=module:tests.no_such_module:build", "model.source"),
    ("model.source=module:tests.test_bad_inputs:no_such_builder", "model.source"),
    ("model.source=module:tests.test_bad_inputs:raising_builder", "model.source"),
    ("model.source=module:tests.test_bad_inputs:Untraceable", "leaf_modules|trace"),
    ("model.source=torchvision:resnet19", "model.source"),
    ("model.weights=/no/such/weights.pt", "model.weights"),
]


@pytest.mark.parametrize("override,key", BOOTSTRAP, ids=[c[0] for c in BOOTSTRAP])
def test_a_bootstrap_source_that_fails_is_refused_in_one_line(tmp_path, override, key, one_thread):
    message = _refused_with(tmp_path / "run", ["experiment=bootstrap_tiny", "threads=1",
                                               "stages=[zero_shot]", override])  # fmt: skip
    assert re.search(key, message), message


def _corrupt_table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.json"
    path.write_text(text)
    return path


TABLES = [
    ("{not json", "table.json"),
    ('{"format": "hwnas.latency_table/1"}', "table.json"),
    ('{"format": "something/else", "ops": {}}', "table.json"),
    ("[1, 2, 3]", "table.json"),
]


@pytest.mark.parametrize("text,key", TABLES, ids=[c[0] for c in TABLES])
def test_a_corrupt_latency_table_is_refused_in_one_line(tmp_path, text, key, one_thread):
    table = _corrupt_table(tmp_path, text)
    message = _refused_with(tmp_path / "run", [*TINY, "hardware=cpu", "hardware.latency=table",
                                               f"hardware.table={table}",
                                               "stages=[zero_shot]"])  # fmt: skip
    assert "hardware.table" in message and key in message, message


def test_quantize_on_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    from hwnas.app.quantize_cli import main as quantize_main

    (tmp_path / "notes.txt").write_text("not a run")
    cases = [
        ([f"run_dir={tmp_path}"], "hwnas_config.yaml is missing: run_dir"),
        ([f"subnet_dir={tmp_path}", f"output_dir={tmp_path / 'q'}"], "arch.json is missing"),
        ([f"run_dir={tmp_path}", f"subnet_dir={tmp_path}"], "exactly one of run_dir"),
        ([f"subnet_dir={tmp_path}"], "needs output_dir"),
        (["run_dir"], "is not KEY=VALUE"),
    ]
    before = _snapshot(tmp_path)
    for argv, expect in cases:
        assert quantize_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expect in err[0], err
    assert _snapshot(tmp_path) == before


def test_squad_inputs_name_the_key_the_user_set(tmp_path, one_thread):
    squad = ["experiment=squad_tiny", "stages=[zero_shot]", "threads=1"]
    message = _refused_with(tmp_path / "a", [*squad, f"model.pretrained={tmp_path / 'nope'}"])
    assert "model.pretrained" in message
    empty = tmp_path / "squad"
    empty.mkdir()
    for split in ("train", "dev"):
        (empty / f"{split}-v1.1.json").write_text(json.dumps({"version": "1.1", "data": []}))
    message = _refused_with(tmp_path / "b", [*squad, f"data.data_dir={empty}", "data.source=json"])
    assert "holds no questions" in message and "data.val_size" not in message


# ---------------------------------------------------------------- the real command
@pytest.mark.parametrize(
    "args,expect",
    [
        (["model=elastic_cnnn"], "model=elastic_cnnn"),
        (["supernet.num_randon=3"], "supernet.num_random"),
        (["final.lr=nan"], "final.lr=nan"),
        (["stages=[search]"], "add supernet to stages"),  # (the stages check: preflight)
    ],
)
def test_the_command_exits_2_with_one_error_line(tmp_path, args, expect):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", *TINY, *args, f"hydra.run.dir={out}",
         f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # refused before Hydra makes the run folder; a check that needs the built space
    # (preflight) runs inside the job, where Hydra has opened its log file only
    made = {p.name for p in out.iterdir()} if out.exists() else set()
    assert made <= ({"hwnas.log"} if "stages" in expect else set()), made


def test_the_matrix_counts_at_least_60_cases():
    n = len(COMPOSITION) + len(VALUES) + len(FOLDERS) + len(BOOTSTRAP) + len(TABLES)
    n += 3 + 1 + 2 + 4 + 5
    assert n >= 60, n
    json.dumps(n)


# ---------------------------------------------------------------- chance levels
def _verdict(task, subnet: float, largest: float) -> str | None:
    from types import SimpleNamespace

    from hwnas.app.report import _not_learned

    m = task.primary_metric
    ctx = SimpleNamespace(task=task, dm=SimpleNamespace(test_dataloader=lambda: []))
    rows = {"subnet": {f"test_{m}": subnet}, "largest": {f"test_{m}": largest}}
    return _not_learned(ctx, rows, m)


def test_chance_levels_of_reading_and_recognition_refuse_unlearned_results():
    from hwnas.domains.asr.task import TransducerASR
    from hwnas.domains.qa.task import ExtractiveQA

    asr, qa = TransducerASR.__new__(TransducerASR), ExtractiveQA.__new__(ExtractiveQA)
    assert "not below chance (1.0000, emitting nothing)" in _verdict(asr, 1.0, 0.4)
    assert "wer is nan" in _verdict(asr, 0.3, float("nan"))
    assert _verdict(asr, 0.6, 0.4) is None  # both emit something right
    assert "not above chance (0.0000, answering nothing)" in _verdict(qa, 0.0, 0.5)
    assert _verdict(qa, 0.12, 0.10) is None


# ---------------------------------------------------------------- diverge, fix, resume
def test_a_diverged_training_stops_and_resumes_in_its_folder_after_the_fix(tmp_path, one_thread):
    """final.lr=1e30 diverges: one line naming the stage, step and key; nothing of the
    final stage is marked done. The same command with a sane final.lr resumes in the
    same folder (finished stages are kept), and the change is recorded."""
    from hwnas.training.finite import NonFiniteLossError

    out = tmp_path / "run"
    args = [*TINY, f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(NonFiniteLossError) as err:
        run(compose_config([*args, "final.lr=1e30"]))
    message = str(err.value)
    assert "\n" not in message and re.search(r"final.*step \d+.*final.lr \(now 1e\+30\)", message)
    assert "rerun the same command" in message
    assert not (out / "final" / "DONE.json").exists() and (out / "search" / "DONE.json").exists()
    search_before = (out / "search" / "DONE.json").read_bytes()
    # a finished stage's setting still cannot change in this folder
    with pytest.raises(ValueError, match=r"search\.budget.*finished"):
        run(compose_config([*args, "final.lr=0.05", "search.budget=3"]))
    metrics = run(compose_config([*args, "final.lr=0.05"]))
    assert metrics["final/test_acc"] > 0.2 and (out / "final" / "DONE.json").exists()
    assert (out / "search" / "DONE.json").read_bytes() == search_before
    (amendment,) = [json.loads(x) for x in (out / "amendments.jsonl").read_text().splitlines()]
    assert amendment["changed"] == {"final.lr": [1e30, 0.05]}
    assert (
        "final" in amendment["unfinished_stages"] and "search" not in amendment["unfinished_stages"]
    )
    assert "lr: 0.05" in (out / "hwnas_config.yaml").read_text()
    # resumed with its (amended) config, the finished run changes nothing more
    before = _snapshot(out)
    run(compose_config([*args, "final.lr=0.05"]))
    assert {k: v for k, v in _snapshot(out).items() if k != "metrics.json"} == {
        k: v for k, v in before.items() if k != "metrics.json"
    }
