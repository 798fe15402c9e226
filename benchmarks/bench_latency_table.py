"""How well does the latency lookup table predict directly measured latency?

Builds the table for a search space on the FashionMNIST shape (1x28x28, 10 classes)
with the settings of ``conf/hardware/<hw>.yaml``, then measures ``--n`` random subnets
directly and prints Spearman and MAPE of predicted vs measured latency (targets:
Spearman >= 0.95, MAPE <= 10%) and the build time. ``--model elastic_cnn`` (default)
is the default config's CNN (``conf/model/elastic_cnn.yaml``); ``--model elastic_vit``
is the ViT of ``experiment=vit_fashion_mnist`` with ``--patch-size`` (default 7, as
there). Further Hydra overrides are passed through (e.g. ``hardware.threads=2``).

Direct measurements are taken two ways: a single measurement per subnet (what
``latency: measured`` does) and a robust one (``--passes`` interleaved passes, the
smallest median kept), which removes most of the noise of a shared CPU; the single
pass against the robust one shows how noisy the machine is::

    python benchmarks/bench_latency_table.py [--model elastic_vit] [--hardware cpu]
        [--n 100] [--passes 3] [--rounds 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from scipy.stats import spearmanr

from hwnas.app.config import CONFIG_DIR
from hwnas.app.profile import BENCH_MODELS, model_from_config, model_overrides
from hwnas.hardware.factory import HardwareConfig, build_table
from hwnas.hardware.latency import measure_latency

ROOT = Path(__file__).resolve().parents[1]
MODELS = BENCH_MODELS


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, "paths.output_dir=/tmp"])


def figures(pred: np.ndarray, meas: np.ndarray) -> str:
    rho = spearmanr(pred, meas)[0]
    mape = float(np.mean(np.abs(pred - meas) / meas))
    return f"Spearman {rho:.3f}  MAPE {100 * mape:5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="elastic_cnn")
    parser.add_argument("--patch-size", type=int, default=7, help="ViT patch side")
    parser.add_argument("--hardware", default="cpu", help="conf/hardware/<name>.yaml")
    parser.add_argument(
        "--n", "--samples", type=int, default=100, dest="n", help="random subnets to measure"
    )
    parser.add_argument("--passes", type=int, default=3, help="passes of the robust measurement")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per table unit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. hardware.threads=2")
    args = parser.parse_args()

    cfg = compose_config(
        [*model_overrides(args.model, args.patch_size), f"hardware={args.hardware}",
         *args.overrides]
    )  # fmt: skip
    hw = HardwareConfig.from_mapping(cfg.hardware)
    model = model_from_config(cfg)
    print(
        f"space {model.space.name} ({model.space.id}), input {model.input_shape}; {hw.setting()}, "
        f"warm-up {hw.warmup}, repeats {hw.repeats}, correction on {hw.correction_samples} networks"
    )

    start = time.perf_counter()
    table = build_table(model, hw, seed=args.seed, rounds=args.rounds)
    build_s = time.perf_counter() - start
    print(f"table: {len(table.units)} units, built in {build_s:.1f} s; {table.describe()}")

    rng = random.Random(args.seed + 100)
    archs: list = []
    for _ in range(1000 * args.n):  # distinct archs (fewer if the space is smaller)
        if len(archs) >= args.n:
            break
        arch = model.space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    start = time.perf_counter()
    pred = np.array([table.predict(model, a) for a in archs])
    raw = np.array([table.raw_ms(model, a) for a in archs])
    predict_ms = 1e3 * (time.perf_counter() - start) / len(archs)
    subnets = [model.export(a) for a in archs]
    passes = np.array(
        [
            [measure_latency(s, tuple(model.input_shape), **hw.measure_kwargs()).median_ms
             for s in subnets]
            for _ in range(args.passes)
        ]
    )  # fmt: skip
    single, robust = passes[0], passes.min(axis=0)

    print(
        f"\n{len(archs)} random subnets, measured latency {robust.min():.3f} .. "
        f"{robust.max():.3f} ms (robust); table prediction {predict_ms:.2f} ms per arch"
    )
    print(f"  table + correction vs robust measurement : {figures(pred, robust)}")
    print(f"  table + correction vs single measurement : {figures(pred, single)}")
    print(f"  raw sum of units   vs robust measurement : {figures(raw, robust)}")
    print(f"  single measurement vs robust measurement : {figures(single, robust)}  (noise floor)")
    print(f"targets: Spearman >= 0.95, MAPE <= 10%; table build {build_s:.1f} s (target < 20 s)")


if __name__ == "__main__":
    main()
