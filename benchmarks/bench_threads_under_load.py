"""How the pipeline's two heavy workloads degrade when other processes load the CPU,
for each thread setting: supernet training steps (the default model, batch 128,
sandwich of 4 subnets) and zero-shot DE-Score scoring (the shipped DE-Score).

Each cell runs in a fresh process (thread pools are set up once per process) beside
``--hogs`` busy-looping processes, and prints seconds and the slowdown against the same
setting on an idle machine. ``auto`` is what ``threads: auto`` picks (cores not busy at
start-up, here: the CPU count minus the hogs); ``2+passive`` is 2 threads with
``OMP_WAIT_POLICY=PASSIVE``; ``2+spin10k`` is 2 threads with ``GOMP_SPINCOUNT=10000``.

    .venv/bin/python benchmarks/bench_threads_under_load.py [--steps 12] [--candidates 12]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "1": ("1", {}),
    "2": ("2", {}),
    "2+passive": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2+spin10k": ("2", {"GOMP_SPINCOUNT": "10000"}),
    "auto": ("auto", {}),
    "auto+passive": ("auto", {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def _hog() -> None:
    while True:
        pass


def worker(threads: str, steps: int, candidates: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hwnas.app.config import CONFIG_DIR
    from hwnas.core.runtime import resolve_threads
    from hwnas.elastic import build_model
    from hwnas.proxies import gaussian_inputs
    from hwnas.proxies.descore import DEScore

    n = resolve_threads(threads)
    torch.set_num_threads(n)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["paths.output_dir=/tmp"])
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    rng = random.Random(0)
    archs = [model.space.max_arch(), model.space.min_arch()]
    archs += [model.space.sample(rng) for _ in range(2)]
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        for a in archs:
            model.set_active(a)
            F.cross_entropy(model(x), y).backward()
        opt.step()
    train = time.perf_counter() - t0
    descore = DEScore.from_config(OmegaConf.to_container(cfg.proxy, resolve=True))
    inputs = gaussian_inputs((1, 28, 28), int(cfg.zero_shot.batch_size), 10, 0)
    cands = [model.space.sample(rng) for _ in range(candidates)]
    t0 = time.perf_counter()
    for a in cands:
        descore.components(model.export(a), inputs, 0, 1.0)
    score = time.perf_counter() - t0
    return {"threads": n, "train_s": train, "zero_shot_s": score}


def cell(setting: str, hogs: int, steps: int, candidates: int) -> dict[str, float]:
    threads, env = SETTINGS[setting]
    if threads == "auto":
        # what threads=auto picks once the load has been there for a minute (the load
        # average lags); the cell itself is too short for the average to catch up
        threads = str(max(1, (os.cpu_count() or 1) - hogs))
    procs = [mp.Process(target=_hog, daemon=True) for _ in range(hogs)]
    for p in procs:
        p.start()
    time.sleep(1.0 if hogs else 0.0)
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                threads,
                "--steps",
                str(steps),
                "--candidates",
                str(candidates),
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        for p in procs:
            p.terminate()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--candidates", type=int, default=12)
    ap.add_argument("--hogs", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.candidates)))
        return
    print(
        f"{os.cpu_count()} CPUs; {args.steps} sandwich steps (batch 128), "
        f"{args.candidates} DE-Score candidates per cell"
    )
    idle: dict[str, dict[str, float]] = {}
    print(
        f"{'setting':>10} {'hogs':>4} {'thr':>3} {'train s':>8} {'x idle':>7} "
        f"{'zero-shot s':>11} {'x idle':>7}"
    )
    for hogs in args.hogs:
        for setting in args.settings:
            r = cell(setting, hogs, args.steps, args.candidates)
            base = idle.setdefault(setting, r) if hogs == 0 else idle.get(setting, r)
            print(
                f"{setting:>10} {hogs:>4} {int(r['threads']):>3} {r['train_s']:8.2f} "
                f"{r['train_s'] / base['train_s']:7.2f} {r['zero_shot_s']:11.2f} "
                f"{r['zero_shot_s'] / base['zero_shot_s']:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
