"""Quality of the train-free proxies on NAS-Bench-201: the correlation harness on a
NASLib-style table (arch, val_accuracy, NASLib's own proxy columns).

Runs ``hwnas.correlate`` (the Python API of ``python -m hwnas.correlate``) over the
rows of one dataset with every registered proxy, the shipped DE-Score and variants
(five-part DE-NAS, the default with z-scores of logs, a rank sum of synflow +
jacob_cov + snip), then reports again over the same journal (no rescoring) with FLOPs
standing in for latency in the DE-Score penalty. Prints, per proxy, Spearman with
accuracy, Spearman with NASLib's column of the same proxy, and the DE-Score target.
Scores are journalled under ``--out``; rerunning resumes. Not a test.

    python benchmarks/bench_nb201_proxies.py --csv ../shared/data/nb201_dev.csv \
        --dataset cifar10 --out outputs/nb201_c10 [--n 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hwnas.correlate import run_correlation
from hwnas.correlate_io import to_markdown

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.82
# Abdelfattah et al. (ICLR'21), NB-201 CIFAR-10, all 15,625 archs; NASWOT: Mellor et al.
PUBLISHED = {"synflow": 0.737, "jacob_cov": 0.731, "snip": 0.596, "grad_norm": 0.594,
             "grasp": 0.514, "fisher": 0.36, "naswot": 0.78}  # fmt: skip
# DE-Score variants beside the primary one (conf/proxy/descore.yaml) and conf's denas
VARIANTS = {
    "zlog": {"weights": dict.fromkeys(("expressivity", "complexity", "diversity",
                                       "saliency", "latency"), 1.0), "normalize": "zlog",
             "extra": {"naswot": 1.0, "jacob_cov": 1.0}},
    "ranksum3": {"weights": {"saliency": 1.0}, "extra": {"jacob_cov": 1.0, "snip": 1.0}},
}  # fmt: skip
CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(ROOT.parent / "shared" / "data" / "nb201_dev.csv"))
    ap.add_argument("--dataset", default="cifar10", help="value of the CSV's dataset column")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "nb201_c10"))
    ap.add_argument("--n", type=int, default=None, help="seeded sample of n archs (all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("extra", nargs="*", help="further harness overrides (key=value)")
    return ap.parse_args()


def harness_config(args: argparse.Namespace, out: Path, *more: str):
    overrides = [
        f"csv_path={args.csv}", "accuracy_column=val_accuracy",
        f"+filter.dataset={args.dataset}", f"batch_size={args.batch_size}",
        f"num_threads={args.threads}", f"bootstrap={args.bootstrap}",
        f"device={args.device}", f"seed={args.seed}", f"output_dir={out}",
        f"num_classes={CLASSES.get(args.dataset, 10)}",
        *([f"n={args.n}"] if args.n else []), *args.extra, *more,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("correlate", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.variants = OmegaConf.merge(cfg.get("variants") or {}, VARIANTS)
    return cfg


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not Path(args.csv).is_file():
        raise SystemExit(f"--csv {args.csv} not found; pass the NASLib-style NB-201 table")
    out = Path(args.out)
    run_correlation(harness_config(args, out))
    flops_out = out / "latency_flops"
    run_correlation(harness_config(args, flops_out, "latency_proxy=flops", f"resume_from={out}"))

    corr = pd.read_csv(out / "correlations.csv").set_index("proxy")
    agree = pd.read_csv(out / "agreement.csv").set_index("proxy")
    rows = []
    for name, r in corr.iterrows():
        ref = agree.loc[name] if name in agree.index else None
        rows.append({
            "proxy": name, "sign": r["sign"], "n": int(r["n"]), "failures": int(r["failures"]),
            "spearman": f"{r.spearman:.3f} [{r.spearman_lo:.3f}, {r.spearman_hi:.3f}]",
            "kendall": r["kendall"], "spearman_all": r["spearman_all"],
            "naslib_vs_acc": None if ref is None else ref["reference_vs_accuracy"],
            "ours_vs_naslib": None if ref is None else ref["spearman_vs_reference"],
            "published": PUBLISHED.get(name), "ms_per_arch": r["ms_per_arch"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    print(f"\n{args.dataset}: {int(corr['n'].max())} archs, batch {args.batch_size}, "
          f"inputs from the harness config, seed {args.seed}\n")  # fmt: skip
    print(to_markdown(table))
    lat = pd.read_csv(flops_out / "correlations.csv").set_index("proxy")
    cols = [c for c in lat.index if c.startswith("descore")]
    print("DE-Scores with FLOPs standing in for latency (penalty weight 1):")
    print(to_markdown(lat.loc[cols, ["n", "spearman", "kendall"]].reset_index()))
    rho = float(corr.loc["descore", "spearman"])
    verdict = "meets" if rho >= TARGET else "MISSES"
    print(f"shipped DE-Score (DEScore.default()): Spearman {rho:.3f} {verdict} target {TARGET}")
    print(f"five-part DE-NAS (proxy=denas): Spearman {corr.loc['descore_denas', 'spearman']:.3f}")


if __name__ == "__main__":
    main()
