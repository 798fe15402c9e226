"""Elastic overhead: training-step time of the supernet with its largest arch active
divided by the exported static model's step time (target <= 1.10).

Both run side by side in one process, interleaved, on a model config's default
(``--model``: elastic_cnn or elastic_vit, from ``conf/model/<name>.yaml``) and
FashionMNIST-shaped batches; the median of many steps is compared.

    .venv/bin/python benchmarks/bench_elastic_overhead.py [--batch 128 --steps 30]
    .venv/bin/python benchmarks/bench_elastic_overhead.py --model elastic_vit
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from hwnas.app.config import CONFIG_DIR
from hwnas.elastic import build_model

CONF = CONFIG_DIR


def step_time(net: torch.nn.Module, opt: torch.optim.Optimizer, x, y) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shape", type=int, nargs=3, default=(1, 28, 28))
    ap.add_argument(
        "--model",
        default="elastic_cnn",
        choices=sorted(p.stem for p in (CONF / "model").glob("*.yaml")),
        help="model config under conf/model/",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"model/{args.model}.yaml"))
    supernet = build_model(model_cfg, tuple(args.shape), 10).train()
    arch = supernet.space.max_arch()
    supernet.set_active(arch)
    static = supernet.export(arch).train()
    x = torch.randn(args.batch, *args.shape)
    y = torch.randint(0, 10, (args.batch,))
    nets = {"supernet (largest active)": supernet, "exported static": static}
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-3, momentum=0.9) for k, n in nets.items()}
    times: dict[str, list[float]] = {k: [] for k in nets}
    for k in nets:  # warm-up
        for _ in range(3):
            step_time(nets[k], opts[k], x, y)
    for _ in range(args.steps):
        for k in nets:
            times[k].append(step_time(nets[k], opts[k], x, y))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.model}: batch {args.batch}, input {tuple(args.shape)}, "
        f"{torch.get_num_threads()} threads, "
        f"{args.steps} interleaved steps each"
    )
    for k, v in med.items():
        print(f"  {k:28s} median step {1000 * v:8.2f} ms")
    ratio = med["supernet (largest active)"] / med["exported static"]
    print(f"elastic overhead ratio (supernet / static): {ratio:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
