"""AutoQ on this machine: mixed-precision INT8/INT4/FP32 in ONNX Runtime and OpenVINO.

For each finished hwnas run given (``--runs``; by default whichever of the bootstrap
benchmark's run ``<bootstrap-dir>/run`` and the CNN demo ``outputs/runs/demo_s3`` has a
final subnet) the final subnet is quantized with :func:`hwnas.quantize.quantize_model`
(per-layer sensitivity, precision search against the measured latency of each deployed
candidate, the fastest assignment within ``quantize.max_drop`` val accuracy of FP32) on
the runtime ``--runtime`` (``quantize.runtime``: onnxruntime, the default, or openvino),
with the run's own data and ``quantize`` settings (today's ``conf/quantize/default.yaml``
for runs made before the stage existed) plus the ``quantize.KEY=VALUE`` /
``data.KEY=VALUE`` overrides given; ``quantize.threads`` defaults to ``--threads``, so
the search times candidates as the table does. With ``quantize.compare`` (the default)
the stage also deploys FP32, uniform INT8, INT4 (with ``quantize.choices=[int4,int8,
fp32]``) and the chosen assignment on the other runtime (``<folder>/compare/<runtime>/``).
The fine-tuned MobileNetV2 of the bootstrap benchmark (``<bootstrap-dir>/baseline``),
when present, is quantized the same way on the bootstrap run's data. Each result goes
to ``<out>/<name>/`` (``<out>`` gets ``_openvino`` appended for ``--runtime openvino``
and ``_quick`` for ``--quick``); a folder that already holds ``report.json`` is not
redone, so a rerun only measures. Then, measured side by side in one run:

- one row per model and variant: the eager PyTorch FP32 net, and for each runtime of
  ``--runtimes`` (default: every one installed here) the FP32 model, uniform INT8, INT4
  where the report has it, the chosen assignment (and QAT on the stage's runtime);
- test top-1 (the quantization report's, on the run's test set: the stage's figures for
  its runtime, ``report["compare"][runtime]`` for the other; the eager row scored here
  with the task's ``evaluate`` on the same set), size on disk (MB);
- latency at batch 1 and throughput at batch ``--batch`` with ``--threads`` threads,
  median of ``--repeats`` runs, every deployed file and eager module re-timed here in
  interleaved ``--rounds`` (median of the rounds; the reports' own timings are not
  reused: they ran at other times);
- each row's throughput ratio to its model's FP32 in the same runtime, and for the rows
  of the bootstrap run (and of the baseline) the throughput ratio and top-1 drop against
  the FP32 baseline in eager PyTorch and in the same runtime.

The header names the CPU, its flags that decide integer speed (avx2, avx512f, VNNI,
bf16, AMX) and the versions of onnxruntime, openvino, nncf and torch.

Targets (issue 13): uniform INT8 and the mixed assignment within 0.5 % top-1 of FP32
faster than FP32 in the same runtime; NAS + quantization, the bootstrap run's subnet
quantized, >= 5x the throughput of the FP32 baseline it came from at <= 1 % top-1 drop
(BootstrapNAS: 11.37x on Xeon CPUs with VNNI): per runtime, the best ratio of the
bootstrap run's quantized rows within 1 % of the baseline's top-1 is printed with the
verdict.

    .venv/bin/python benchmarks/bench_quantize.py [--out outputs/bench_quantize]
    .venv/bin/python benchmarks/bench_quantize.py --runtime openvino  # search on OpenVINO
    .venv/bin/python benchmarks/bench_quantize.py --runtimes onnxruntime  # ORT rows only
    .venv/bin/python benchmarks/bench_quantize.py quantize.batch_size=32  # throughput search
    .venv/bin/python benchmarks/bench_quantize.py "quantize.choices=[int4,int8,fp32]"
    .venv/bin/python benchmarks/bench_quantize.py --runs outputs/runs/demo_s3 quantize.max_drop=0.01
    .venv/bin/python benchmarks/bench_quantize.py --quick   # minutes-long smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from quant_tables import (
    BASELINE_NAME,
    COLUMNS,
    RUNTIME_LABELS,
    bench_bootstrap,
    compare,
    cpu_line,
    machine,
    markdown,
    model_lines,
    seconds_line,
    target_lines,
    variant,
)

from hwnas.app.config import compose_config

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = ROOT / "outputs" / "runs" / "demo_s3"
META = "bench_quantize.json"  # beside report.json: the settings and seconds it took
# small settings for a minutes-long run (each applied where the config has the key)
QUICK = [
    "quantize.val_samples=64", "quantize.calib_samples=64", "quantize.hessian_samples=4",
    "quantize.hessian_batch=16", "quantize.strategy.trials=6",
    "quantize.strategy.population_size=4", "quantize.repeats=3", "quantize.warmup=1",
    "quantize.throughput_batch=32", "data.test_limit=256",
]  # fmt: skip
_ABSENT = object()


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
        made = json.loads((folder / "report.json").read_text()).get("machine", {}).get("cpu")
        if made is not None and made != machine()["cpu"]:
            model.notes.append(f"{folder} was quantized on another CPU ({made})")
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


def deployed_files(folder: Path, report: dict, runtime: str) -> dict[str, Path] | None:
    """The deployed models the report scored on ``runtime``, by kind (fp32, int8, int4
    where offered, chosen, qat): on the stage's runtime its candidates, ``model.*`` and
    ``qat/model.*``; on another one ``compare/<runtime>/<kind>.*``. None when the report
    has no figures for ``runtime``."""
    from hwnas.quantize.deploy import SUFFIX
    from hwnas.quantize.space import assignment_key

    suffix = SUFFIX[runtime]
    if runtime == report.get("runtime", "onnxruntime"):
        layers = list(json.loads((folder / "assignment.json").read_text()))
        archs = {p: dict.fromkeys(layers, p) for p in ("fp32", "int8")}
        if "int4" in report:  # every layer that may take INT4 in INT4, the others INT8
            four = set(report.get("int4_layers", []))
            archs["int4"] = {k: "int4" if k in four else "int8" for k in layers}
        files = {
            k: folder / "candidates" / f"q_{assignment_key(a)}{suffix}" for k, a in archs.items()
        }
        if not files["fp32"].is_file():  # the FP32 export, timed on ``runtime``
            files["fp32"] = folder / "fp32.onnx"
        files["chosen"] = folder / report.get("model", "model.onnx")
        if "qat" in report:
            files["qat"] = folder / "qat" / f"model{suffix}"
    elif runtime in (report.get("compare") or {}):
        kinds = [k for k in ("fp32", "int8", "int4", "chosen") if k in report["compare"][runtime]]
        files = {k: folder / "compare" / runtime / f"{k}{suffix}" for k in kinds}
    else:
        return None
    for path in files.values():
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: delete {folder} to quantize again")
    return files


def state_dict_mb(net: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in net.state_dict().values()) / 1e6


def int8_layers(kind: str, report: dict) -> str:
    """How many layers of a row are INT8 (and INT4), of how many."""
    a, n = report["assignment"], report["assignment"]["layers"]
    if kind == "qat":
        values = list(report["qat"]["assignment"].values())
        a = {p: sum(v == p for v in values) for p in ("int8", "int4")}
    elif kind != "chosen":
        four = len(report.get("int4_layers", [])) if kind == "int4" else 0
        a = {"int8": {"fp32": 0, "int8": n, "int4": n - four}[kind], "int4": four}
    return f"{a['int8']}/{n}" + (f" + {a['int4']} INT4" if a.get("int4") else "")


def rows_of(model: Model, out: Path, threads: int, runtimes: list[str]) -> list[dict]:
    """The rows of one model (timings to come): eager FP32 scored on the test set here,
    then for each runtime the deployed models of the report with its test figures."""
    from hwnas.core.runtime import torch_threads
    from hwnas.quantize.ort_runtime import model_size_mb

    folder = out / model.name
    report = json.loads((folder / "report.json").read_text())
    stage_rt = report.get("runtime", "onnxruntime")
    task = model.dm.task()
    t0 = time.monotonic()
    with torch_threads(threads):
        top1 = float(task.evaluate(model.net, model.dm.test_dataloader())[task.primary_metric])
    model.seconds["eager_test"] = time.monotonic() - t0
    common = {"model": model.name, "inputs": task.example_inputs, "bootstrap": model.bootstrap}
    rows = [{
        **common, "runtime": "eager", "kind": "eager", "variant": variant("eager", "eager"),
        "int8_layers": "-", "top1": top1, "size_mb": state_dict_mb(model.net),
        "runner": model.net,
    }]  # fmt: skip
    said = [f"eager FP32 {top1:.4f}"]
    for rt in runtimes:
        files = deployed_files(folder, report, rt)
        if files is None:
            model.notes.append(
                f"{model.name}: no {RUNTIME_LABELS[rt]} rows: {folder / 'report.json'} has no "
                f"figures for it (made on {stage_rt} without quantize.compare, or before "
                f"{rt} was installed): delete the folder to redo it"
            )
            continue
        scores = report if rt == stage_rt else report["compare"][rt]
        for kind, path in files.items():
            chosen_qat = kind == "chosen" and rt != stage_rt and report["chosen"].get("qat")
            rows.append({
                **common, "runtime": rt, "kind": kind,
                "variant": variant(kind, rt) + (" (PTQ)" if chosen_qat else ""),
                "int8_layers": int8_layers(kind, report), "top1": float(scores[kind]["test"]),
                "size_mb": model_size_mb(path), "runner": path,
                "qat_info": report.get("qat") if kind == "qat" else None,
            })  # fmt: skip
        said.append(
            f"{rt} FP32 {scores['fp32']['test']:.4f}, INT8 {scores['int8']['test']:.4f}, "
            f"chosen {scores['chosen']['test']:.4f}"
        )
    print(f"{model.name}: top-1 {'; '.join(said)} ({int8_layers('chosen', report)} INT8)")
    return rows


def median_ms(row: dict, batch: int, threads: int, repeats: int) -> float:
    from hwnas.hardware.latency import measure_latency
    from hwnas.quantize.ort_runtime import time_onnx

    timing = dict(batch_size=batch, threads=threads, warmup=max(3, repeats // 4), repeats=repeats)
    if isinstance(row["runner"], Path):
        return time_onnx(row["runner"], row["inputs"], runtime=row["runtime"], **timing).median_ms
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


def parse_args() -> argparse.Namespace:
    from hwnas.quantize.deploy import available_runtimes
    from hwnas.quantize.ort_runtime import RUNTIMES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, nargs="+", default=None, help="finished run folders")
    p.add_argument("--bootstrap-dir", type=Path, default=ROOT / "outputs" / "bench_bootstrap")
    p.add_argument("--no-baseline", action="store_true", help="leave the baseline out")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_quantize")
    p.add_argument(
        "--runtime", choices=RUNTIMES, default=None,
        help="the runtime the quantize stage searches and deploys on (default onnxruntime)",
    )  # fmt: skip
    p.add_argument(
        "--runtimes", choices=RUNTIMES, nargs="+", default=None,
        help="the runtimes in the table (default: every one installed here)",
    )  # fmt: skip
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
    given = [o.split("=", 1)[1] for o in args.overrides if o.startswith("quantize.runtime=")]
    if given and args.runtime not in (None, given[-1]):
        p.error(f"--runtime {args.runtime} and quantize.runtime={given[-1]}: give one of them")
    args.runtime = given[-1] if given else args.runtime or "onnxruntime"
    if args.runtime not in RUNTIMES:
        p.error(f"quantize.runtime={args.runtime}: choose one of {list(RUNTIMES)}")
    if not given:
        args.overrides.append(f"quantize.runtime={args.runtime}")
    installed = available_runtimes()
    args.runtimes = list(dict.fromkeys(args.runtimes or installed))
    missing = [r for r in {args.runtime, *args.runtimes} if r not in installed]
    if missing:
        p.error(f"{missing[0]} is not installed here (pip install 'hwnas[openvino]')")
    if not any(o.startswith("quantize.threads=") for o in args.overrides):
        # the search times candidates with the threads the table uses
        args.overrides.append(f"quantize.threads={args.threads}")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = args.out
    if args.runtime != "onnxruntime":  # each stage runtime quantizes into folders of its own
        out = out.with_name(f"{out.name}_{args.runtime}")
    if args.quick:
        out = out.with_name(out.name + "_quick")
        args.repeats, args.rounds, args.batch = 3, 2, 32
    header = cpu_line()
    print(header, flush=True)
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
            rows += rows_of(m, out, args.threads, args.runtimes)
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
        header,
        f"Quantize stage searched and deployed on {RUNTIME_LABELS[args.runtime]}; rows for "
        f"{', '.join(RUNTIME_LABELS[r] for r in args.runtimes)}.",
        "",
        markdown(rows),
        "",
        f"{args.threads} threads; latency at batch 1, throughput (img/s) at batch "
        f"{args.batch}; medians of {args.repeats} runs, {args.rounds} interleaved rounds. "
        "x FP32 same rt: throughput over the same model's FP32 in the same runtime; x base / "
        "drop vs base: over the bootstrap baseline's FP32 in eager PyTorch and in the row's "
        "runtime. Top-1 of the deployed rows from each report.json (test set of the run's "
        "data settings; the other runtime's from its compare section).",
        *[line for m in models for line in model_lines(m, rows, args.runtimes)],
        *target_lines(models, rows, args.runtimes),
        *[f"- note: {n}" for m in [*models, *failed] for n in m.notes],
        seconds_line(models, timing_s, time.monotonic() - t_start),
    ]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    keys = ["runtime", "kind", *[k for k, _, _ in COLUMNS]]
    with (out / "table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"\nwritten: {out / 'table.md'}, {out / 'table.csv'}")
    if failed:
        raise SystemExit(f"error: {', '.join(m.name for m in failed)} failed (see the notes)")


if __name__ == "__main__":
    main()
