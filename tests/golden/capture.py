"""Golden outputs of the tiny experiments: what a run computes, flattened to one
``{path: value}`` dict per experiment, so a refactoring can be checked to change
nothing (floats to 1e-9).

Captured per run: ``metrics.json``, every JSON/JSONL/CSV a stage writes (``DONE.json``,
results, pools, histories, Pareto fronts, reports) and, per saved state dict, each
tensor's sum and sum of squares. Values that differ between two identical runs (measured
latencies and wall-clock times) are recorded as volatile and not compared.

    python tests/golden/capture.py            # record tests/golden/*.json (runs each twice)
    python tests/golden/capture.py synthetic_tiny
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # tiny experiments name fixtures relative to the repository
QUANTIZE = "stages=[zero_shot,supernet,search,final,quantize]"
# one runtime: the side-by-side deployment on the other is volatile (measured) anyway
COMPARE_OFF = "quantize.compare=false"
# name -> overrides of `python -m hwnas` (seed 0, one thread)
EXPERIMENTS: dict[str, list[str]] = {
    "synthetic_tiny": ["experiment=synthetic_tiny"],
    "synthetic_tiny_quantize": ["experiment=synthetic_tiny", QUANTIZE, COMPARE_OFF],
    "vit_synthetic_tiny": ["experiment=vit_synthetic_tiny"],
    "squad_tiny": ["experiment=squad_tiny"],
    "asr_tiny": ["experiment=asr_tiny"],
    "bootstrap_tiny": ["experiment=bootstrap_tiny"],
    "bootstrap_tiny_quantize": ["experiment=bootstrap_tiny", QUANTIZE, COMPARE_OFF],
}
# files whose content is not a result: logs, configs with absolute paths, binaries
SKIP_SUFFIXES = {".log", ".yaml", ".png", ".ckpt", ".onnx", ".md", ".txt", ".wav", ".model"}
SKIP_PARTS = {".hydra", "checkpoints", "logs", "logs_largest", "logs_subnet", "corpus"}
# which precision assignments make the quantize stage's front depends on their measured
# ONNX Runtime latencies (timing noise on a busy machine moves them); its chosen model,
# its estimates and the report's figures are compared
MEASURED_FILES = {"quantize/pareto.csv"}
# ... and so does the assignment the stage chooses from that front (the fastest within
# the accuracy budget) with everything computed from it; the sensitivities, the uniform
# INT8 and FP32 baselines and every earlier stage are compared
MEASURED_KEYS = re.compile(
    r"^(latency_table\.json\.correction\."  # how the table's correction is fitted
    r"|metrics\.json\.quantize/|quantize/DONE\.json\.(assignment|metrics|report)"
    r"|quantize/assignment\.json"
    r"|quantize/report\.json\.(chosen|kept_fp32|int8_layers|assignment|estimate|val\.chosen)"
    # the machine, and the other runtime's deployment of them (the chosen one among them)
    r"|quantize/report\.json\.(machine|compare)\."
    # a model card's machine (CPU model and flags), timings, file sizes and paths
    r"|final/card\.json\.(hardware|speed|size_mb|commands)\.)"
)
VOLATILE = "<volatile>"


def run_experiment(name: str, workdir: Path) -> Path:
    """Run experiment ``name`` from the repository root with every artifact (run folder,
    cache, generated data) under ``workdir``; its run folder."""
    out = workdir / "run"
    cmd = [sys.executable, "-m", "hwnas", *EXPERIMENTS[name], "seed=0", "threads=1",
           f"hydra.run.dir={out}", f"paths.cache_dir={workdir / 'cache'}",
           f"paths.data_dir={workdir / 'data'}"]  # fmt: skip
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return out


def _flatten(value: Any, prefix: str, flat: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", flat)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", flat)
    else:
        flat[prefix] = value


def _cell(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _tensor_sums(path: Path, flat: dict[str, Any]) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().double()
            flat[f"{prefix}:sum"] = float(t.sum())
            flat[f"{prefix}:sumsq"] = float((t * t).sum())
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}[{i}]")
        elif isinstance(obj, (int, float, str, bool)) or obj is None:
            flat[prefix] = obj

    walk(state, path.name)


def capture(run_dir: Path) -> dict[str, Any]:
    """Everything ``run_dir`` holds that a run computed, flattened (without what follows
    from measured latencies, :data:`MEASURED_KEYS`)."""
    flat: dict[str, Any] = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or SKIP_PARTS & set(rel.parts) or path.suffix in SKIP_SUFFIXES:
            continue
        if rel.as_posix() in MEASURED_FILES:
            continue
        key = rel.as_posix()
        if path.suffix == ".json":
            _flatten(json.loads(path.read_text()), key, flat)
        elif path.suffix == ".jsonl":
            for i, line in enumerate(path.read_text().splitlines()):
                _flatten(json.loads(line), f"{key}#{i}", flat)
        elif path.suffix == ".csv":
            with path.open() as f:
                for i, row in enumerate(csv.DictReader(f)):
                    for k, v in row.items():
                        flat[f"{key}#{i}.{k}"] = _cell(v)
        elif path.suffix == ".pt":
            _tensor_sums(path, flat)
    return {k: v for k, v in flat.items() if not MEASURED_KEYS.match(k)}


def same(a: Any, b: Any, tol: float = 1e-9) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


def differences(golden: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys where ``now`` differs from ``golden`` (volatile keys skipped)."""
    out = []
    for key in sorted(set(golden) | set(now)):
        g = golden.get(key, "<missing>")
        if g == VOLATILE:
            continue
        if key not in now or not same(g, now[key]):
            out.append(f"{key}: golden {g!r}, now {now.get(key, '<missing>')!r}")
    return out


def record(name: str) -> Path:
    """Run ``name`` twice; keys that differ between the runs are volatile."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        first = capture(run_experiment(name, Path(a)))
        second = capture(run_experiment(name, Path(b)))
    golden = {k: (v if k in second and same(v, second[k]) else VOLATILE)
              for k, v in first.items()}  # fmt: skip
    path = HERE / f"{name}.json"
    path.write_text(json.dumps(golden, indent=0, sort_keys=True) + "\n")
    n_vol = sum(v == VOLATILE for v in golden.values())
    print(f"{name}: {len(golden)} values, {n_vol} volatile -> {path}")
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or list(EXPERIMENTS):
        record(name)
