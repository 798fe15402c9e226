"""INT8 and INT4 speed of the transformer encoders on both runtimes, side by side.

The SQuAD reader (the largest subnet of ``experiment=squad_minilm``'s elastic BERT:
MiniLM-L6-H384 size, 6 layers, hidden 384, 12 heads, FFN 1536, 128 tokens) and the
speech encoder (the largest subnet of ``experiment=asr_spoken_synth``'s RNN-T: front
end, projection and transformer layers on 4 s of log-mel features) are exported to
ONNX and deployed, with the quantize stage's own functions
(:func:`hwnas.quantize.deploy.deploy_assignment`), as

- FP32,
- uniform INT8 (every conv / linear layer; ONNX Runtime static QDQ, NNCF on OpenVINO),
- INT4 weight-only on every linear layer the runtime has INT4 kernels for, INT8 on the
  rest (ONNX Runtime ``MatMulNBits``, NNCF weight compression),

on ONNX Runtime and on OpenVINO, and timed in interleaved rounds (median of the rounds'
medians): latency at batch 1 and throughput at ``--batch``, with ``--threads`` threads;
size on disk; peak memory of loading and one batch-1 run in a fresh process; and the
relative L2 distance of each model's outputs from the FP32 export's on one batch (the
numerical cost of the rounding; accuracy needs the trained demo runs and the quantize
stage). Weights are the models' seeded initialisation: speed does not depend on them.
Calibration uses random batches of the task's own input kind (token ids, features).

    .venv/bin/python benchmarks/bench_quant_speed.py [--models bert rnnt] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

RUNTIMES = ("onnxruntime", "openvino")
BERT = ["experiment=squad_minilm", "model.pretrained=null", "+model.vocab_size=30522",
        "data.max_seq_length=128"]  # fmt: skip
RNNT = ["experiment=asr_spoken_synth"]
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def build(name: str) -> tuple[torch.nn.Module, Any, list[str], list[str], dict]:
    """The largest subnet, its inputs factory, input and output names, dynamic axes."""
    from hwnas.app.config import compose_config
    from hwnas.elastic import build_model

    torch.manual_seed(0)
    if name == "bert":
        from hwnas.domains.qa.task import ExtractiveQA

        cfg = compose_config([*BERT, "paths.output_dir=unused"])
        seq = int(cfg.data.max_seq_length)
        model = build_model(OmegaConf.to_container(cfg.model, resolve=True), (seq,), 2)
        task = ExtractiveQA(seq, model.vocab_size, store=None)
        sub = model.export(model.space.max_arch()).eval()
        return sub, task.example_inputs, task.input_names(), task.output_names(), {}
    from hwnas.domains.asr.task import INPUT_NAMES, OUTPUT_NAMES

    cfg = compose_config([*RNNT, "paths.output_dir=unused"])
    n_mels = int(cfg.data.n_mels)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), (n_mels,), 64)
    sub = model.export(model.space.max_arch()).eval()
    axes = {"features": {1: "frames"}, "encoder_out": {1: "encoder_frames"}}
    return sub, model.example_inputs, list(INPUT_NAMES), list(OUTPUT_NAMES), axes


def deploy_all(name: str, folder: Path) -> tuple[dict[tuple[str, str], Path], Any, Any]:
    """``{(runtime, variant): model path}``, the FP32 export's module and the inputs."""
    from hwnas.app.subnet_io import export_onnx
    from hwnas.quantize.deploy import available_runtimes, deploy_assignment, int4_layers
    from hwnas.quantize.layers import called_layers, onnx_layer_nodes

    sub, inputs, in_names, out_names, axes = build(name)
    example = inputs(1, torch.Generator().manual_seed(0))
    fp32 = export_onnx(sub, example, folder / f"{name}.onnx", in_names, out_names, axes)
    layers = called_layers(sub, example)
    nodes = onnx_layer_nodes(sub, fp32, layers, example=example)
    calib = [inputs(8, torch.Generator().manual_seed(i + 1)) for i in range(4)]
    out: dict[tuple[str, str], Path] = {}
    for rt in [r for r in RUNTIMES if r in available_runtimes()]:
        four = set(int4_layers(rt, layers, nodes, fp32))
        variants = {
            "fp32": dict.fromkeys((x.name for x in layers), "fp32"),
            "int8": dict.fromkeys((x.name for x in layers), "int8"),
            "int4": {x.name: "int4" if x.name in four else "int8" for x in layers},
        }
        for variant, assign in variants.items():
            t0 = time.perf_counter()
            out[rt, variant] = deploy_assignment(
                rt, fp32, assign, calib, folder / f"{name}_{rt}_{variant}", layer_nodes=nodes
            )
            print(f"  {name} {rt} {variant}: deployed in {time.perf_counter() - t0:.1f} s "
                  f"({len(four)} of {len(layers)} layers INT4-capable)", flush=True)  # fmt: skip
    return out, sub, inputs


def measure(name: str, paths: dict, sub: Any, inputs: Any, args: argparse.Namespace) -> list:
    from hwnas.quantize.ort_runtime import (
        OrtModule,
        model_size_mb,
        peak_memory_mb,
        throughput,
        time_onnx,
    )

    x = inputs(8, torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref = sub(*x)
    ref = ref[0] if isinstance(ref, tuple) else ref
    timing = dict(threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    lat: dict = {k: [] for k in paths}
    thr: dict = {k: [] for k in paths}
    for _ in range(args.rounds):  # interleaved: drift of the machine hits every model
        for key, path in paths.items():
            rt = key[0]
            lat[key].append(time_onnx(path, inputs, 1, runtime=rt, **timing).median_ms)
            big = time_onnx(path, inputs, args.batch, runtime=rt, **timing)
            thr[key].append(throughput(big))
    rows = []
    for (rt, variant), path in paths.items():
        y = OrtModule(path, args.threads, rt)(*x)
        y = y[0] if isinstance(y, tuple) else y
        err = float((y.float() - ref).norm() / ref.norm())
        tput = sorted(thr[rt, variant])[len(thr[rt, variant]) // 2]
        base = sorted(thr[rt, "fp32"])[len(thr[rt, "fp32"]) // 2]
        rows.append({
            "model": name, "runtime": rt, "variant": variant, "size_mb": model_size_mb(path),
            "peak_mb": peak_memory_mb(path, inputs, 1, rt),
            "latency_ms": sorted(lat[rt, variant])[len(lat[rt, variant]) // 2],
            "throughput": tput, "speedup": tput / base, "rel_l2": err,
        })  # fmt: skip
    return rows


def header(args: argparse.Namespace) -> str:
    from hwnas.app.quantize_report import machine_info

    m = machine_info()
    flags = " ".join(m["flags"]) or "none of " + " ".join(FLAGS)
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    return (f"CPU: {m['cpu']}; flags: {flags}; {versions}; {args.threads} threads, "
            f"throughput at batch {args.batch}, latency at batch 1, medians of "
            f"{args.repeats} runs in {args.rounds} interleaved rounds")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["bert", "rnnt"], choices=["bert", "rnnt"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwnas-qspeed-") as tmp:
        for name in args.models:
            paths, sub, inputs = deploy_all(name, Path(tmp))
            rows += measure(name, paths, sub, inputs, args)
    print("\n" + header(args) + "\n")
    print(
        "| model | runtime | precision | size (MB) | peak memory (MB) | latency b1 (ms) "
        "| throughput (/s) | vs FP32 same runtime | output rel. L2 vs FP32 |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    label = {"fp32": "FP32", "int8": "uniform INT8", "int4": "INT4 linears, INT8 rest"}
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {label[r['variant']]} | {r['size_mb']:.2f} | "
              f"{r['peak_mb']:.1f} | {r['latency_ms']:.2f} | {r['throughput']:.1f} | "
              f"{r['speedup']:.2f}x | {r['rel_l2']:.4f} |")  # fmt: skip
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
