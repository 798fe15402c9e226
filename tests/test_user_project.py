"""Bring your own data (docs/own-data.md): a user's project outside the package
(tests/fixtures/user_project: my_model.build, my_data.MyData, a tiny experiment) runs
end to end through the command line and the Python API; the data contract is checked at
start-up with one-line errors; the task registry builds tasks by name or dotted path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hwnas
from hwnas.app.errors import precheck
from hwnas.data import build_datamodule
from hwnas.data.custom import CustomDataModule
from hwnas.tasks import TASKS, build_task

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Path(__file__).parent / "fixtures" / "user_project"
EXPERIMENT = [f"hydra.searchpath=[file://{PROJECT / 'conf'}]", "experiment=user_tiny"]
QUICK = ["threads=1", "final.onnx=false"]


@pytest.fixture
def on_path(monkeypatch):
    """The user's project importable, as PYTHONPATH would make it."""
    monkeypatch.syspath_prepend(str(PROJECT))


def _custom(target: str, task: str = "image_classification", **kw) -> CustomDataModule:
    def factory(dm, ls):
        return build_task(task, dm, ls)

    dm = build_datamodule({"name": "custom", "_target_": target, "task": task, **kw}, factory)
    dm.setup()
    return dm


def _finished(out: Path) -> dict:
    assert (out / "final" / "DONE.json").is_file()
    report = json.loads((out / "final" / "report.json").read_text())
    assert report["metric"] == "acc" and math.isfinite(report["deployed_test_acc"])
    return report


# ------------------------------------------------------------------- the contract
def test_shape_and_classes_are_read_from_the_batches(on_path, caplog):
    caplog.set_level("INFO", logger="hwnas.data.custom")
    dm = _custom("my_data.MyData", noise=0.3)
    assert dm.input_shape == (1, 16, 16) and dm.num_classes == 4
    assert "largest label + 1" in caplog.text  # the log says where the count came from
    task = dm.task(label_smoothing=0.1)
    assert task.name == "image_classification" and task.label_smoothing == 0.1
    assert task.spec()["input_shape"] == [1, 16, 16]
    # same seed, same proxy batch; the calibration subset is fixed by the data seed
    x1, y1 = dm.proxy_batch(8, seed=3)
    x2, y2 = dm.proxy_batch(8, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (8, 1, 16, 16)
    calib = [b[0] for b in dm.calibration_loader(20, batch_size=8)]
    assert sum(len(b) for b in calib) == 20
    again = [b[0] for b in _custom("my_data.MyData", noise=0.3).calibration_loader(20, 8)]
    assert all(torch.equal(a, b) for a, b in zip(calib, again, strict=True))


def test_attributes_of_the_module_are_used_when_it_has_them(on_path, monkeypatch, caplog):
    import my_data

    caplog.set_level("INFO", logger="hwnas.data.custom")
    monkeypatch.setattr(my_data.MyData, "num_classes", 6, raising=False)
    dm = _custom("my_data.MyData")
    assert dm.num_classes == 6 and "from my_data.MyData.num_classes" in caplog.text


@pytest.mark.parametrize(
    "target,match",
    [
        (
            "bad_data.DictBatches",
            r"setup\(\) must give train_dataloader\(\) batches of "
            r"\(inputs, labels\); got a dict with keys \['image', 'label'\]",
        ),
        ("bad_data.NoTestLoader", r"has no test_dataloader\(\); hwnas needs train, val and test"),
        (
            "bad_data.NaNImages",
            r"first batch of train_dataloader\(\) holds 32 non-finite "
            r"values \(NaN or inf\) in batch\[0\]",
        ),
        ("nowhere.Data", r"data._target_='nowhere.Data': cannot import 'nowhere'"),
        ("my_data.Missing", r"'my_data' has no attribute 'Missing'"),
        ("my_model.SmallCNN", r"not a lightning.LightningDataModule"),
    ],
)
def test_contract_breaches_are_one_line_errors(on_path, target, match):
    with pytest.raises(ValueError, match=match) as err:
        _custom(target)
    assert "\n" not in str(err.value) and str(err.value).startswith("data._target_=")


def test_constructor_keys_are_checked(on_path):
    with pytest.raises(ValueError, match=r"calling it with \['colour'\] raised TypeError") as err:
        _custom("my_data.MyData", colour=3)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------- tasks
def test_every_domain_registers_its_task():
    assert {"classification", "image_classification", "extractive_qa", "transducer_asr"} <= set(
        TASKS.names()
    )


def test_a_task_by_dotted_path_or_missing_attributes(on_path):
    dm = _custom("my_data.MyData", task="hwnas.tasks.classification.Classification")
    assert type(dm.task()).__name__ == "Classification"
    with pytest.raises(
        ValueError,
        match=r"ExtractiveQA needs \['max_seq_length', 'vocab_size', "
        r"'store'\] but the data module has no such",
    ) as err:
        build_task("extractive_qa", dm)
    assert "\n" not in str(err.value)


def test_a_task_handed_over_in_python_is_used_as_it_is(on_path):
    from hwnas.tasks import register_task_object
    from hwnas.tasks.classification import Classification

    mine = Classification((1, 16, 16), 4)
    dm = _custom("my_data.MyData", task=register_task_object("mine", mine))
    assert dm.task() is mine
    with pytest.raises(ValueError, match=r"no task handed over as 'other'"):
        build_task("python:other", dm)


def test_data_custom_composes_and_the_precheck_names_the_key(on_path):
    cfg = hwnas.compose_config(["data=custom", "data._target_=my_data.MyData", "+data.noise=0.1"])
    assert cfg.data.name == "custom" and cfg.data.task == "image_classification"
    assert precheck(["data=custom", "data._target_=my_data.MyData"]) is None
    assert precheck(["data=custom"]).startswith("data._target_ is not set")
    typo = "data.task=image_clasification"
    line = precheck(["data=custom", "data._target_=my_data.MyData", typo])
    assert "did you mean 'image_classification'" in line


def test_a_task_without_its_data_is_refused():
    with pytest.raises(ValueError, match=r"a task goes with your own data module"):
        hwnas.run(task="classification", output_dir="/tmp/never", overrides=["data=synthetic"])
    with pytest.raises(TypeError, match=r"either cfg or the keyword arguments"):
        hwnas.run(hwnas.compose_config([]), output_dir="/tmp/never")


# ------------------------------------------------------- end to end (slow tier)
def _cli(tmp_path: Path, *overrides: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), str(ROOT / "src")])
    env.pop("HWNAS_DEBUG", None)
    args = [f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    return subprocess.run(
        [sys.executable, "-m", "hwnas", *overrides, *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_user_project_pipeline_through_the_cli(tmp_path):
    done = _cli(tmp_path, *EXPERIMENT, *QUICK, "+data.noise=0.4")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run"
    _finished(out)
    saved = (out / "hwnas_config.yaml").read_text()
    assert "_target_: my_data.MyData" in saved and "noise: 0.4" in saved
    assert json.loads((out / "final" / "arch.json").read_text())["input_shape"] == [1, 16, 16]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]  # nothing elsewhere
    # the user's run, own experiment folder (hydra.searchpath) included, reproduces equal
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT / "src")]))
    cmd = [sys.executable, "-m", "hwnas", "reproduce", str(out),
           f"hydra.run.dir={tmp_path / 'again'}"]  # fmt: skip
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=180)  # fmt: skip
    assert again.returncode == 0 and "equal:" in again.stdout, again.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data._target_=nowhere.Data"], "data._target_='nowhere.Data': cannot import 'nowhere'"),
        (["data._target_=bad_data.DictBatches"], "batches of (inputs, labels); got a dict"),
        (["data.task=speech"], "data.task='speech': unknown task 'speech'"),
    ],
    ids=["unimportable", "dict_batches", "unknown_task"],
)
def test_user_project_bad_inputs_cli_one_error_line(tmp_path, overrides, match):
    done = _cli(tmp_path, *EXPERIMENT, *QUICK, *overrides)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(errors) == 1 and match in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_user_project_pipeline_through_the_python_api(tmp_path, on_path, one_thread, caplog):
    import my_data
    import my_model

    caplog.set_level("INFO", logger="hwnas.data.custom")
    overrides = [*EXPERIMENT, *QUICK, f"paths.cache_dir={tmp_path / 'cache'}"]
    metrics = hwnas.run(model=my_model.build(), datamodule=my_data.MyData(noise=0.4),
                        task="image_classification", overrides=overrides,
                        output_dir=tmp_path / "run")  # fmt: skip
    report = _finished(tmp_path / "run")
    assert metrics["final/test_acc"] == report["deployed_test_acc"]
    saved = (tmp_path / "run" / "hwnas_config.yaml").read_text()
    assert "_target_: python:MyData_" in saved and "source: python:SmallCNN_" in saved
    assert "a rerun elsewhere needs data=custom data._target_=my_data.MyData" in caplog.text
    with pytest.raises(ValueError, match=r"got a dict") as err:
        import bad_data

        hwnas.run(datamodule=bad_data.DictBatches(), overrides=overrides,
                  output_dir=tmp_path / "bad")  # fmt: skip
    assert "\n" not in str(err.value)
