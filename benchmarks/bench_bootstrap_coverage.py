"""Which torchvision classification models ``hwnas.bootstrap.convert`` turns into a
supernet, and how exactly: every model torchvision lists (random init, nothing
downloaded), converted for a batch of 2 RGB images (64x64; 224x224 for the
transformers and the Inception family), then

- the largest arch against the original model (max |difference| of the outputs),
- the smallest arch exported to plain layers against the supernet with it active,
- the width genes (coupled channel groups that may shrink), depth genes (stages with
  skippable residual blocks), groups kept at full width (the commonest reason), and the
  seconds the conversion took.

A model that does not convert prints its one-line error. Prints a markdown table and a
summary; ``--models resnet18 vgg11`` restricts it.

    .venv/bin/python benchmarks/bench_bootstrap_coverage.py [--models ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
import torchvision

from hwnas.bootstrap import convert

BIG_INPUT = ("vit", "swin", "maxvit", "inception", "googlenet")


def check(name: str) -> dict:
    size = 224 if name.startswith(BIG_INPUT) else 64
    t0 = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        sup = convert(model, x, width_ratios=(0.5, 1.0))
    except ValueError as err:
        return {"model": name, "error": str(err), "s": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    sup.eval()
    with torch.no_grad():
        ref = model(x)
        ref = ref[0] if isinstance(ref, tuple) else ref
        sup.set_active(sup.space.max_arch())
        largest = (sup(x) - ref).abs().max().item()
        small = sup.space.min_arch()
        sup.set_active(small)
        export = (sup.export(small).eval()(x) - sup(x)).abs().max().item()
    fixed = sup.describe()["fixed_groups"][1:]  # the first is the input itself
    reasons = collections.Counter(str(f["reason"]).split(" (")[0] for f in fixed)
    genes = [g.name[0] for g in sup.space.genes]
    return {
        "model": name, "largest_err": largest, "export_err": export,
        "width": genes.count("w"), "depth": genes.count("d"), "fixed": len(fixed),
        "why": reasons.most_common(1)[0][0] if reasons else "", "s": seconds,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models or torchvision.models.list_models(module=torchvision.models)
    rows = []
    print("| model | largest err | export err | width genes | depth genes | kept whole "
          "| commonest reason kept whole | convert s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name in names:
        r = check(name)
        rows.append(r)
        if "error" in r:
            print(f"| {name} | fails: {r['error']} | | | | | | {r['s']:.1f} |", flush=True)
            continue
        print(
            f"| {name} | {r['largest_err']:.1e} | {r['export_err']:.1e} | {r['width']} | "
            f"{r['depth']} | {r['fixed']} | {r['why']} | {r['s']:.1f} |",
            flush=True,
        )
    ok = [r for r in rows if "error" not in r]
    print(
        f"\n{len(ok)} of {len(rows)} convert; largest-arch error at most "
        f"{max((r['largest_err'] for r in ok), default=0):.1e}, export error at most "
        f"{max((r['export_err'] for r in ok), default=0):.1e}; without width genes: "
        f"{', '.join(r['model'] for r in ok if r['width'] == 0) or 'none'}"
    )


if __name__ == "__main__":
    main()
