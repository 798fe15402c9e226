"""Quality of the train-free proxies on NAS-Bench-201: the correlation harness on a
NASLib-style table (arch, val_accuracy, NASLib's own proxy columns).

Runs ``hwnas.app.correlate`` (the Python API of ``python -m hwnas.correlate``) over the rows
of each dataset (``--dataset cifar10 cifar100 ImageNet16-120``; ImageNet16-120 networks
see 16x16 inputs and 120 classes, as NB-201 trained them) with every registered proxy
but the slow ones (``--exclude``, default grasp, a Hessian-vector product, and VKDNW,
one backward per class and sample), the shipped DE-Score and its named variants:
DE-NAS's five components rank-normalised (``denas_rank``) and DE-NAS's own formula on
raw values (``denas_reference``), AZ-NAS's four terms alone (``aznas``), and the shipped
terms with linear ranks instead of log-ranks (``default_linear``), and the per-domain
transformer assembly (``transformer``: ``proxy=descore_transformer``). It then reports again
over the same journal (no rescoring) with FLOPs standing in for latency in the DE-Score
penalty. Prints, per dataset and proxy, Spearman with accuracy (95 % CI), Spearman with
NASLib's column of the same proxy, and the DE-Score target; then one summary table over
the datasets. Scores are journalled under ``--out/<dataset>``; rerunning resumes (a
proxy added later is scored alone). Not a test.

    python benchmarks/bench_nb201_proxies.py --dataset cifar10 cifar100 ImageNet16-120 \
        --out outputs/nb201 [--n 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hwnas.app.config import CONFIG_DIR
from hwnas.app.correlate import run_correlation
from hwnas.app.correlate_io import to_markdown

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.90
# Abdelfattah et al. (ICLR'21), NB-201 CIFAR-10, all 15,625 archs; NASWOT: Mellor et al.;
# AZ-NAS (Lee & Ham, CVPR'24): its aggregate over all archs
PUBLISHED = {"synflow": 0.737, "jacob_cov": 0.731, "snip": 0.596, "grad_norm": 0.594,
             "grasp": 0.514, "fisher": 0.36, "naswot": 0.78}  # fmt: skip
AZ_TERMS = {"az_progressivity": 1.0, "az_trainability": 1.0}
VARIANTS = {
    "aznas": {"weights": {"expressivity": 1.0, "complexity": 1.0}, "normalize": "logrank",
              "proxies": {"expressivity": "az_expressivity", "complexity": "flops"},
              "extra": AZ_TERMS},
    "default_linear": {"weights": {"expressivity": 1.0, "complexity": 1.0}, "normalize": "rank",
                       "proxies": {"expressivity": "az_expressivity", "complexity": "flops"},
                       "extra": {**AZ_TERMS, "naswot": 1.0}},
}  # fmt: skip
CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
SHAPES = {"ImageNet16-120": [3, 16, 16]}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(ROOT.parent / "shared" / "data" / "nb201_dev.csv"))
    ap.add_argument("--dataset", nargs="+", default=["cifar10"],
                    help="values of the CSV's dataset column (one run each)")  # fmt: skip
    ap.add_argument("--out", default=str(ROOT / "outputs" / "nb201"), help="one dir per dataset")
    ap.add_argument("--exclude", nargs="*", default=["grasp", "vkdnw", "vkdnw_single"],
                    help="proxies not scored (default: the slow ones: grasp, a Hessian-vector "
                    "product; vkdnw, one backward per class and sample)")  # fmt: skip
    ap.add_argument("--n", type=int, default=None, help="seeded sample of n archs (all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("extra", nargs="*", help="further harness overrides (key=value)")
    return ap.parse_args()


def harness_config(args: argparse.Namespace, dataset: str, out: Path, *more: str):
    shape = SHAPES.get(dataset)
    overrides = [
        f"csv_path={args.csv}", "accuracy_column=val_accuracy",
        f"+filter.dataset={dataset}", f"batch_size={args.batch_size}",
        f"num_threads={args.threads}", f"bootstrap={args.bootstrap}",
        f"device={args.device}", f"seed={args.seed}", f"output_dir={out}",
        f"num_classes={CLASSES.get(dataset, 10)}",
        *([f"input_shape=[{','.join(map(str, shape))}]"] if shape else []),
        f"exclude_proxies=[{','.join(args.exclude)}]",
        *([f"n={args.n}"] if args.n else []), *args.extra, *more,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("correlate", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    transformer = OmegaConf.load(Path(CONFIG_DIR) / "proxy" / "descore_transformer.yaml")
    cfg.variants = OmegaConf.merge(cfg.get("variants") or {}, VARIANTS,
                                   {"transformer": transformer})  # fmt: skip
    return cfg


def run_dataset(args: argparse.Namespace, dataset: str) -> pd.DataFrame:
    """Score one dataset's rows, print its table; returns its correlations."""
    out = Path(args.out) / dataset
    run_correlation(harness_config(args, dataset, out))
    flops_out = out / "latency_flops"
    run_correlation(
        harness_config(args, dataset, flops_out, "latency_proxy=flops", f"resume_from={out}")
    )
    corr = pd.read_csv(out / "correlations.csv").set_index("proxy")
    agree_path = out / "agreement.csv"
    agree = pd.read_csv(agree_path).set_index("proxy") if agree_path.is_file() else None
    rows = []
    for name, r in corr.iterrows():
        ref = agree.loc[name] if agree is not None and name in agree.index else None
        rows.append({
            "proxy": name, "sign": r["sign"], "n": int(r["n"]), "failures": int(r["failures"]),
            "spearman": f"{r.spearman:.3f} [{r.spearman_lo:.3f}, {r.spearman_hi:.3f}]",
            "kendall": r["kendall"], "spearman_all": r["spearman_all"],
            "naslib_vs_acc": None if ref is None else ref["reference_vs_accuracy"],
            "ours_vs_naslib": None if ref is None else ref["spearman_vs_reference"],
            "published_c10": PUBLISHED.get(name), "ms_per_arch": r["ms_per_arch"],
        })  # fmt: skip
    print(f"\n{dataset}: {int(corr['n'].max())} archs, batch {args.batch_size}, "
          f"inputs from the harness config, seed {args.seed}\n")  # fmt: skip
    print(to_markdown(pd.DataFrame(rows)))
    lat = pd.read_csv(flops_out / "correlations.csv").set_index("proxy")
    cols = [c for c in lat.index if c.startswith("descore")]
    print("DE-Scores with FLOPs standing in for latency (penalty weight 1):")
    print(to_markdown(lat.loc[cols, ["n", "spearman", "kendall"]].reset_index()))
    return corr


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not Path(args.csv).is_file():
        raise SystemExit(f"--csv {args.csv} not found; pass the NASLib-style NB-201 table")
    table = {ds: run_dataset(args, ds) for ds in args.dataset}
    summary = pd.DataFrame({
        ds: {name: f"{r.spearman:.3f} [{r.spearman_lo:.3f}, {r.spearman_hi:.3f}]"
             for name, r in corr.iterrows()}
        for ds, corr in table.items()
    })  # fmt: skip
    print("\nSpearman with validation accuracy (95 % CI), every dataset:")
    print(to_markdown(summary.reset_index().rename(columns={"index": "proxy"})))
    for ds, corr in table.items():
        rho = float(corr.loc["descore", "spearman"])
        verdict = "meets" if rho >= TARGET else "MISSES"
        rank = corr.loc["descore_denas_rank", "spearman"]
        ref = corr.loc["descore_denas_reference", "spearman"]
        print(
            f"{ds}: shipped DE-Score (DEScore.default()) Spearman {rho:.3f} {verdict} target "
            f"{TARGET}; DE-NAS rank-normalised {rank:.3f}, DE-NAS reference formula {ref:.3f}"
        )


if __name__ == "__main__":
    main()
