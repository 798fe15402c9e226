"""DE-Score vs SQuAD F1 over random subnets of the elastic BERT space (MiniLM-L6-H384):
Spearman's rho with and without the DE-Score's latency term, beside DE-NAS's published
0.57 / 0.40 on 100 BERT candidates.

Every subnet is exported from the same supernet -- the MiniLM checkpoint (importance
re-ordered), or a trained supernet given with ``--supernet`` (e.g. a
``experiment=squad_minilm`` run's ``supernet/supernet.pt``) -- then fine-tuned for the
same budget (``--steps`` AdamW steps of ``data.batch_size`` windows, linear decay) and
scored by the official SQuAD F1 on the first ``--eval-windows`` windows of the test
split. The DE-Score is computed as the zero-shot stage computes it (the config's proxies
after the embeddings, latency from the config's cost model), normalised over the sampled
population. Writes a CSV (``--out``) with every arch's components, scores and F1.

    make data-squad
    .venv/bin/python benchmarks/bench_bert_descore.py --archs 30 --steps 40 \
        [--supernet outputs/runs/<run>/supernet/supernet.pt] [hydra overrides]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
import time
from pathlib import Path

import numpy as np
import torch
from _squad import ROOT, squad_setup, train_step  # benchmarks/_squad.py (the script's folder)
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from hwnas.hardware.factory import build_cost_model
from hwnas.proxies.descore import DEScore
from hwnas.spaces.base import Arch
from hwnas.training.evaluate import first_samples

DENAS = {"without latency": 0.57, "with latency": 0.40}  # DE-NAS, 100 BERT candidates


def bootstrap_ci(x: np.ndarray, y: np.ndarray, n: int = 2000, seed: int = 0) -> tuple:
    """95 % percentile interval of Spearman's rho over ``n`` resamples of the pairs."""
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(n):
        idx = rng.integers(0, len(x), len(x))
        if len(set(x[idx])) > 1 and len(set(y[idx])) > 1:
            rhos.append(spearmanr(x[idx], y[idx]).statistic)
    return tuple(np.percentile(rhos, [2.5, 97.5]))


def finetune(net: torch.nn.Module, task, loader, steps: int, lr: float) -> float:
    """``steps`` AdamW steps (LR decays linearly to 0); returns the mean training loss."""
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    losses = []
    for batch in itertools.islice(itertools.cycle(loader), steps):
        losses.append(train_step(net, task, batch, opt, sched))
    return float(np.mean(losses))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=30, help="random subnets (plus min and max)")
    ap.add_argument("--steps", type=int, default=40, help="fine-tuning steps per subnet")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-windows", type=int, default=400)
    ap.add_argument("--supernet", type=Path, default=None, help="trained supernet.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_bert_descore.csv")
    ap.add_argument("--rescore", type=Path, default=None,
                    help="CSV of an earlier run: score its archs with the current DE-Score "
                    "and rank them against its F1, without fine-tuning again")  # fmt: skip
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (after the experiment)")
    args = ap.parse_args()
    cfg, dm, task, model = squad_setup(args.overrides)
    if args.supernet is not None:
        model.load_state_dict(torch.load(args.supernet, map_location="cpu", weights_only=True))
        source = f"trained supernet {args.supernet}"
    else:
        model.reorganize_by_importance()
        source = "MiniLM checkpoint, heads/neurons/hidden re-ordered by importance"
    cost_model = build_cost_model(cfg.hardware, model, str(ROOT / cfg.paths.cache_dir))
    descore = DEScore.from_config(OmegaConf.to_container(cfg.proxy, resolve=True))
    inputs = task.proxy_inputs(int(cfg.zero_shot.batch_size), int(cfg.seed), "cpu",
                               shape=model.proxy_shape)  # fmt: skip
    if args.rescore is not None:
        rescore(args, model, cost_model, descore, inputs, int(cfg.seed), source)
        return
    rng = random.Random(int(cfg.seed))
    space = model.space
    archs = [space.max_arch(), space.min_arch()]
    wanted = min(args.archs + 2, space.size())  # a tied-width space may hold fewer
    if wanted < args.archs + 2:
        print(f"the space holds {wanted} archs: scoring every one")
    while len(archs) < wanted:
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    evaluation = first_samples(dm.test_dataloader(), args.eval_windows)
    print(f"{len(archs)} archs of {space.name} from the {source}; {args.steps} steps of "
          f"{dm.batch_size} windows each at lr {args.lr}; F1 on {args.eval_windows} test "
          f"windows; {torch.get_num_threads()} threads")  # fmt: skip
    rows = []
    start = time.perf_counter()
    for i, arch in enumerate(archs):
        t0 = time.perf_counter()
        costs = cost_model(arch)
        sub = model.export(arch)
        raw = descore.components(model.proxy_module(sub), inputs, int(cfg.seed),
                                 costs.get("latency_ms"))  # fmt: skip
        t1 = time.perf_counter()
        loss = finetune(sub, task, dm.train_dataloader(), args.steps, args.lr)
        metrics = task.evaluate(sub, evaluation)
        rows.append({"arch": arch.to_str(), **costs, **raw, "train_loss": loss,
                     "f1": metrics["f1"], "exact_match": metrics["exact_match"]})  # fmt: skip
        print(f"[{i + 1}/{len(archs)}] F1 {metrics['f1']:.4f} EM {metrics['exact_match']:.4f} "
              f"latency {costs['latency_ms']:.2f} ms  proxies {t1 - t0:.1f} s, "
              f"fine-tune+eval {time.perf_counter() - t1:.1f} s", flush=True)  # fmt: skip
    with_lat = descore.combine(rows)
    without = descore.combine(rows, drop=("latency",))
    for r, a, b in zip(rows, with_lat, without, strict=True):
        r["descore"], r["descore_no_latency"] = float(a), float(b)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    f1 = np.array([r["f1"] for r in rows])
    print(f"\n{len(rows)} subnets in {(time.perf_counter() - start) / 60:.1f} min; "
          f"F1 {f1.min():.3f}..{f1.max():.3f}; CSV: {args.out}")  # fmt: skip
    print_table(rows, f1)


def rescore(args, model, cost_model, descore, inputs, seed: int, source: str) -> None:
    """Score the archs of an earlier run's CSV with the current DE-Score; its F1 stays."""
    with args.rescore.open() as fh:
        old = list(csv.DictReader(fh))
    print(f"{len(old)} archs and their F1 from {args.rescore}; proxies on the {source}; "
          f"DE-Score {descore}")  # fmt: skip
    rows = []
    for rec in old:
        arch = Arch.from_str(rec["arch"])
        costs = cost_model(arch)
        sub = model.proxy_module(model.export(arch))
        raw = descore.components(sub, inputs, seed, costs.get("latency_ms"))
        rows.append({**costs, **raw, "f1": float(rec["f1"])})
    for r, a, b in zip(rows, descore.combine(rows), descore.combine(rows, drop=("latency",))):
        r["descore"], r["descore_no_latency"] = float(a), float(b)
    print_table(rows, np.array([r["f1"] for r in rows]), descore)


def print_table(rows: list[dict], f1: np.ndarray, descore: DEScore | None = None) -> None:
    print(f"{'ranking by':<32}{'Spearman rho':>14}{'95% CI':>18}{'DE-NAS':>9}")
    for label, key, ref in (
        ("DE-Score without latency", "descore_no_latency", DENAS["without latency"]),
        ("DE-Score with latency", "descore", DENAS["with latency"]),
        ("FLOPs", "flops_m", None),
        ("params", "params_m", None),
    ):
        x = np.array([r[key] for r in rows])
        rho = spearmanr(x, f1).statistic
        lo, hi = bootstrap_ci(x, f1)
        ref_s = f"{ref:.2f}" if ref is not None else "-"
        print(f"{label:<32}{rho:>14.3f}{f'[{lo:.3f}, {hi:.3f}]':>18}{ref_s:>9}")
    for key, (_, sign) in (descore.terms if descore else {}).items():
        x = sign * np.array([float(r[key]) for r in rows])
        x = np.where(np.isfinite(x), x, -np.inf)
        lo, hi = bootstrap_ci(x, f1)
        term = f"  term {key} ({descore.proxy_for(key) if key != 'latency' else 'ms'})"
        print(f"{term:<46}{spearmanr(x, f1).statistic:>8.3f}{f'[{lo:.3f}, {hi:.3f}]':>18}")


if __name__ == "__main__":
    main()
