"""The whole pipeline (all four stages) with a tiny elastic ViT on synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.app.pipeline import run
from hwnas.app.subnet_io import load_subnet
from hwnas.domains.image.models.vit import ElasticViT
from tests.conftest import compose_config


def vit_config(out: Path):
    return compose_config(["experiment=vit_synthetic_tiny", f"paths.output_dir={out}",
                           f"paths.cache_dir={out.parent / 'cache'}"])


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "run"
    calls: list[str] = []
    reorganize = ElasticViT.reorganize_by_importance

    def spy(self: ElasticViT, saliency=None) -> None:
        calls.append("reorganize")
        reorganize(self, saliency)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ElasticViT, "reorganize_by_importance", spy)
        metrics = run(vit_config(out))
    return out, metrics, calls


def test_every_stage_finishes_and_the_report_is_written(vit_run):
    out, metrics, _ = vit_run
    for stage in ("zero_shot", "supernet", "search", "final"):
        assert (out / stage / "DONE.json").is_file(), stage
    for rel in ("zero_shot/pareto.csv", "search/pareto.csv", "search/chosen.json",
                "final/subnet.pt", "final/arch.json", "final/subnet.onnx",
                "final/report.md"):  # fmt: skip
        assert (out / rel).is_file(), rel
    report = json.loads((out / "final/report.json").read_text())
    assert report["space"] == "elastic_vit" and report["metric"] == "acc"
    for side in ("largest", "subnet"):
        assert report[side]["flops_m"] > 0 and report[side]["latency_ms"] > 0
    assert report["subnet"]["flops_m"] <= report["largest"]["flops_m"]
    assert metrics["final/test_acc"] == report["deployed_test_acc"]


def test_width_phase_reorganizes_heads_neurons_and_embed(vit_run):
    out, _, calls = vit_run
    # the width phase opens heads, mlp and embed at once: one re-ordering, then its pool
    assert calls == ["reorganize"]
    assert (out / "supernet/phase1_depth/pool.json").is_file()
    assert json.loads((out / "supernet/phase2_width/pool.json").read_text())


def test_saved_vit_reloads_and_matches_its_onnx(vit_run):
    import onnxruntime as ort

    out, _, _ = vit_run
    spec = json.loads((out / "final/arch.json").read_text())
    assert spec["space"] == "elastic_vit" and spec["model"]["name"] == "elastic_vit"
    net = load_subnet(out / "final").eval()
    x = torch.randn(3, *spec["input_shape"], generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(str(out / "final/subnet.onnx"))
    (onnx_out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)
