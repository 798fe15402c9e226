"""Searching for the INT8 deployment: one trained supernet, searched by FP32 and by INT8 latency.

The fastest FP32 subnet need not be the fastest INT8 one (depthwise and small layers gain
little from integer kernels), so ``hardware.precision=int8`` ranks subnets by the latency
of their uniform-INT8 deployment (docs/hardware.md, "Searching for the INT8 deployment").
This benchmark measures what that changes, with everything else equal:

1. ``--run`` (default ``outputs/bench_bootstrap/run``, the run ``bench_bootstrap.py``
   makes) is a finished run whose search ranked subnets by FP32 latency;
2. a second run folder (``--out``, default ``<run>_int8``) gets copies of its
   ``zero_shot/`` and ``supernet/`` stage folders (with their ``DONE.json``; the training
   checkpoints, only needed to resume a training, are left out), and the pipeline runs
   there with ``stages=[zero_shot,supernet,search,final]``: it skips the two copied,
   finished stages (hands their pools to the search, as in the first run) and runs the
   search and final stages again from the first run's recorded config
   (``hwnas_config.yaml``, :func:`hwnas.app.config.load_run_config`) with the target
   ``hardware=<--runtime>`` (default openvino) ``hardware.precision=int8
   hardware.latency=measured`` at the first run's ``hardware.batch_size`` and threads,
   plus the ``KEY=VALUE`` overrides given. A finished ``--out`` is not redone (the
   pipeline resumes it), so a rerun only measures;
3. the chosen subnet of each run (``<run>/final``) is exported to ONNX, quantized
   uniformly to INT8 for the runtime (:func:`hwnas.hardware.int8.int8_model`, calibrated
   on one calibration batch of the run's data), and both files of both subnets are timed
   here side by side on the runtime in interleaved ``--rounds``: latency at batch 1 and
   at the searches' batch, throughput at ``--batch``, ``--threads`` threads, medians of
   ``--repeats`` runs. Beside them: params and FLOPs and the test top-1 of each run's
   final report (the FP32 subnet after the final stage), and the INT8 file's test top-1
   scored here.

The header names the CPU, its flags that decide integer speed and the runtime versions.

    .venv/bin/python benchmarks/bench_bootstrap.py          # the first run, if not made
    .venv/bin/python benchmarks/bench_joint_search.py       # OpenVINO INT8 search
    .venv/bin/python benchmarks/bench_joint_search.py --runtime onnxruntime
    .venv/bin/python benchmarks/bench_joint_search.py --run outputs/runs/x --out /tmp/x_int8 \\
        search.budget=40 search.max_latency_ratio=null   # overrides for the INT8 run

``search.max_latency_ratio`` caps latency relative to the largest subnet's, now its INT8
latency: where INT8 gains less on small subnets the cap may fall below the smallest
one's, which the pipeline refuses with the ratio to give instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from quant_tables import bench_bootstrap, cpu_line, markdown

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("zero_shot", "supernet")  # stages reused from the first run
SKIPPED = ("checkpoints",)  # resume-only state of a finished training: not copied
COLUMNS = [
    ("search", "search ranked by", "{}"), ("precision", "deployed", "{}"),
    ("params_m", "params M", "{:.3f}"), ("flops_m", "MFLOPs", "{:.1f}"),
    ("top1", "test top-1 (final report)", "{:.2%}"), ("int8_top1", "INT8 top-1 here", "{:.2%}"),
    ("size_mb", "size MB", "{:.3f}"), ("b1_ms", "latency b1 ms", "{:.3f}"),
    ("bs_ms", "latency search batch ms", "{:.3f}"), ("thr", "img/s", "{:.0f}"),
    ("x_fp32", "x own FP32", "{:.2f}x"), ("x_first", "x FP32-ranked same precision", "{:.2f}x"),
]  # fmt: skip


def fail(message: str) -> None:
    raise SystemExit(f"error: {message}")


def check_run(run: Path) -> None:
    """``error:`` lines for a missing or unfinished first run."""
    if not run.is_dir():
        fail(f"{run} does not exist: give a finished run folder with --run (the default is "
             "made by benchmarks/bench_bootstrap.py)")  # fmt: skip
    if not (run / "hwnas_config.yaml").is_file():
        fail(f"{run} is not a hwnas run folder (no hwnas_config.yaml)")
    needed = {"supernet": ["supernet.pt"], "final": ["report.json", "subnet.pt", "arch.json"]}
    for stage, files in needed.items():
        for name in ["DONE.json", *files]:
            if not (run / stage / name).is_file():
                fail(f"{run} is unfinished: {run / stage / name} is missing (finish the run "
                     "first: rerun the command that made it, it resumes)")  # fmt: skip


def copy_stages(run: Path, out: Path) -> list[str]:
    """Copy the finished ``zero_shot/`` and ``supernet/`` of ``run`` into ``out`` (each
    through a scratch folder renamed at the end, so a kill leaves no half stage); the
    stages now finished in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for stage in COPIED:
        if not (run / stage / "DONE.json").is_file():
            continue  # a run made without that stage
        done.append(stage)
        if (out / stage / "DONE.json").is_file():
            if (out / stage / "DONE.json").read_bytes() != (run / stage / "DONE.json").read_bytes():
                fail(f"{out / stage} is not a copy of {run / stage} (the first run was made "
                     f"again since): give another --out, or move {out} away")  # fmt: skip
            continue
        scratch = out / f".{stage}.copy"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(run / stage, scratch, ignore=shutil.ignore_patterns(*SKIPPED))
        shutil.rmtree(out / stage, ignore_errors=True)
        scratch.rename(out / stage)
        print(f"copied {run / stage} -> {out / stage}", flush=True)
    return done


def int8_config(run: Path, out: Path, runtime: str, stages: list[str], extra: list[str]) -> Any:
    """The first run's recorded config with the INT8 hardware target on ``runtime``
    (timing settings kept), ``stages`` and ``out`` as its folder, ``extra`` applied."""
    from omegaconf import OmegaConf

    from hwnas.app.config import compose_config, load_run_config

    cfg = load_run_config(run)
    recorded = OmegaConf.to_container(cfg.hardware, resolve=True)
    hw = OmegaConf.to_container(compose_config([f"hardware={runtime}"]).hardware, resolve=True)
    for key in ("threads", "batch_size", "warmup", "repeats", "correction_samples"):
        if key in recorded:
            hw[key] = recorded[key]
    hw.update(precision="int8", latency="measured", table=None)
    cfg.hardware = OmegaConf.create(hw)
    cfg.stages = [*stages, "search", "final"]
    cfg.paths.output_dir = str(out)
    if "progress" in cfg:
        cfg.progress = "log"
    cfg.merge_with(OmegaConf.from_dotlist(extra))
    return cfg


def search_int8(run: Path, out: Path, runtime: str, extra: list[str]) -> float:
    """Run the pipeline in ``out`` (resumed when begun); its wall seconds."""
    from hwnas.app import pipeline

    stages = copy_stages(run, out)
    cfg = int8_config(run, out, runtime, stages, extra)
    print(f"pipeline: stages {list(cfg.stages)} in {out}, hardware {dict(cfg.hardware)}")
    t0 = time.monotonic()
    try:
        pipeline.run(cfg)
    except pipeline.ConfigError as err:
        fail(str(err))
    return time.monotonic() - t0


def run_data(run: Path) -> Any:
    """The run's data module (set up), built from its recorded config."""
    from omegaconf import OmegaConf

    from hwnas.data import build_datamodule

    cfg = OmegaConf.load(run / "hwnas_config.yaml")
    torch.manual_seed(int(cfg.get("seed", 0)))
    dm = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True))
    dm.setup()
    return dm


def rows_of(tag: str, run: Path, runtime: str, dm: Any, folder: Path, threads: int) -> list:
    """The FP32 and uniform INT8 rows of ``run``'s chosen subnet (timings to come)."""
    from hwnas.app.stages.quantize import model_inputs
    from hwnas.app.subnet_io import export_onnx, load_subnet
    from hwnas.hardware.int8 import int8_model
    from hwnas.quantize.ort_runtime import OrtModule, as_feed, model_size_mb

    report = json.loads((run / "final" / "report.json").read_text())
    metric = report.get("metric", "acc")
    sub = report["subnet"]
    # the FP32 subnet as the run deploys it (fine-tuned by the final stage where it was)
    top1 = report.get(f"deployed_test_{metric}", sub[f"test_{metric}"])
    task = dm.task()
    net = load_subnet(run / "final")
    example = task.example_inputs(1, torch.Generator().manual_seed(0))
    fp32 = export_onnx(
        net, example, folder / f"{tag}.onnx", task.input_names(), task.output_names(),
        task.dynamic_axes(),
    )  # fmt: skip
    batch = model_inputs(task, dm.calibration_loader(256))[0]
    int8 = int8_model(fp32, runtime, as_feed(batch, task.input_names()))
    module = task.deployed(net, OrtModule(int8, threads, runtime))
    int8_top1 = float(task.evaluate(module, dm.test_dataloader())[metric])
    common = {
        "search": tag, "run": str(run), "params_m": sub["params_m"], "flops_m": sub["flops_m"],
        "top1": top1, "inputs": task.example_inputs, "runtime": runtime,
        "search_cost": report.get("environment", {}).get("search_cost_model", "?"),
        "arch": report.get("arch"),
    }  # fmt: skip
    print(f"{tag}: {run / 'final'}: test {metric} {common['top1']:.4f}, INT8 here {int8_top1:.4f}")
    return [
        {**common, "precision": f"FP32 ({runtime})", "runner": fp32,
         "size_mb": model_size_mb(fp32)},
        {**common, "precision": f"uniform INT8 ({runtime})", "runner": int8,
         "size_mb": model_size_mb(int8), "int8_top1": int8_top1},
    ]  # fmt: skip


def time_rows(rows: list[dict], args: argparse.Namespace, search_batch: int) -> None:
    """Latency at batch 1 and at the searches' batch, throughput at ``--batch``: every
    file timed in interleaved rounds (reversed every other round), medians of rounds."""
    from hwnas.quantize.ort_runtime import time_onnx

    settings = [("b1_ms", 1), ("bs_ms", search_batch), ("thr_ms", args.batch)]
    warmup = max(3, args.repeats // 4)

    def timed(i: int, setting: tuple) -> float:
        row = rows[i]
        return time_onnx(
            row["runner"], row["inputs"], batch_size=setting[1], threads=args.threads,
            warmup=warmup, repeats=args.repeats, runtime=row["runtime"],
        ).median_ms  # fmt: skip

    med = bench_bootstrap().interleaved(len(rows), settings, args.rounds, timed)
    for row, m in zip(rows, med, strict=True):
        row["b1_ms"], row["bs_ms"] = m["b1_ms"], m["bs_ms"]
        row["thr"] = args.batch / (m["thr_ms"] / 1e3)
    fp32, int8 = rows[0::2], rows[1::2]
    for a, b in zip(fp32, int8, strict=True):
        a["x_fp32"], b["x_fp32"] = 1.0, b["thr"] / a["thr"]
    for i, row in enumerate(rows):  # rows[0] and rows[1]: the FP32-ranked subnet
        row["x_first"] = row["thr"] / rows[i % 2]["thr"]


def findings(rows: list[dict], runtime: str) -> list[str]:
    first, second = rows[1], rows[3]  # the INT8 rows
    a, b = first["arch"] or {}, second["arch"] or {}
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    genes = ", ".join(differ[:8]) + (", ..." if len(differ) > 8 else "")
    same = (
        f"The chosen subnets differ in {len(differ)} of {len(a)} genes ({genes})"
        if differ
        else "The two searches chose the same subnet"
    )
    return [
        f"- {same}.",
        f"- Search cost models: FP32-ranked: {rows[0]['search_cost']}; INT8-ranked: "
        f"{rows[2]['search_cost']}.",
        f"- In INT8 on {runtime}, the INT8-ranked subnet runs {second['x_first']:.2f}x the "
        f"throughput of the FP32-ranked one ({second['b1_ms']:.3f} vs {first['b1_ms']:.3f} ms "
        f"at batch 1, {second['bs_ms']:.3f} vs {first['bs_ms']:.3f} ms at the searches' "
        f"batch), test top-1 {second['top1']:.2%} vs {first['top1']:.2%} (final reports; "
        f"uniform INT8 here {second['int8_top1']:.2%} vs {first['int8_top1']:.2%}).",
        f"- Quantization gains: FP32-ranked subnet {first['x_fp32']:.2f}x, INT8-ranked "
        f"{second['x_fp32']:.2f}x (uniform INT8 over its own FP32 on {runtime}).",
    ]


def main() -> None:
    from hwnas.quantize.deploy import available_runtimes
    from hwnas.quantize.ort_runtime import RUNTIMES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--run",
        type=Path,
        default=ROOT / "outputs" / "bench_bootstrap" / "run",
        help="a finished run (its search ranked subnets by FP32 latency)",
    )
    p.add_argument("--out", type=Path, default=None, help="the INT8 run (default <run>_int8)")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="openvino",
        help="the runtime the INT8 search times and the table measures on",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="timing threads")
    p.add_argument("--batch", type=int, default=256, help="throughput batch size")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("overrides", nargs="*", help="KEY=VALUE for the INT8 run's config")
    args = p.parse_args()  # fmt: skip
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"{bad[0]!r}: overrides are KEY=VALUE")
    run = args.run.resolve()
    out = (args.out or run.with_name(run.name + "_int8")).resolve()
    check_run(run)
    if out == run:
        fail("--out is the first run's folder: give another one")
    if args.runtime not in available_runtimes():
        fail(f"{args.runtime} is not installed here (pip install 'hwnas[openvino]')")
    os.chdir(ROOT)  # the recorded config's relative paths (data, cache) are the repo's
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    header = cpu_line()
    print(header, flush=True)
    search_s = search_int8(run, out, args.runtime, args.overrides)
    from omegaconf import OmegaConf

    search_batch = int(OmegaConf.load(out / "hwnas_config.yaml").hardware.batch_size)
    dm = run_data(run)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="joint-search-") as tmp:
        for tag, folder in (("FP32 latency", run), ("INT8 latency", out)):
            rows += rows_of(tag, folder, args.runtime, dm, Path(tmp), args.threads)
        print(f"timing: {len(rows)} files x 3 settings x {args.rounds} rounds ...", flush=True)
        t0 = time.monotonic()
        time_rows(rows, args, search_batch)
        timing_s = time.monotonic() - t0
    lines = [
        header,
        f"First run (searched by FP32 latency): {run}; INT8 run (searched by the latency of "
        f"its uniform-INT8 {args.runtime} deployment, the same trained supernet): {out}.",
        "",
        markdown(rows, COLUMNS),
        "",
        f"{args.threads} threads on {args.runtime}; latency at batch 1 and at the searches' "
        f"batch {search_batch}, throughput (img/s) at batch {args.batch}; medians of "
        f"{args.repeats} runs, {args.rounds} interleaved rounds. x own FP32: throughput over "
        "the same subnet's FP32 model; x FP32-ranked: over the FP32-ranked subnet at the same "
        "precision. INT8 top-1: the uniform INT8 model scored here on the run's test set "
        "(calibrated on one batch of its calibration data).",
        *findings(rows, args.runtime),
        f"Wall time: INT8 search and final stage {search_s / 60:.1f} min (0 when resumed "
        f"finished), timing {timing_s / 60:.1f} min.",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "joint_search.md").write_text(text + "\n")
    with (out / "joint_search.csv").open("w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["run", *[k for k, _, _ in COLUMNS]], extrasaction="ignore"
        )
        w.writeheader()
        w.writerows(rows)
    print(f"\nwritten: {out / 'joint_search.md'}, {out / 'joint_search.csv'}")


if __name__ == "__main__":
    main()
