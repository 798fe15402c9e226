"""Speed of the train-free proxies on NAS-Bench-201 networks, in candidates per second.

Scores a few NB-201 archs (C=16, N=5, CIFAR-10 input, Gaussian batch) with every
registered proxy (shared passes, as the correlation harness does), then with the
DE-Score terms only (five-part DE-NAS and the shipped default), on the CPU with a
fixed number of threads (default 2) or on CUDA. Prints per-proxy milliseconds and
candidates/second (median over archs and repeats). Not a test: figures depend on the
machine and its load.

    python benchmarks/bench_proxies.py [--threads 2] [--batch-size 32] [--archs 4]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import hwnas.proxies as P
from hwnas.spaces.nb201 import build_nb201, nb201_space


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, default=32, help="proxy batch size")
    ap.add_argument("--archs", type=int, default=4, help="random NB-201 archs to time")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per arch")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--seed", type=int, default=0, help="arch sample, weights and batch")
    return ap.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, synchronising CUDA around it."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main() -> None:
    args = parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but CUDA is not available; use --device cpu")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    space = nb201_space()
    archs = [space.sample(rng) for _ in range(args.archs)]
    models = [build_nb201(a, seed=args.seed).to(device) for a in archs]
    inputs = P.gaussian_inputs((3, 32, 32), args.batch_size, 10, args.seed, device)
    names = P.list_proxies()
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"archs={len(archs)} repeats={args.repeats} (NB-201 C=16 N=5, 32x32)")  # fmt: skip

    scorers = {"denas": P.DEScore.denas(), "default": P.DEScore.default()}
    P.score_proxies_report(names, models[0], inputs, args.seed)  # warm-up
    per_proxy: dict[str, list[float]] = {n: [] for n in names}
    secs: dict[str, list[float]] = {"all": [], **{k: [] for k in scorers}}
    # interleaved, so a burst of load from elsewhere hits every figure alike
    for model in models:
        for _ in range(args.repeats):
            t, report = timed(lambda m=model: P.score_proxies_report(names, m, inputs, 0), device)
            secs["all"].append(t)
            for n, s in report.seconds.items():
                per_proxy[n].append(s)
            if report.failures:
                print("  failures:", report.failures)
            for key, sc in scorers.items():
                secs[key].append(timed(lambda m=model, s=sc: s.components(m, inputs, 0, 1.0),
                                       device)[0])  # fmt: skip
    print("\nper proxy (median ms per candidate; a shared pass is split evenly):")
    for n in names:
        print(f"  {n:12s} {1e3 * statistics.median(per_proxy[n]):9.1f}")
    med = {k: statistics.median(v) for k, v in secs.items()}
    print(f"\nall {len(names)} proxies: {med['all']:.2f} s/candidate = "
          f"{1 / med['all']:.3f} candidates/s")  # fmt: skip
    for key, sc in scorers.items():
        print(f"DE-Score {key} ({', '.join(sc.proxies())}; latency given): {med[key]:.2f} "
              f"s/candidate = {1 / med[key]:.3f} candidates/s")  # fmt: skip


if __name__ == "__main__":
    main()
