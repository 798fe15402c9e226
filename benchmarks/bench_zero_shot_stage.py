"""DE-Score candidates per second in the pipeline's own zero-shot stage, per search space
(the CNN also beside one CPU-bound process), and the time to score one BERT-base-size
candidate, in one run.

``--spaces`` (default ``cnn``; ``all`` = the four): each space runs ``python -m hwnas
stages=[zero_shot]`` in a fresh process with its experiment at its demo size -- cnn: the
default config (the CNN space on FashionMNIST's shape); vit: ``experiment=vit_fashion_mnist``;
bert: ``experiment=squad_minilm``; rnnt: ``experiment=asr_spoken_synth`` -- the shipped
DE-Score, data-free proxy batch, latency from the lookup table, ``threads: auto``, and
reads ``zero_shot/candidates_per_s`` from the run's ``metrics.json``: unique archs scored
over the stage's wall time, search bookkeeping and latency lookups included. A warm-up run
per space first builds and caches its latency table (rnnt: on first use it also generates
the espeak-ng corpus, a few minutes); a space whose data is missing is skipped with the
reason and the command that provides it (``make data``, ``make data-squad``, ``make
data-speech``). Every space runs idle (after the load settles, at most ``--idle-wait`` s);
cnn also runs beside a pure-Python busy loop on one core, started before its runs (so
``threads: auto`` sees it, as it would see a real neighbour), unless ``--idle-only``. Each
condition runs ``--repeats`` times; the medians are reported in one table (space,
experiment, candidates/s, threads, proxy failures) with the CPU model and flags. Targets
(cnn only, 2-core machine): >= 10 candidates/s idle, >= 5 beside one busy process; the
other spaces have none.
``--proxy denas_rank`` (any conf/proxy entry) measures another DE-Score. Further Hydra
overrides go to every space; ``SPACE:key=value`` to that space only.

``--bert-base``: one BERT-base-size candidate (12 layers, hidden 768, 12 heads of 64, MLP
3072, vocabulary 30522, random init: no checkpoint or data files needed), built by
``hwnas.elastic.build_model`` from ``experiment=squad_minilm``'s ``elastic_bert`` config
with those sizes as its largest arch; the largest arch is exported and wrapped by
``model.proxy_module``, and the QA task's data-free proxy batch (batch 32, sequence 128 =
``data.max_seq_length``) is scored by ``DEScore.components`` (``latency_ms=0.0``: no
latency is timed; FLOPs come from the analytic cost, as in the stage). One warm-up (its
per-proxy seconds give each proxy's share), then the median of ``--repeats``. Threads:
a ``threads=N`` override, else ``auto``. Alone it runs only this; with ``--spaces`` both.

    .venv/bin/python benchmarks/bench_zero_shot_stage.py [--spaces all] [--budget 200]
        [--repeats 3] [--idle-only] [--bert-base] [threads=1] [rnnt:data.train_size=24]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"idle": 10.0, "1 busy process": 5.0}  # cnn only
# space -> (experiment, the command that provides its data)
SPACES = {
    "cnn": (None, "make data"),
    "vit": ("vit_fashion_mnist", "make data"),
    "bert": ("squad_minilm", "make data-squad"),
    "rnnt": ("asr_spoken_synth", "make data-speech"),
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
BERT_BASE = [  # largest arch 12 layers, hidden 768, 12 heads of 64, MLP 3072
    "experiment=squad_minilm", "model.pretrained=null", "+model.vocab_size=30522",
    "+model.max_depth=12", "+model.head_dim=64", "model.depth_choices=[6,9,12]",
    "model.embed_choices=[768]", "model.head_choices=[6,9,12]",
    "model.ffn_choices=[1536,2304,3072]", "data.max_seq_length=128", "zero_shot.batch_size=32",
]  # fmt: skip


def _hog() -> None:
    while True:
        pass


def wait_for_idle(limit_s: float = 180.0) -> None:
    """Wait (at most ``limit_s``) until the 1-minute load average is below 0.5."""
    end = time.monotonic() + limit_s
    while os.getloadavg()[0] >= 0.5 and time.monotonic() < end:
        time.sleep(5)
    if os.getloadavg()[0] >= 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: the machine is not idle")


def cpu_info() -> str:
    """The CPU model and which of :data:`CPU_FLAGS` it has (the readers hwnas's model
    cards and latency tables use)."""
    from hwnas.hardware.latency import device_name
    from hwnas.quantize.onnx_quant import cpu_flags

    flags = cpu_flags()
    have = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in CPU_FLAGS)
    return f"CPU: {device_name('cpu')}, {os.cpu_count()} CPUs; flags: {have}"


def space_overrides(space: str, overrides: list[str]) -> list[str]:
    """The space's experiment, the shared overrides and its own ``SPACE:key=value`` ones."""
    experiment = SPACES[space][0]
    out = [] if experiment is None else [f"experiment={experiment}"]
    for o in overrides:
        head, sep, rest = o.partition(":")
        if not (sep and head in SPACES):
            out.append(o)
        elif head == space:
            out.append(rest)
    return out


class StageError(RuntimeError):
    """The zero-shot stage exited with an error; the message is its one-line reason."""


def run_stage(out: Path, budget: int, proxy: str, extra: list[str]) -> dict[str, float]:
    cmd = [
        sys.executable, "-m", "hwnas", "stages=[zero_shot]", f"zero_shot.budget={budget}",
        f"proxy={proxy}", f"hydra.run.dir={out}", "progress=log", *extra,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
        errors = [ln for ln in lines if ln.startswith("error:")]
        raise StageError((errors or lines)[-1].removeprefix("error: ")[:300])
    metrics = json.loads((out / "metrics.json").read_text())
    result = json.loads((out / "zero_shot" / "result.json").read_text())
    threads = next(
        (line.split("(")[-1].split()[0] for line in (proc.stdout + proc.stderr).splitlines()
         if "CPU threads)" in line), "?"
    )  # fmt: skip
    return {
        "rate": metrics["zero_shot/candidates_per_s"],
        "failures": sum((result.get("proxy_failures") or {}).values()),
        "threads": threads,
    }


def bench_spaces(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Warm-up per space, then the idle runs of every space, then cnn beside a busy loop."""
    ready: list[str] = []
    rows: list[dict] = []
    for space in args.spaces:
        extra = space_overrides(space, args.overrides)
        note = " (generates the spoken corpus on first use: minutes)" if space == "rnnt" else ""
        print(f"warm-up {space}: {' '.join(extra) or '(default config)'}{note}", flush=True)
        try:  # builds and caches the latency table, so timed runs only look it up
            run_stage(tmp / f"warm-{space}", min(20, args.budget), args.proxy, extra)
            ready.append(space)
        except StageError as err:
            fix = SPACES[space][1]
            print(f"skip {space}: {err} -- `{fix}` provides its data")
            rows.append({"space": space, "cond": "-", "skip": f"skipped ({fix})"})
    conds = [c for c in TARGETS if not (args.idle_only and c != "idle")]
    for cond in conds:
        hog = None
        if not ready:
            break
        if cond == "idle":
            wait_for_idle(args.idle_wait)
        else:
            if "cnn" not in ready:
                break
            hog = mp.Process(target=_hog, daemon=True)
            hog.start()
            time.sleep(65)  # let the 1-minute load average see it, as threads: auto may read it
        try:
            for space in ready if cond == "idle" else ["cnn"]:
                row = {"space": space, "cond": cond, "rates": [], "failures": 0, "threads": "?"}
                for rep in range(args.repeats):
                    out = tmp / f"{space}-{cond}{rep}"
                    extra = space_overrides(space, args.overrides)
                    try:
                        r = run_stage(out, args.budget, args.proxy, extra)
                    except StageError as err:
                        print(f"  {space} {cond} run {rep + 1} failed: {err}")
                        continue
                    row["rates"].append(r["rate"])
                    row["failures"] += r["failures"]
                    row["threads"] = r["threads"]
                    line = f"({r['threads']} threads, {r['failures']} proxy failures)"
                    print(f"  {space:4s} {cond:15s} run {rep + 1}: {r['rate']:.1f} "
                          f"candidates/s {line}", flush=True)  # fmt: skip
                rows.append(row)
        finally:
            if hog is not None:
                hog.terminate()
                hog.join()
    return rows


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nzero-shot stage, proxy={args.proxy}, {args.budget} archs per run, median of "
          f"{args.repeats}")  # fmt: skip
    print(cpu_info())
    print(f"  {'space':5s} {'experiment':18s} {'condition':15s} {'cand/s':>7s} {'threads':>7s} "
          f"{'proxy failures':>14s}  target")  # fmt: skip
    medians = {}
    for row in sorted(rows, key=lambda r: list(SPACES).index(r["space"])):
        exp = SPACES[row["space"]][0] or "(default)"
        head = f"  {row['space']:5s} {exp:18s} {row['cond']:15s}"
        if "skip" in row or not row["rates"]:
            print(f"{head} {row.get('skip', 'every run failed')}")
            continue
        med = statistics.median(row["rates"])
        medians[(row["space"], row["cond"])] = med
        target = TARGETS[row["cond"]] if row["space"] == "cnn" else None
        verdict = (
            "-" if target is None else f">= {target:g}: " + ("meets" if med >= target else "MISSES")
        )
        print(f"{head} {med:7.1f} {row['threads']:>7s} {row['failures']:14d}  {verdict}")
    if ("cnn", "idle") in medians and ("cnn", "1 busy process") in medians:
        ratio = medians[("cnn", "1 busy process")] / medians[("cnn", "idle")]
        print(f"  cnn under load / idle: {ratio:.2f}")


def bench_bert_base(args: argparse.Namespace) -> None:
    """Seconds to DE-Score one BERT-base-size candidate (see the module docstring)."""
    import torch
    from omegaconf import OmegaConf

    from hwnas.app.config import compose_config
    from hwnas.app.context import zero_shot_device
    from hwnas.core.runtime import resolve_threads, torch_threads
    from hwnas.domains.qa.task import ExtractiveQA
    from hwnas.elastic import build_model
    from hwnas.proxies import score_proxies_report
    from hwnas.proxies.descore import DEScore
    from hwnas.search.objectives import analytic_proxies

    setting = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("threads=")), "auto")
    cfg = compose_config([*BERT_BASE, f"proxy={args.proxy}", "paths.output_dir=unused"])
    seq, batch, seed = int(cfg.data.max_seq_length), int(cfg.zero_shot.batch_size), int(cfg.seed)
    device = torch.device(zero_shot_device(cfg.zero_shot.device))
    torch.manual_seed(seed)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), (seq,), 2)
    arch = model.space.max_arch()
    costs = model.cost_of(arch)
    known = analytic_proxies(costs)  # as the stage: FLOPs from the analytic cost
    descore = DEScore.from_config(OmegaConf.to_container(cfg.proxy, resolve=True))
    task = ExtractiveQA(seq, model.vocab_size, store=None)  # data-free: no feature store
    inputs = task.proxy_inputs(batch, seed, device, shape=model.proxy_shape)
    print(f"\nBERT-base-size candidate: {cfg.model.max_depth} layers, hidden "
          f"{max(cfg.model.embed_choices)}, {max(cfg.model.head_choices)} heads of "
          f"{cfg.model.head_dim}, MLP {max(cfg.model.ffn_choices)}; {costs['params_m']:.1f} M "
          f"params, {costs['flops_m'] / 1e3:.1f} GFLOPs per sequence; proxy batch "
          f"{tuple(inputs.x.shape)} on {device}", flush=True)  # fmt: skip

    def candidate() -> tuple[torch.nn.Module, float]:
        t0 = time.perf_counter()
        sub = model.proxy_module(model.export(arch)).to(device)
        return sub, time.perf_counter() - t0

    with torch_threads(resolve_threads(setting)) as threads:
        sub, _ = candidate()  # warm-up, proxy by proxy for their shares
        names = [p for p in descore.proxies() if p not in known]
        report = score_proxies_report(names, sub, inputs, seed, owned=True)
        del sub
        export_s, score_s = [], []
        for rep in range(args.repeats):
            sub, seconds = candidate()
            export_s.append(seconds)
            failures: dict[str, str] = {}
            t0 = time.perf_counter()
            descore.components(sub, inputs, seed, latency_ms=0.0, failures=failures,
                               known=known, owned=True)  # fmt: skip
            score_s.append(time.perf_counter() - t0)
            del sub
            print(f"  run {rep + 1}: components {score_s[-1]:.2f} s, export {seconds:.2f} s"
                  f"{f', failed: {sorted(failures)}' if failures else ''}", flush=True)  # fmt: skip
    med = statistics.median(score_s)
    print(f"BERT-base-size DE-Score ({args.proxy}), median of {args.repeats}, {threads} "
          f"threads: {med:.2f} s per candidate ({1 / med:.3f} candidates/s) + "
          f"{statistics.median(export_s):.2f} s export and wrap")  # fmt: skip
    total = sum(report.seconds.values()) or 1.0
    shares = ", ".join(
        f"{n} {s:.2f} s ({100 * s / total:.0f} %)" for n, s in report.seconds.items()
    )
    print(f"  per proxy (warm-up pass; a shared pass is split evenly): {shares}")
    for name, error in report.failures.items():
        print(f"  {name} failed: {error}")
    print(cpu_info())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="+", choices=[*SPACES, "all"], default=None,
                    help="search spaces to time (default: cnn; all = the four)")  # fmt: skip
    ap.add_argument("--budget", type=int, default=200, help="archs scored per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--proxy", default="descore", help="conf/proxy entry (DE-Score)")
    ap.add_argument("--idle-only", action="store_true", help="skip cnn's busy condition")
    ap.add_argument("--idle-wait", type=float, default=180.0,
                    help="most seconds to wait for load < 0.5 before idle runs")  # fmt: skip
    ap.add_argument("--bert-base", action="store_true",
                    help="time one BERT-base-size candidate's DE-Score")  # fmt: skip
    ap.add_argument("overrides", nargs="*",
                    help="Hydra overrides; SPACE:key=value: one space's (after --spaces: "
                    "put -- first)")  # fmt: skip
    args = ap.parse_args()
    if args.spaces is None:
        args.spaces = [] if args.bert_base else ["cnn"]
    elif "all" in args.spaces:
        args.spaces = list(SPACES)
    args.spaces = list(dict.fromkeys(args.spaces))
    if args.spaces:
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_spaces(args, Path(tmp))
        print_table(rows, args)
    if args.bert_base:
        bench_bert_base(args)


if __name__ == "__main__":
    main()
