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
    ap.add_argument("--seed", type=int, default=0)
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

    P.score_proxies_report(names, models[0], inputs, args.seed)  # warm-up
    per_proxy: dict[str, list[float]] = {n: [] for n in names}
    all_secs: list[float] = []
    for model in models:
        for _ in range(args.repeats):
            secs, report = timed(
                lambda m=model: P.score_proxies_report(names, m, inputs, args.seed), device
            )
            all_secs.append(secs)
            for n, s in report.seconds.items():
                per_proxy[n].append(s)
            if report.failures:
                print("  failures:", report.failures)
    print("\nper proxy (median ms per candidate; shared passes split evenly):")
    for n in names:
        print(f"  {n:12s} {1e3 * statistics.median(per_proxy[n]):9.1f}")
    all_med = statistics.median(all_secs)
    print(f"\nall {len(names)} proxies: {all_med:.2f} s/candidate = {1 / all_med:.3f} candidates/s")

    scorers = {
        "DE-Score five-part (denas)": P.DEScore.denas(),
        "DE-Score default (+naswot, jacob_cov)": P.DEScore.default(),
    }
    for label, scorer in scorers.items():
        secs = [
            timed(lambda m=m, s=scorer: s.components(m, inputs, args.seed, 1.0), device)[0]
            for m in models
            for _ in range(args.repeats)
        ]
        med = statistics.median(secs)
        print(f"{label}: {med:.2f} s/candidate = {1 / med:.3f} candidates/s "
              f"(terms {scorer.proxies()}; latency supplied, not measured)")  # fmt: skip


if __name__ == "__main__":
    main()
