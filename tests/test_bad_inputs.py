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


# (what to break, overrides of the rerun, text of the one line)
FOLDERS = [
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
    (lambda out: (out / "final" / "DONE.json").unlink() or _truncate(
        out / "search" / "chosen.json"), [], "chosen.json"),
    (lambda out: (out / "search" / "DONE.json").unlink() or (out / "final" / "DONE.json")
     .unlink() or _truncate(out / "supernet" / "supernet.pt"), [], "supernet.pt"),
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
    n = len(COMPOSITION) + len(VALUES) + len(FOLDERS) + 3 + 1 + 2 + 4
    assert n >= 60, n
    json.dumps(n)
