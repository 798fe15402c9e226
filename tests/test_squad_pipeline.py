"""The whole pipeline (all four stages) with a tiny BERT checkpoint on the SQuAD fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.app.pipeline import run
from hwnas.app.subnet_io import load_subnet
from hwnas.data import build_datamodule
from tests.conftest import compose_config

FIXTURE = Path(__file__).parent / "fixtures" / "squad"


def squad_config(out: Path, *extra: str):
    return compose_config(["experiment=squad_tiny", f"paths.output_dir={out}",
                           f"paths.cache_dir={out.parent / 'cache'}",
                           f"data.data_dir={FIXTURE}", f"model.pretrained={FIXTURE / 'tiny_bert'}",
                           *extra])  # fmt: skip


@pytest.fixture(scope="module")
def squad_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("squad") / "run"
    metrics = run(squad_config(out))
    return out, metrics


def test_every_stage_finishes(squad_run):
    out, metrics = squad_run
    for stage in ("zero_shot", "supernet", "search", "final"):
        assert (out / stage / "DONE.json").is_file(), stage
    report = json.loads((out / "final/report.json").read_text())
    assert report["space"] == "elastic_bert" and report["metric"] == "f1"
    assert report["task"] == "extractive_qa" and report["sample_unit"] == "questions"
    for side in ("largest", "subnet"):
        assert set(report[side]["test_metrics"]) == {"f1", "exact_match", "loss"}
        assert 0.0 <= report[side]["test_f1"] <= 1.0
        assert report[side]["test_metrics"]["exact_match"] <= report[side]["test_f1"] + 1e-9
    assert report["subnet"]["flops_m"] <= report["largest"]["flops_m"]
    assert metrics["final/test_f1"] == report["deployed_test_f1"]
    assert "exact_match" in (out / "final/report.md").read_text()


def test_saved_bert_reloads_and_matches_its_onnx(squad_run):
    import onnxruntime as ort

    out, _ = squad_run
    spec = json.loads((out / "final/arch.json").read_text())
    assert spec["task"] == "extractive_qa" and spec["tokenizer"]
    net = load_subnet(out / "final").eval()
    dm = build_datamodule(squad_config(out).data)
    batch = next(iter(dm.test_dataloader()))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sess = ort.InferenceSession(str(out / "final/subnet.onnx"))
    assert [i.name for i in sess.get_inputs()] == names
    (onnx_out,) = sess.run(None, {n: batch[n].numpy() for n in names})
    with torch.no_grad():
        expected = net(*(batch[n] for n in names)).numpy()
    assert expected.shape == (len(batch["input_ids"]), spec["max_seq_length"], 2)
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)


def test_search_scores_subnets_by_official_f1(squad_run):
    out, _ = squad_run
    chosen = json.loads((out / "search/chosen.json").read_text())
    assert chosen["val_primary"] == "f1"
    assert set(chosen["val_metrics"]) >= {"f1", "exact_match"}


def test_bn_free_models_do_not_claim_bn_recalibration(squad_run):
    out, _ = squad_run
    report = json.loads((out / "final/report.json").read_text())
    assert report["inherited_method"] == "inherited supernet weights"
    chosen = json.loads((out / "search/chosen.json").read_text())
    assert "BN" not in chosen["val_method"]


QUANT_SMALL = [
    "quantize.val_samples=16", "quantize.calib_samples=8", "quantize.hessian_samples=2",
    "quantize.hessian_batch=4", "quantize.strategy.trials=6",
    "quantize.strategy.population_size=4", "quantize.repeats=2", "quantize.warmup=0",
    "quantize.throughput_batch=4", "quantize.measure_front=2", "quantize.max_drop=0.5",
]  # fmt: skip


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_bert_quantizes_per_layer_with_int4_on_either_runtime(squad_run, tmp_path, runtime):
    """The encoder linears of the BERT subnet get INT8 or INT4 per layer; calibration,
    timing inputs and F1 come from the QA task; deployed on OpenVINO, the report shows
    both runtimes (the ONNX Runtime case deploys on its own runtime only, to save time)."""
    from hwnas.app.quantize_cli import main

    out, _ = squad_run
    q = tmp_path / "q"
    args = [f"run_dir={out}", f"output_dir={q}", f"quantize.runtime={runtime}",
            "quantize.choices=[int4,int8,fp32]", *QUANT_SMALL,
            f"quantize.compare={str(runtime == 'openvino').lower()}"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((q / "report.json").read_text())
    assert report["runtime"] == runtime and report["metric"] == "f1"
    assert (q / report["model"]).suffix == (".xml" if runtime == "openvino" else ".onnx")
    layers = report["int4_layers"]
    assert layers and {n.split(".")[0] for n in layers} <= {"encoder", "head"}
    # uniform INT4 (INT8 where no kernel) is smaller on disk than uniform INT8
    assert report["int4"]["size_mb"] < report["int8"]["size_mb"] < report["fp32"]["size_mb"]
    for side in ("fp32", "int8", "int4", "chosen"):
        assert 0.0 <= report[side]["test"] <= 1.0 and report[side]["peak_memory_mb"] > 0
    if runtime == "openvino":
        assert set(report["compare"]) == {"onnxruntime"}
        assert set(report["compare"]["onnxruntime"]) >= {"fp32", "int8", "int4", "chosen"}
    else:
        assert not report.get("compare")
    assert report["machine"]["versions"][runtime] and report["machine"]["cpu"]
    rows = (q / "sensitivity.csv").read_text().splitlines()
    assert sum(",int4," in r for r in rows) == len(layers)
    names = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
    shown = [n for n in names.values() if n in (q / "report.md").read_text()]
    assert shown == ([names[runtime]] if runtime == "onnxruntime" else list(names.values()))
