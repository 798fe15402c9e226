"""How well does the latency lookup table predict directly measured latency?

Builds the table for the default CNN space (``conf/model/elastic_cnn.yaml`` on the
FashionMNIST shape 1x28x28, 10 classes) with the settings of ``conf/hardware/<hw>.yaml``,
then measures ``--n`` random subnets directly and prints Spearman and MAPE of predicted
vs measured latency (targets: Spearman >= 0.95, MAPE <= 10%) and the build time.

Direct measurements are taken two ways: a single measurement per subnet (what
``latency: measured`` does) and a robust one (``--passes`` interleaved passes, the
smallest median kept), which removes most of the noise of a shared CPU; the single
pass against the robust one shows how noisy the machine is::

    python benchmarks/bench_latency_table.py [--hardware cpu] [--n 100] [--passes 3]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from hwnas.elastic import build_model
from hwnas.hardware import HardwareConfig, build_table, measure_latency

ROOT = Path(__file__).resolve().parents[1]


def default_model(shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10):
    cfg_path = ROOT / "conf" / "model" / "elastic_cnn.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.is_file() else {}
    return build_model({"name": "elastic_cnn", **cfg}, shape, num_classes)


def figures(pred: np.ndarray, meas: np.ndarray) -> str:
    rho = spearmanr(pred, meas)[0]
    mape = float(np.mean(np.abs(pred - meas) / meas))
    return f"Spearman {rho:.3f}  MAPE {100 * mape:5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hardware", default="cpu", help="conf/hardware/<name>.yaml")
    parser.add_argument("--n", type=int, default=100, help="random subnets to measure")
    parser.add_argument("--passes", type=int, default=3, help="passes of the robust measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    hw_cfg = OmegaConf.to_container(
        OmegaConf.load(ROOT / "conf" / "hardware" / f"{args.hardware}.yaml")
    )
    hw = HardwareConfig.from_mapping(hw_cfg)
    model = default_model()
    print(
        f"space {model.space.name} ({model.space.id}), input {model.input_shape}; {hw.setting()}, "
        f"warm-up {hw.warmup}, repeats {hw.repeats}, correction on {hw.correction_samples} networks"
    )

    start = time.perf_counter()
    table = build_table(model, hw, seed=args.seed)
    build_s = time.perf_counter() - start
    print(f"table: {len(table.units)} units, built in {build_s:.1f} s; {table.describe()}")

    rng = random.Random(args.seed + 100)
    archs = []
    while len(archs) < args.n:
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
        f"\n{args.n} random subnets, measured latency {robust.min():.3f} .. {robust.max():.3f} ms "
        f"(robust); table prediction {predict_ms:.2f} ms per arch"
    )
    print(f"  table + correction vs robust measurement : {figures(pred, robust)}")
    print(f"  table + correction vs single measurement : {figures(pred, single)}")
    print(f"  raw sum of units   vs robust measurement : {figures(raw, robust)}")
    print(f"  single measurement vs robust measurement : {figures(single, robust)}  (noise floor)")
    print(f"targets: Spearman >= 0.95, MAPE <= 10%; table build {build_s:.1f} s (target < 20 s)")


if __name__ == "__main__":
    main()
