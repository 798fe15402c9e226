"""How fast the MiniLM teacher learns SQuAD: the official validation F1 of the largest
subnet of ``experiment=squad_minilm`` every ``--every`` AdamW steps of ``data.batch_size``
windows (warm-up then cosine decay over ``--steps``), for one training setting.

Compare settings by running it once per setting, e.g. with and without the training
windows that miss their answer (the figures in the README):

    make data-squad
    .venv/bin/python benchmarks/bench_squad_teacher.py --lr 1e-4 data.no_answer_windows=1.0
    .venv/bin/python benchmarks/bench_squad_teacher.py --lr 1e-4 data.no_answer_windows=0.0
    .venv/bin/python benchmarks/bench_squad_teacher.py --lr 2e-4 --warmup 0.1 \\
        data.no_answer_windows=0.0
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator

import torch
from _squad import adamw, squad_setup, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=50, help="validate every this many steps")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=float, default=0.0, help="fraction of the steps")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (after the experiment)")
    args = ap.parse_args()
    if args.steps < 1 or args.every < 1 or not 0.0 <= args.warmup < 1.0:
        ap.error("--steps and --every must be >= 1 and --warmup in [0, 1)")
    _, dm, task, model = squad_setup(args.overrides)
    net = model.export(model.space.max_arch())
    val = list(dm.val_dataloader())
    opt, sched = adamw(net, args.lr, args.steps, args.warmup)

    def batches() -> Iterator[dict]:
        while True:  # a new seeded order every pass
            yield from dm.train_dataloader()

    print(f"largest subnet, {args.steps} steps of {dm.batch_size} windows ({len(dm.data_train)} "
          f"training windows, data.no_answer_windows={dm.no_answer_windows:g}), lr {args.lr}, "
          f"warm-up {args.warmup:g}; {torch.get_num_threads()} threads")  # fmt: skip
    start, losses = time.perf_counter(), []
    for step, batch in enumerate(itertools.islice(batches(), args.steps), start=1):
        losses.append(train_step(net, task, batch, opt, sched))
        if step % args.every == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                metrics = task.evaluate(net, val)
            recent = losses[-args.every :]
            print(f"step {step}: train loss {sum(recent) / len(recent):.3f}, val F1 "
                  f"{metrics['f1']:.4f} EM {metrics['exact_match']:.4f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
