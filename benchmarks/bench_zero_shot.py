"""Zero-shot scoring rate: candidates per second for the configured DE-Score (the shipped
one: AZ-NAS's terms, FLOPs, NASWOT + latency), with the time of each part alone.
Target: >= 10 candidates/s on 2 CPU cores (CNN space); the whole stage, idle and under
load, is benchmarks/bench_zero_shot_stage.py.

Uses the config's model, proxy batch (the task's data-free proxy inputs) and hardware
cost model (latency from the lookup table, built into outputs/cache on first use),
exactly as the pipeline does. ``--model elastic_cnn`` (default) is the default
config's CNN; ``--model elastic_vit`` composes ``experiment=vit_fashion_mnist`` (its
ViT, with ``--patch-size``, default 7 as there).

    .venv/bin/python benchmarks/bench_zero_shot.py [--model elastic_vit] [--candidates 40]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hwnas.app.config import CONFIG_DIR
from hwnas.app.profile import BENCH_MODELS, model_overrides
from hwnas.data import build_datamodule
from hwnas.elastic import build_model
from hwnas.hardware.factory import build_cost_model
from hwnas.proxies.base import score_proxy
from hwnas.proxies.descore import DEScore
from hwnas.search.objectives import ZeroShotObjective

ROOT = Path(__file__).resolve().parents[1]
MODELS = BENCH_MODELS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="elastic_cnn")
    ap.add_argument("--patch-size", type=int, default=7, help="ViT patch side")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. zero_shot.batch_size=32")
    args = ap.parse_args()
    overrides = [*model_overrides(args.model, args.patch_size), *args.overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "paths.output_dir=/tmp"])
    dm = build_datamodule(cfg.data)  # shape and classes only: nothing is loaded
    shape = tuple(dm.input_shape)
    model = build_model(cfg.model, shape, dm.num_classes)
    t0 = time.perf_counter()
    cost_model = build_cost_model(cfg.hardware, model, str(ROOT / cfg.paths.cache_dir))
    print(f"cost model ready in {time.perf_counter() - t0:.1f} s: {cost_model.describe()}")
    descore = DEScore.from_config(OmegaConf.to_container(cfg.proxy, resolve=True))
    inputs = dm.task().proxy_inputs(int(cfg.zero_shot.batch_size), 0, "cpu")
    rng = random.Random(0)
    archs = [model.space.sample(rng) for _ in range(args.candidates)]
    proxies = descore.proxies()  # each timed alone (a shared pass is split in the combined run)
    parts: dict[str, list[float]] = {p: [] for p in ["export", *proxies, "latency"]}
    wall = time.perf_counter()
    for arch in archs:
        t = time.perf_counter()
        sub = model.export(arch)
        parts["export"].append(time.perf_counter() - t)
        for p in proxies:
            t = time.perf_counter()
            score_proxy(p, sub, inputs, seed=0)
            parts[p].append(time.perf_counter() - t)
        t = time.perf_counter()
        cost_model(arch)
        parts["latency"].append(time.perf_counter() - t)
    parts_total = time.perf_counter() - wall
    # the same candidates through the zero-shot stage's objective, as the search calls it
    # (shared passes, FLOPs from the cost model, the exported subnet handed over)
    objective = ZeroShotObjective(model, descore, inputs, cost_model, seed=0)
    wall = time.perf_counter()
    objective.measure(archs)
    combined = time.perf_counter() - wall
    print(
        f"{args.candidates} random archs of {model.space.name}, proxy batch "
        f"{inputs.x.shape[0]}, {torch.get_num_threads()} threads"
    )
    for k, v in parts.items():
        print(
            f"  {k:10s} mean {1000 * statistics.mean(v):7.2f} ms  "
            f"median {1000 * statistics.median(v):7.2f} ms"
        )
    print(f"per part, summed: {args.candidates / parts_total:.2f} candidates/s")
    print(
        f"DE-Score (the zero-shot objective: shared passes, cached latency, cost-model FLOPs): "
        f"{args.candidates / combined:.2f} candidates/s  (target >= 10; the discontinued "
        "reference needed 4-7 s per candidate)"
    )


if __name__ == "__main__":
    main()
