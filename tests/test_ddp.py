"""Training with several processes (DDP on CPU, gloo): supernet equivalence, synchronised
batch norms, and the whole pipeline with 2 processes (#14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.elastic import syncbn

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("HWNAS_DEBUG", None)


def _train(out: Path, devices: int, batch: int) -> None:
    cmd = [sys.executable, str(ROOT / "tests" / "ddp_supernet.py"), str(out), str(devices),
           str(batch)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_train_a_supernet_as_one_with_the_doubled_batch(tmp_path):
    """Two progressive-shrinking phases (largest, then kernel+depth with the sandwich
    rule and in-place distillation) on 2 processes at batch 16: both ranks end with
    identical weights, equal to 1 process at batch 32 within 1e-10 (float64; the
    elastic and plain batch norms use the global batch's statistics)."""
    _train(tmp_path / "two", 2, 16)
    _train(tmp_path / "one", 1, 32)
    r0, r1 = (torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    assert (tmp_path / "two" / "steps.txt").read_text() == "8"
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    worst = max((r0[k] - one[k]).abs().max().item() for k in r0 if r0[k].is_floating_point())
    assert worst < 1e-10, worst
    # the weights did move (and the kernel transforms, trained in phase 2 only)
    eye = {k: torch.eye(len(v), dtype=v.dtype) for k, v in r0.items() if "transforms" in k}
    assert eye and all(not torch.allclose(r0[k], e) for k, e in eye.items())


def test_a_loss_that_diverges_on_one_process_stops_every_process(tmp_path):
    """Rank 1's loss alone turns NaN at step 2: both processes stop there with the one
    line (rank 1: its loss; rank 0: another process's), none waits for the other."""
    cmd = [sys.executable, str(ROOT / "tests" / "ddp_supernet.py"), str(tmp_path), "2", "16",
           "1"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "the training loss is nan" in done.stderr, done.stderr[-3000:]
    assert "the training loss of another process is not finite" in done.stderr
    assert not list(tmp_path.glob("rank*.pt"))


def test_synchronised_batch_norm_is_plain_batch_norm_in_one_process():
    x = torch.randn(6, 4, 5, 5)
    bn = nn.BatchNorm2d(4)
    ref = nn.BatchNorm2d(4)
    with syncbn.plain_batch_norms_synced(bn), syncbn.synchronised():
        assert type(bn).__name__ == "SyncedBatchNorm2d"
        out = bn(x)
    assert type(bn) is nn.BatchNorm2d  # the class is restored
    torch.testing.assert_close(out, ref(x))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    got = syncbn.batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    torch.testing.assert_close(got, F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [sys.executable, "-m", "hwnas", "experiment=synthetic_tiny", "threads=1",
           "progress=log", "final.onnx=false", "supernet.limit_train_batches=1.0",
           "final.limit_train_batches=1.0", "trainer.strategy=ddp", "trainer.devices=2",
           f"hydra.run.dir={out}", f"paths.cache_dir={out.parent / 'cache'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    return out, done


def test_the_pipeline_runs_with_two_processes(ddp_run):
    """``trainer.strategy=ddp trainer.devices=2``: Lightning starts a second process;
    it joins the supernet and final trainings, rank zero alone searches (between the
    phases too) and writes, and the run finishes with its report."""
    out, done = ddp_run
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "rank 1: joins the trainings" in text
    report = json.loads((out / "final" / "report.json").read_text())
    assert report and (out / "final" / "subnet.pt").is_file()
    assert (out / "supernet" / "supernet.pt").is_file()
    # one between-phase search per elastic phase, run once (rank zero), its log line once
    for phase in ("phase1_kernel", "phase2_depth", "phase3_width"):
        assert (out / "supernet" / phase / "pool.json").is_file()
        assert text.count(f"({phase.split('_')[1]}): zero-shot search over") == 1
    # both processes trained: rank 1 logged its own epochs (the same validation numbers)
    epochs = [line for line in text.splitlines() if "supernet: epoch 4/4 done" in line]
    assert len(epochs) == 2
    val = {line.split("val/acc_largest ")[1].split(",")[0] for line in epochs}
    assert len(val) == 1
