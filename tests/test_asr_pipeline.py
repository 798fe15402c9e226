"""The whole pipeline (all four stages) with a tiny RNN-T on a tiny espeak-ng corpus."""

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


def asr_config(out: Path, *extra: str):
    return compose_config(["experiment=asr_tiny", f"paths.output_dir={out}",
                           f"paths.cache_dir={out.parent / 'cache'}",
                           f"data.data_dir={out.parent / 'data'}", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("asr") / "run"
    metrics = run(asr_config(out))
    return out, metrics


def test_every_stage_finishes(asr_run):
    out, metrics = asr_run
    for stage in ("zero_shot", "supernet", "search", "final"):
        assert (out / stage / "DONE.json").is_file(), stage
    report = json.loads((out / "final/report.json").read_text())
    assert report["space"] == "elastic_rnnt" and report["metric"] == "wer"
    assert report["task"] == "transducer_asr" and report["higher_is_better"] is False
    for side in ("largest", "subnet"):
        assert set(report[side]["test_metrics"]) == {"wer", "cer"}
        assert report[side]["test_wer"] >= 0.0
        # the real-time factor is latency over the seconds of audio processed
        row = report[side]
        assert row["real_time_factor"] == pytest.approx(row["latency_ms"] / 1000.0 / 1.0)
    assert report["subnet"]["flops_m"] <= report["largest"]["flops_m"]
    assert metrics["final/test_wer"] == report["deployed_test_wer"]
    text = (out / "final/report.md").read_text()
    assert "real-time factor" in text and "cer" in text


def test_saved_rnnt_reloads_decodes_and_matches_its_onnx_encoder(asr_run):
    import onnxruntime as ort

    out, _ = asr_run
    spec = json.loads((out / "final/arch.json").read_text())
    assert spec["task"] == "transducer_asr" and spec["vocabulary"]
    net = load_subnet(out / "final").eval()
    dm = build_datamodule(asr_config(out).data)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    feats, lengths = batch["features"], batch["feature_lengths"]
    sess = ort.InferenceSession(str(out / "final/subnet.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["features", "feature_lengths"]
    enc, enc_len = sess.run(None, {"features": feats.numpy(), "feature_lengths": lengths.numpy()})
    with torch.no_grad():
        ref, ref_len = net(feats, lengths)
    np.testing.assert_array_equal(enc_len, ref_len.numpy())
    np.testing.assert_allclose(enc, ref.numpy(), rtol=1e-4, atol=1e-4)
    hyps = net.transcribe(feats, lengths)
    assert len(hyps) == len(feats)
    assert all(isinstance(dm.vocab.decode(h), str) for h in hyps)


def test_search_scores_subnets_by_wer(asr_run):
    out, _ = asr_run
    chosen = json.loads((out / "search/chosen.json").read_text())
    assert chosen["val_primary"] == "wer"
    assert set(chosen["val_metrics"]) >= {"wer", "cer"}
    assert "BN" not in chosen["val_method"]


def test_rnnt_encoder_quantizes_and_decodes_through_the_runtime(asr_run, tmp_path):
    """The exported forward is the encoder: its layers are quantized (not the predictor
    or joiner, which decode in PyTorch), WER is measured on the quantized encoder."""
    from hwnas.app.quantize_cli import main

    out, _ = asr_run
    q = tmp_path / "q"
    small = [
        "quantize.val_samples=8", "quantize.calib_samples=8", "quantize.hessian_samples=2",
        "quantize.hessian_batch=4", "quantize.strategy.trials=4",
        "quantize.strategy.population_size=4", "quantize.repeats=2", "quantize.warmup=0",
        "quantize.throughput_batch=4", "quantize.measure_front=2", "quantize.compare=false",
    ]  # fmt: skip
    assert main([f"run_dir={out}", f"output_dir={q}", *small]) == 0
    report = json.loads((q / "report.json").read_text())
    assignment = json.loads((q / "assignment.json").read_text())
    assert assignment and not any(n.startswith(("predictor", "joiner")) for n in assignment)
    assert any(n.startswith("encoder.") for n in assignment)
    assert report["metric"] == "wer" and report["compare"] == {}
    for side in ("fp32", "int8", "chosen"):
        assert 0.0 <= report[side]["test"] <= 1.5
