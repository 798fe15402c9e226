"""AutoQ on this machine: mixed-precision INT8/FP32 through ONNX Runtime, beside FP32.

For each finished hwnas run given (``--runs``; by default whichever of the bootstrap
benchmark's run ``<bootstrap-dir>/run`` and the CNN demo ``outputs/runs/demo_s3`` has a
final subnet) the final subnet is quantized with :func:`hwnas.quantize.quantize_model`
(per-layer sensitivity, precision search against measured ORT latency, the fastest
assignment within ``quantize.max_drop`` val accuracy of FP32), with the run's own data
and ``quantize`` settings (today's ``conf/quantize/default.yaml`` for runs made before
the stage existed) plus the ``quantize.KEY=VALUE`` / ``data.KEY=VALUE`` overrides given;
``quantize.threads`` defaults to ``--threads``, so the search times candidates as the
table does.
The fine-tuned MobileNetV2 of the bootstrap benchmark (``<bootstrap-dir>/baseline``),
when present, is quantized the same way on the bootstrap run's data. Each result goes
to ``<out>/<name>/``; a folder that already holds ``report.json`` is not redone, so a
rerun only measures. Then, measured side by side in one run:

- one row per model and variant: the eager PyTorch FP32 net, and in ONNX Runtime the
  FP32 export, uniform INT8 and the chosen mixed assignment;
- test top-1 (the quantization report's, on the run's test set; the eager row scored
  here with the task's ``evaluate`` on the same set), size on disk (MB);
- latency at batch 1 and throughput at batch ``--batch`` with ``--threads`` threads,
  median of ``--repeats`` runs, every ONNX file and eager module re-timed here in
  interleaved ``--rounds`` (median of the rounds; the reports' own timings are not
  reused: they ran at other times);
- each row's throughput ratio to its model's FP32 in ONNX Runtime, and for the rows of
  the bootstrap run (and of the baseline) the throughput ratio and top-1 drop against
  the FP32 baseline, eager and ONNX Runtime.

Targets (issue 13): uniform INT8 and the mixed assignment within 0.5 % top-1 of FP32
faster than FP32 in ONNX Runtime; NAS + quantization, the bootstrap run's chosen subnet
quantized, >= 5x the throughput of the FP32 baseline it came from at <= 1 % top-1 drop
(BootstrapNAS: 11.37x on Xeon CPUs with VNNI; the CPU's VNNI flags are printed beside
the figure, since INT8 convolutions are much faster with them).

    .venv/bin/python benchmarks/bench_quantize.py [--out outputs/bench_quantize]
    .venv/bin/python benchmarks/bench_quantize.py quantize.batch_size=32  # throughput search
    .venv/bin/python benchmarks/bench_quantize.py --runs outputs/runs/demo_s3 quantize.max_drop=0.01
    .venv/bin/python benchmarks/bench_quantize.py --quick   # minutes-long smoke run
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas.app.config import compose_config

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = ROOT / "outputs" / "runs" / "demo_s3"
TARGET_RATIO, TARGET_DROP = 5.0, 0.01
BASELINE_NAME = "bootstrap_baseline"
META = "bench_quantize.json"  # beside report.json: the settings and seconds it took
# small settings for a minutes-long run (each applied where the config has the key)
QUICK = [
    "quantize.val_samples=64", "quantize.calib_samples=64", "quantize.hessian_samples=4",
    "quantize.hessian_batch=16", "quantize.strategy.trials=6",
    "quantize.strategy.population_size=4", "quantize.repeats=3", "quantize.warmup=1",
    "quantize.throughput_batch=32", "data.test_limit=256",
]  # fmt: skip
VARIANTS = {
    "eager": "FP32 eager (PyTorch)",
    "fp32": "FP32 (ORT)",
    "int8": "uniform INT8 (ORT)",
    "chosen": "chosen mixed (ORT)",
    "qat": "QAT (ORT)",
}
_ABSENT = object()


def bench_bootstrap() -> Any:
    """The bootstrap benchmark module (its ``fitted_mobilenet`` and table helpers)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("bench_bootstrap")


@dataclass
class Model:
    """One network to quantize: where it comes from and with which settings."""

    name: str
    source: Path  # the run folder, or the baseline's state dict
    data: dict
    q: dict
    seed: int
    bootstrap: bool = False  # the bootstrap run or its baseline (compared to the baseline)
    net: Any = None
    dm: Any = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def apply_overrides(data: Any, q: Any, overrides: list[str], strict: bool) -> tuple[dict, dict]:
    """``data`` and ``quantize`` nodes with ``data.K=V`` / ``quantize.K=V`` applied, as
    plain dicts; a key the config lacks is an error (``strict``) or skipped."""
    from omegaconf import OmegaConf

    root = OmegaConf.create({
        "data": OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data,
        "quantize": OmegaConf.to_container(q, resolve=True) if OmegaConf.is_config(q) else q,
    })  # fmt: skip
    kept = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if OmegaConf.select(root, key, default=_ABSENT) is _ABSENT:
            if strict:
                raise SystemExit(f"error: override {item!r}: the config has no key {key!r}")
            continue
        kept.append(item)
    root.merge_with(OmegaConf.from_dotlist(kept))
    plain = OmegaConf.to_container(root, resolve=True)
    return plain["data"], plain["quantize"]


def run_settings(run: Path, quick: list[str], overrides: list[str]) -> tuple[dict, dict, int]:
    """The data and quantize settings of a run folder (overrides applied) and its seed."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / "hwnas_config.yaml")
    today = compose_config([]).quantize  # for the keys a run of an older hwnas predates
    q = OmegaConf.merge(today, cfg.quantize) if "quantize" in cfg else today
    data, q = apply_overrides(cfg.data, q, quick, strict=False)
    data, q = apply_overrides(data, q, overrides, strict=True)
    return data, q, int(cfg.get("seed", 0))


def run_name(run: Path, taken: set[str]) -> str:
    """The run's folder name (``run`` and repeats prefixed with the parent's)."""
    name = run.name
    if name == "run" or name in taken:
        name = f"{run.parent.name}_{run.name}"
    while name in taken or name == BASELINE_NAME:
        name += "_"
    taken.add(name)
    return name


def baseline_weights(bootstrap_dir: Path) -> Path | None:
    """The fine-tuned baseline: the state dict the bootstrap run was built from when it
    is still there, else the newest ``<bootstrap-dir>/baseline/*.pt``."""
    from omegaconf import OmegaConf

    config = bootstrap_dir / "run" / "hwnas_config.yaml"
    if config.is_file():
        used = OmegaConf.select(OmegaConf.load(config), "model.weights", default=None)
        if used and Path(used).is_file() and Path(used).suffix == ".pt":
            return Path(used)
    found = sorted((bootstrap_dir / "baseline").glob("*.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def collect(args: argparse.Namespace, quick: list[str]) -> list[Model]:
    """Every model to measure: the runs, then the bootstrap baseline when present."""
    boot_run = (args.bootstrap_dir / "run").resolve()
    if args.runs is None:
        runs = [r for r in (boot_run, DEMO_RUN) if (r / "final" / "subnet.pt").is_file()]
    else:
        runs = [r.resolve() for r in args.runs]
        for r in runs:
            for needed in ("hwnas_config.yaml", "final/subnet.pt"):
                if not (r / needed).is_file():
                    raise SystemExit(f"error: {r / needed} is missing: give finished run folders")
    models, taken = [], set()
    for run in runs:
        data, q, seed = run_settings(run, quick, args.overrides)
        models.append(Model(run_name(run, taken), run, data, q, seed, bootstrap=run == boot_run))
    weights = None if args.no_baseline else baseline_weights(args.bootstrap_dir)
    if weights is not None:
        if (boot_run / "hwnas_config.yaml").is_file():
            data, q, seed = run_settings(boot_run, quick, args.overrides)
        else:  # the bootstrap experiment's data (Fashion-MNIST padded to 32x32)
            cfg = compose_config(["experiment=bootstrap_mobilenet"])
            data, q = apply_overrides(cfg.data, cfg.quantize, quick, strict=False)
            data, q = apply_overrides(data, q, args.overrides, strict=True)
            seed = int(cfg.seed)
        models.append(Model(BASELINE_NAME, weights, data, q, seed, bootstrap=True))
    return models


def prepare(model: Model, out: Path, threads: int) -> None:
    """Load the net and the data; quantize it into ``out/<name>`` unless already done."""
    from hwnas.app.stages.quantize import quantize_model
    from hwnas.app.subnet_io import load_subnet
    from hwnas.core.runtime import torch_threads
    from hwnas.data import build_datamodule

    t0 = time.monotonic()
    if model.name == BASELINE_NAME:
        model.net = bench_bootstrap().fitted_mobilenet(model.source).eval()
    else:
        model.net = load_subnet(model.source / "final")
    torch.manual_seed(model.seed)
    model.dm = build_datamodule(model.data)
    model.dm.setup()
    model.seconds["load"] = time.monotonic() - t0
    folder = out / model.name
    meta_path = folder / META
    settings = {"source": str(model.source), "data": model.data, "quantize": model.q}
    if (folder / "report.json").is_file():
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        model.seconds["quantize_cached"] = meta.get("seconds")
        differ = [k for k in settings if k in meta and meta[k] != settings[k]]
        if differ:
            model.notes.append(
                f"{folder / 'report.json'} was made with other {' and '.join(differ)} "
                "settings than asked now: delete the folder to redo it"
            )
        print(f"{model.name}: quantized before, in {folder}", flush=True)
        return
    print(f"{model.name}: quantizing {model.source} into {folder} ...", flush=True)
    t0 = time.monotonic()
    with torch_threads(threads):
        quantize_model(
            model.net, model.dm, model.q, folder, model.seed, {"mode": "log", "interval_s": 30}
        )
    model.seconds["quantize"] = time.monotonic() - t0
    meta_path.write_text(json.dumps({**settings, "seconds": model.seconds["quantize"]}, indent=2))
    model.net.eval()


def onnx_files(folder: Path) -> dict[str, Path]:
    """The FP32, uniform INT8 and chosen ONNX files the report scored."""
    from hwnas.quantize.space import assignment_key

    layers = list(json.loads((folder / "assignment.json").read_text()))
    files = {
        p: folder / "candidates" / f"q_{assignment_key(dict.fromkeys(layers, p))}.onnx"
        for p in ("fp32", "int8")
    }
    files["chosen"] = folder / "model.onnx"
    if "qat" in json.loads((folder / "report.json").read_text()):
        files["qat"] = folder / "qat" / "model.onnx"
    for path in files.values():
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: delete {folder} to quantize again")
    return files


def state_dict_mb(net: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in net.state_dict().values()) / 1e6


def rows_of(model: Model, out: Path, threads: int) -> list[dict]:
    """The four rows of one model (timings to come): eager FP32 scored on the test set
    here, the ORT ones from the report."""
    from hwnas.core.runtime import torch_threads
    from hwnas.quantize.ort_runtime import model_size_mb

    folder = out / model.name
    report = json.loads((folder / "report.json").read_text())
    task = model.dm.task()
    t0 = time.monotonic()
    with torch_threads(threads):
        top1 = float(task.evaluate(model.net, model.dm.test_dataloader())[task.primary_metric])
    model.seconds["eager_test"] = time.monotonic() - t0
    layers = report["assignment"]["layers"]
    common = {"model": model.name, "inputs": task.example_inputs, "bootstrap": model.bootstrap}
    rows = [{
        **common, "variant": VARIANTS["eager"], "int8_layers": "-", "top1": top1,
        "size_mb": state_dict_mb(model.net), "runner": model.net,
    }]  # fmt: skip
    counts = {"fp32": 0, "int8": layers, "chosen": report["assignment"]["int8"]}
    if "qat" in report:
        counts["qat"] = sum(p == "int8" for p in report["qat"]["assignment"].values())
    for key, path in onnx_files(folder).items():
        rows.append({
            **common, "variant": VARIANTS[key], "int8_layers": f"{counts[key]}/{layers}",
            "top1": float(report[key]["test"]), "size_mb": model_size_mb(path), "runner": path,
            "qat_info": report.get("qat") if key == "qat" else None,
        })  # fmt: skip
    print(
        f"{model.name}: eager FP32 top-1 {top1:.4f}, ORT FP32 {report['fp32']['test']:.4f}, "
        f"INT8 {report['int8']['test']:.4f}, chosen {report['chosen']['test']:.4f} "
        f"({counts['chosen']}/{layers} layers INT8)",
        flush=True,
    )
    return rows


def median_ms(row: dict, batch: int, threads: int, repeats: int) -> float:
    from hwnas.hardware.latency import measure_latency
    from hwnas.quantize.ort_runtime import time_onnx

    timing = dict(batch_size=batch, threads=threads, warmup=max(3, repeats // 4), repeats=repeats)
    if isinstance(row["runner"], Path):
        return time_onnx(row["runner"], row["inputs"], **timing).median_ms
    return measure_latency(row["runner"], row["inputs"], backend="torch", **timing).median_ms


def time_rows(rows: list[dict], args: argparse.Namespace) -> None:
    """Latency (batch 1) and throughput (batch ``--batch``) of every row, the rows
    timed in interleaved rounds (reversed every other round), medians of the rounds."""
    settings = [("b1_ms", 1), ("thr_ms", args.batch)]

    def timed(i: int, setting: tuple) -> float:
        return median_ms(rows[i], setting[1], args.threads, args.repeats)

    med = bench_bootstrap().interleaved(len(rows), settings, args.rounds, timed)
    for row, m in zip(rows, med, strict=True):
        row["b1_ms"] = m["b1_ms"]
        row["thr"] = args.batch / (m["thr_ms"] / 1e3)


def compare(rows: list[dict]) -> None:
    """Speedup against each model's FP32 (ORT) and, for the bootstrap rows, throughput
    ratio and top-1 drop against the baseline's FP32 (eager and ORT)."""
    by = {(r["model"], r["variant"]): r for r in rows}
    base_eager = by.get((BASELINE_NAME, VARIANTS["eager"]))
    base_ort = by.get((BASELINE_NAME, VARIANTS["fp32"]))
    for row in rows:
        row["x_fp32"] = row["thr"] / by[(row["model"], VARIANTS["fp32"])]["thr"]
        for tag, base in (("eager", base_eager), ("ort", base_ort)):
            on = base is not None and row["bootstrap"]
            row[f"x_base_{tag}"] = row["thr"] / base["thr"] if on else None
            row[f"drop_base_{tag}"] = base["top1"] - row["top1"] if on else None


COLUMNS = [
    ("model", "model", "{}"), ("variant", "variant", "{}"), ("int8_layers", "INT8 layers", "{}"),
    ("top1", "test top-1", "{:.2%}"), ("size_mb", "size MB", "{:.3f}"),
    ("b1_ms", "latency b1 ms", "{:.3f}"), ("thr", "img/s", "{:.0f}"),
    ("x_fp32", "x FP32 ORT", "{:.2f}x"), ("x_base_eager", "x base eager", "{:.2f}x"),
    ("x_base_ort", "x base ORT", "{:.2f}x"), ("drop_base_eager", "drop vs base eager", "{:+.2%}"),
    ("drop_base_ort", "drop vs base ORT", "{:+.2%}"),
]  # fmt: skip


def markdown(rows: list[dict]) -> str:
    return bench_bootstrap().markdown(rows, COLUMNS)


def cpu_line() -> str:
    import onnxruntime

    from hwnas.hardware.latency import device_name
    from hwnas.quantize.onnx_quant import cpu_flags

    flags = cpu_flags()
    have = ", ".join(f"{f}: {'yes' if f in flags else 'no'}" for f in ("avx512_vnni", "avx_vnni"))
    return (
        f"CPU: {device_name('cpu')}; {have} (avx2: {'yes' if 'avx2' in flags else 'no'}); "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}"
    )


def findings(models: list[Model], rows: list[dict]) -> list[str]:
    """The target lines: INT8 and mixed vs FP32 per model, NAS + quantization vs the
    baseline."""
    from hwnas.quantize.onnx_quant import cpu_flags

    by = {(r["model"], r["variant"]): r for r in rows}
    lines = []
    for m in models:
        fp32, int8 = by[(m.name, VARIANTS["fp32"])], by[(m.name, VARIANTS["int8"])]
        chosen = by[(m.name, VARIANTS["chosen"])]
        drop, limit = fp32["top1"] - chosen["top1"], float(m.q["max_drop"])
        lines.append(
            f"- {m.name}: uniform INT8 {int8['x_fp32']:.2f}x FP32 throughput in ORT "
            f"(top-1 drop {fp32['top1'] - int8['top1']:+.2%}); chosen mixed "
            f"({chosen['int8_layers']} layers INT8, within {limit:.2%} val of FP32) "
            f"{chosen['x_fp32']:.2f}x at {drop:+.2%} test top-1 drop "
            f"({'within' if drop <= limit else 'beyond'} {limit:.2%} on test)."
        )
        qat = by.get((m.name, VARIANTS["qat"]))
        if qat is not None:
            info = qat["qat_info"]
            uniform = set(info["assignment"].values()) == {"int8"}
            ptq = f"; PTQ of uniform INT8 {int8['top1']:.2%}" if uniform else ""
            lines.append(
                f"- {m.name}: QAT ({info['epochs']} epoch(s), {qat['int8_layers']} layers INT8) "
                f"test top-1 {qat['top1']:.2%} vs FP32 {fp32['top1']:.2%}{ptq}; val "
                f"{info['val']:.2%} after vs {info['ptq_val']:.2%} before (the fine-tuned weights "
                f"in FP32: {info['fp32_val']:.2%}); {qat['x_fp32']:.2f}x FP32 throughput; "
                f"{'deployed' if info['deployed'] else 'not deployed'}."
            )
    boot = [m for m in models if m.bootstrap and m.name != BASELINE_NAME]
    if not boot:
        lines.append("- NAS + quantization vs the baseline: no bootstrap run in the table.")
    vnni = "with" if {"avx512_vnni", "avx_vnni"} & cpu_flags() else "without"
    for m in boot:
        row = by[(m.name, VARIANTS["chosen"])]
        if row["x_base_eager"] is None:
            lines.append(f"- {m.name}: no bootstrap baseline found to compare with.")
            continue
        for tag, label in (("eager", "eager PyTorch"), ("ort", "ONNX Runtime")):
            ratio, drop = row[f"x_base_{tag}"], row[f"drop_base_{tag}"]
            ok = ratio >= TARGET_RATIO and drop <= TARGET_DROP
            lines.append(
                f"- NAS + quantization ({m.name}, chosen mixed in ORT) vs the FP32 baseline "
                f"in {label}: {ratio:.2f}x throughput at {drop:+.2%} top-1 drop on this CPU "
                f"({vnni} VNNI); target >= {TARGET_RATIO:.0f}x at <= {TARGET_DROP:.0%} drop: "
                f"{'met' if ok else 'NOT met'} (BootstrapNAS: 11.37x on Xeon with VNNI)."
            )
    return lines


def seconds_line(models: list[Model], timing_s: float, total_s: float) -> str:
    parts = []
    for m in models:
        s = m.seconds
        q = (
            f"quantize {s['quantize'] / 60:.1f} min"
            if "quantize" in s
            else f"quantize cached ({s['quantize_cached'] / 60:.1f} min when run)"
            if s.get("quantize_cached") is not None
            else "quantize cached"
        )
        parts.append(f"{m.name}: load {s['load']:.0f} s, {q}, eager test {s['eager_test']:.0f} s")
    return (
        "Wall time: " + "; ".join(parts) + f"; timing {timing_s / 60:.1f} min; "
        f"this invocation {total_s / 60:.1f} min."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, nargs="+", default=None, help="finished run folders")
    p.add_argument("--bootstrap-dir", type=Path, default=ROOT / "outputs" / "bench_bootstrap")
    p.add_argument("--no-baseline", action="store_true", help="leave the baseline out")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_quantize")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=256, help="throughput batch size")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run")
    p.add_argument("overrides", nargs="*", help="quantize.KEY=VALUE / data.KEY=VALUE")
    args = p.parse_args()
    if args.runs:  # --runs A B key=value: the overrides after the run folders
        given = [str(r) for r in args.runs]
        args.overrides = [a for a in given if "=" in a] + args.overrides
        args.runs = [Path(a) for a in given if "=" not in a] or None
    bad = [o for o in args.overrides if "=" not in o or not o.startswith(("quantize.", "data."))]
    if bad:
        p.error(f"{bad[0]!r}: overrides are quantize.KEY=VALUE or data.KEY=VALUE")
    if not any(o.startswith("quantize.threads=") for o in args.overrides):
        # the search times candidates with the threads the table uses
        args.overrides.append(f"quantize.threads={args.threads}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = args.out if not args.quick else args.out.with_name(args.out.name + "_quick")
    if args.quick:
        args.repeats, args.rounds, args.batch = 3, 2, 32
    t_start = time.monotonic()
    models = collect(args, QUICK if args.quick else [])
    if not models:
        raise SystemExit(
            "error: nothing to quantize: no final subnet in "
            f"{args.bootstrap_dir / 'run'} or {DEMO_RUN} and no baseline in "
            f"{args.bootstrap_dir / 'baseline'} (run make bench-bootstrap / make demo, or "
            "give --runs)"
        )
    print("models: " + ", ".join(f"{m.name} ({m.source})" for m in models), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    failed: list[Model] = []
    for m in models:
        try:
            prepare(m, out, args.threads)
            rows += rows_of(m, out, args.threads)
        except Exception as err:  # one model failing leaves the others measured
            logging.exception("%s: failed", m.name)
            m.notes.append(f"{m.name} FAILED, left out of the table: {type(err).__name__}: {err}")
            failed.append(m)
    models = [m for m in models if m not in failed]
    if not models:
        raise SystemExit(
            "error: every model failed; see the notes above:\n"
            + "\n".join(n for m in failed for n in m.notes)
        )
    print(
        f"timing: {len(rows)} rows x 2 settings x {args.rounds} rounds, {args.threads} threads ...",
        flush=True,
    )
    t_timing = time.monotonic()
    time_rows(rows, args)
    timing_s = time.monotonic() - t_timing
    compare(rows)
    lines = [
        markdown(rows),
        "",
        cpu_line(),
        f"{args.threads} threads; latency at batch 1, throughput (img/s) at batch "
        f"{args.batch}; medians of {args.repeats} runs, {args.rounds} interleaved rounds. "
        "x FP32 ORT: throughput over the same model's FP32 in ONNX Runtime; x base / drop vs "
        "base: over the bootstrap baseline's FP32 (eager PyTorch, ONNX Runtime). Top-1 of the "
        "ORT rows from each report.json (test set of the run's data settings).",
        *findings(models, rows),
        *[f"- note: {n}" for m in [*models, *failed] for n in m.notes],
        seconds_line(models, timing_s, time.monotonic() - t_start),
    ]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    keys = [k for k, _, _ in COLUMNS]
    with (out / "table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"\nwritten: {out / 'table.md'}, {out / 'table.csv'}")
    if failed:
        raise SystemExit(f"error: {', '.join(m.name for m in failed)} failed (see the notes)")


if __name__ == "__main__":
    main()
