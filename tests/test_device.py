"""Every stage evaluates on the device the user chose (``trainer.accelerator``, resolved
by :mod:`hwnas.app.device`), and ``trainer.precision=bf16-mixed`` trains on the CPU.

A CPU cannot show a second device, so the pipeline test resolves the run's device to
``cpu:0`` (a CPU device distinct from the default ``cpu``) and records the device that
each evaluation, BN recalibration and evaluator receives while the real code runs on
it: a call site that forgot the device would hand over the default ``cpu``."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from hwnas.app import device as device_mod
from hwnas.app.device import eval_device, evaluate
from hwnas.app.pipeline import run
from hwnas.app.subnet_io import cpu_state_dict
from hwnas.tasks.classification import Classification
from hwnas.training import evaluate as evaluate_mod
from hwnas.training.settings import TrainerSettings, check_trainer_config
from hwnas.training.subnet import SubnetModule
from hwnas.training.supernet import SupernetModule
from tests.conftest import compose_config

TINY = ["experiment=synthetic_tiny", "threads=1", "final.onnx=false"]


def _tiny(out: Path, *overrides: str):
    return compose_config([*TINY, *overrides, f"paths.output_dir={out}",
                           f"paths.cache_dir={out.parent / 'cache'}"])  # fmt: skip


# ------------------------------------------------------------------ the resolver
def test_resolver_follows_the_accelerator(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert eval_device(TrainerSettings(accelerator="auto")) == torch.device("cpu")
    assert eval_device({"accelerator": "cpu"}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert eval_device({"accelerator": "cpu"}) == torch.device("cpu")
    assert eval_device({"accelerator": "auto"}) == torch.device("cuda", 0)
    assert eval_device({"accelerator": "gpu"}) == torch.device("cuda", 0)
    assert eval_device({"accelerator": "cuda", "devices": "2,3"}) == torch.device("cuda", 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a DDP run
    assert eval_device({"accelerator": "gpu", "devices": 2}) == torch.device("cuda", 1)
    assert eval_device({"accelerator": "gpu", "devices": [2, 3]}) == torch.device("cuda", 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_gpu_without_cuda_is_refused_in_one_line():
    with pytest.raises(ValueError, match="no CUDA device is visible") as err:
        check_trainer_config({"accelerator": "gpu"})
    assert "\n" not in str(err.value)


def test_precision_is_checked_in_one_line():
    check_trainer_config({"precision": "bf16-mixed"})
    check_trainer_config({"precision": 16})
    with pytest.raises(ValueError, match=r"trainer.precision='fp16'.*bf16-mixed") as err:
        check_trainer_config({"precision": "fp16"})
    assert "\n" not in str(err.value)


def test_evaluate_leaves_the_network_on_the_cpu():
    task = Classification((4,), 3)
    net = torch.nn.Linear(4, 3)
    loader = [(torch.randn(5, 4), torch.randint(0, 3, (5,)))]
    metrics = evaluate(task, net, loader, torch.device("cpu", 0))
    assert set(metrics) == {"acc", "loss"} and not net.training
    assert all(p.device.type == "cpu" for p in net.parameters())
    # a CPU network's state dict is saved as it is, uncopied (a CPU run writes the same)
    state, saved = net.state_dict(), cpu_state_dict(net)
    assert list(saved) == list(state)
    assert all(saved[k].data_ptr() == v.data_ptr() for k, v in state.items())


# ------------------------------------------------------------------ the pipeline
@pytest.mark.slow
def test_pipeline_evaluates_every_stage_on_the_resolved_device(tmp_path, monkeypatch, caplog):
    chosen = torch.device("cpu", 0)
    monkeypatch.setattr(device_mod, "eval_device", lambda trainer: chosen)
    seen: dict[str, list[torch.device]] = {"evaluator": [], "recalibrate_bn": [], "evaluate": []}

    init = evaluate_mod.SubnetEvaluator.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen["evaluator"].append(torch.device(self.device))

    recalibrate = evaluate_mod.recalibrate_bn

    def recording_recalibrate(module, batches, num_samples, device="cpu"):
        seen["recalibrate_bn"].append(torch.device(device))
        return recalibrate(module, batches, num_samples, device)

    task_evaluate = Classification.evaluate

    def recording_evaluate(self, model, loader, device="cpu"):
        seen["evaluate"].append(torch.device(device))
        return task_evaluate(self, model, loader, device)

    monkeypatch.setattr(evaluate_mod.SubnetEvaluator, "__init__", recording_init)
    monkeypatch.setattr(evaluate_mod, "recalibrate_bn", recording_recalibrate)
    monkeypatch.setattr(Classification, "evaluate", recording_evaluate)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="hwnas"):
        metrics = run(_tiny(out, "trainer.accelerator=cpu", "final.export=front"))
    assert math.isfinite(metrics["final/test_acc"])
    for hook, devices in seen.items():
        assert devices, f"{hook} never ran"
        assert set(devices) == {chosen}, f"{hook} got {sorted(set(map(str, devices)))}"
    # search + final + the front's export, and every test evaluation of the final stage
    assert len(seen["evaluator"]) >= 3 and len(seen["evaluate"]) >= 4
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ")]
    expected = [
        "stage zero_shot: proxies on cpu (zero_shot.device)",
        "stage supernet: phase searches' proxies on cpu (zero_shot.device); "
        "training on cpu:0 (precision 32-true)",
        "stage search: evaluations and BN recalibration on cpu:0",
        "stage final: evaluations on cpu:0; training on cpu:0 (precision 32-true)",
    ]
    assert [line for line in lines if line in expected] == expected, lines
    saved = torch.load(out / "final" / "subnet.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in saved.values())


@pytest.mark.slow
def test_bf16_mixed_pipeline_trains_under_autocast_to_a_finite_result(tmp_path, monkeypatch):
    autocast: dict[str, list[bool]] = {"supernet": [], "final": []}
    for tag, cls in (("supernet", SupernetModule), ("final", SubnetModule)):
        step = cls.training_step

        def recording_step(self, batch, batch_idx, _step=step, _tag=tag):
            autocast[_tag].append(torch.is_autocast_enabled("cpu"))
            return _step(self, batch, batch_idx)

        monkeypatch.setattr(cls, "training_step", recording_step)
    metrics = run(_tiny(tmp_path / "run", "trainer.precision=bf16-mixed"))
    assert autocast["supernet"] and all(autocast["supernet"])
    assert autocast["final"] and all(autocast["final"])
    assert metrics["final/test_acc"] > 0
    assert all(math.isfinite(v) for v in metrics.values()), metrics
