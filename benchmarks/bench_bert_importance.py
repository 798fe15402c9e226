"""Which heads and FFN units narrower BERT subnets should keep: the official validation F1
that subnets inherit right after the width reorder (no training in between), with the
units sorted by weight magnitude (``supernet.importance=magnitude``) and by the loss
(``supernet.importance=loss``, DynaBERT), side by side on the same subnets.

The network is ``experiment=squad_minilm``'s MiniLM, first fine-tuned for SQuAD as the
demo's first phase does (``--steps`` AdamW steps at ``--lr``, cosine decay), then copied
and reordered both ways. Subnets are drawn (seeded) from the demo's space with FLOPs
between ``--min-flops`` and ``--max-flops`` of the largest's (the region its latency cap
chooses from), plus two that cut one kind of unit only: every layer's heads to the
fewest, and every layer's FFN to the fewest.

    make data-squad
    .venv/bin/python benchmarks/bench_bert_importance.py
    .venv/bin/python benchmarks/bench_bert_importance.py --steps 100 --archs 6
"""

from __future__ import annotations

import argparse
import copy
import itertools
import random
import statistics
import time

import torch
from _squad import adamw, squad_setup, train_step

from hwnas.spaces.base import Arch
from hwnas.training.importance import loss_saliency


def draw_archs(model, count: int, low: float, high: float, seed: int) -> list[tuple[str, Arch]]:
    """``count`` seeded archs with FLOPs in [low, high] of the largest's, then the
    heads-only and FFN-only cuts."""
    space, rng = model.space, random.Random(seed)
    full = model.cost_of(space.max_arch())["flops_m"]
    picked: list[tuple[str, Arch]] = []
    for _ in range(200 * count):
        if len(picked) == count:
            break
        arch = space.sample(rng)
        ratio = model.cost_of(arch)["flops_m"] / full
        if low <= ratio <= high and arch not in (a for _, a in picked):
            picked.append((f"random, {ratio:.2f} of the FLOPs", arch))
    largest, smallest = space.max_arch(), space.min_arch()
    for kind in ("heads", "ffn"):
        cut = {k: (smallest[k] if k.startswith(kind) else v) for k, v in largest.items()}
        ratio = model.cost_of(Arch(cut))["flops_m"] / full
        picked.append((f"every layer's {kind} cut, {ratio:.2f} of the FLOPs", Arch(cut)))
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="teacher fine-tuning steps")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--archs", type=int, default=10, help="random subnets besides the two cuts")
    ap.add_argument("--min-flops", type=float, default=0.5)
    ap.add_argument("--max-flops", type=float, default=0.75)
    ap.add_argument("--samples", type=int, default=256, help="training windows for the loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (after the experiment)")
    args = ap.parse_args()
    if min(args.steps, args.archs, args.samples) < 1 or not 0 < args.min_flops < args.max_flops:
        ap.error("--steps, --archs and --samples must be >= 1, 0 < --min-flops < --max-flops")
    cfg, dm, task, model = squad_setup(args.overrides)
    start = time.perf_counter()
    model.set_active(model.space.max_arch())
    opt, sched = adamw(model, args.lr, args.steps, 0.0)
    train = itertools.chain.from_iterable(dm.train_dataloader() for _ in itertools.count())
    for batch in itertools.islice(train, args.steps):
        train_step(model, task, batch, opt, sched)
    model.eval()
    val = list(dm.val_dataloader())
    teacher_s = time.perf_counter() - start

    by_magnitude = copy.deepcopy(model)
    by_magnitude.reorganize_by_importance()
    by_loss = copy.deepcopy(model)
    t0 = time.perf_counter()
    saliency = loss_saliency(by_loss, task, dm.calibration_loader(args.samples))
    loss_s = time.perf_counter() - t0
    by_loss.reorganize_by_importance(saliency)

    def f1(net, arch) -> float:
        with torch.no_grad():
            return task.evaluate(net.export(arch).eval(), val)["f1"]

    full_f1 = f1(model, model.space.max_arch())
    print(f"MiniLM fine-tuned {args.steps} steps of {dm.batch_size} windows at lr {args.lr:g} "
          f"({teacher_s / 60:.1f} min); largest subnet validation F1 {100 * full_f1:.1f} "
          f"({dm.data_val.questions()} questions); loss-based importance on {args.samples} "
          f"training windows in {loss_s:.0f} s; {torch.get_num_threads()} threads\n")  # fmt: skip
    print("| subnet | arch | F1, by magnitude | F1, by loss | loss - magnitude |")
    print("|---|---|---|---|---|")
    diffs = []
    for label, arch in draw_archs(model, args.archs, args.min_flops, args.max_flops, args.seed):
        m, s = f1(by_magnitude, arch), f1(by_loss, arch)
        diffs.append(100 * (s - m))
        print(f"| {label} | `{arch.to_str()}` | {100 * m:.1f} | {100 * s:.1f} | "
              f"{diffs[-1]:+.1f} |", flush=True)  # fmt: skip
    wins = sum(d > 0 for d in diffs)
    print(f"\nloss - magnitude over {len(diffs)} subnets: mean {statistics.mean(diffs):+.1f} F1, "
          f"median {statistics.median(diffs):+.1f}, loss ahead on {wins}; "
          f"{(time.perf_counter() - start) / 60:.1f} min in all")  # fmt: skip


if __name__ == "__main__":
    main()
