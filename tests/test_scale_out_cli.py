"""The command lines the README gives for several processes: torchrun, and Hydra's
joblib and submitit launchers for parallel sweeps (#14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("HWNAS_DEBUG", None)
TINY = ["experiment=synthetic_tiny", "threads=1", "progress=log"]


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    return text


def test_torchrun_starts_every_rank_and_the_run_finishes(tmp_path):
    """torchrun starts both processes at once: rank 1 waits for rank zero's zero-shot
    stage, joins the trainings and writes nothing; rank zero writes the report."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    out = tmp_path / "run"
    text = _run([torchrun, "--nproc-per-node", "2", "-m", "hwnas", *TINY, "final.onnx=false",
                 "supernet.limit_train_batches=1.0", "final.limit_train_batches=1.0",
                 "trainer.strategy=ddp", "trainer.devices=2", f"hydra.run.dir={out}",
                 f"paths.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    assert "rank 1: joins the trainings" in text
    assert (out / "final" / "report.json").is_file()
    assert text.count("stage zero_shot: starting") == 1


def test_sweeps_run_in_parallel_with_hydras_launchers(tmp_path):
    for launcher in ("joblib", "submitit_local"):
        sweep = tmp_path / launcher
        _run([sys.executable, "-m", "hwnas", "-m", *TINY, "stages=[zero_shot]", "seed=0,1",
              f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}",
              f"paths.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
        done = sorted(sweep.glob("*/zero_shot/DONE.json"))
        assert len(done) == 2, (launcher, done)
        assert done[0].read_text() != done[1].read_text()  # two seeds, two searches
