"""model=bootstrap: the whole pipeline on a supernet converted from torchvision's resnet18
(experiment=bootstrap_tiny), the Python API, and the source / weights errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from hwnas.app.api import run_pipeline
from hwnas.app.pipeline import run
from hwnas.app.subnet_io import load_subnet
from hwnas.bootstrap.source import fit_to_data
from hwnas.elastic import build_model
from tests.conftest import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(out: Path, *extra: str):
    return compose_config(["experiment=bootstrap_tiny", f"paths.output_dir={out}",
                           f"paths.cache_dir={out.parent / 'cache'}", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def boot_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("boot") / "run"
    return out, run(tiny_config(out))


def test_every_stage_finishes_on_the_converted_model(boot_run):
    out, metrics = boot_run
    for stage in ("zero_shot", "supernet", "search", "final"):
        assert (out / stage / "DONE.json").is_file(), stage
    for rel in ("zero_shot/pareto.csv", "supernet/supernet.pt", "supernet/phase2_width/pool.json",
                "search/pareto.csv", "search/chosen.json", "final/subnet.pt",
                "final/arch.json", "final/subnet.onnx", "final/report.md"):  # fmt: skip
        assert (out / rel).is_file(), rel
    report = json.loads((out / "final/report.json").read_text())
    assert report["space"] == "bootstrap" and report["metric"] == "acc"
    assert report["subnet"]["flops_m"] < report["largest"]["flops_m"]
    assert report["subnet"]["params_m"] < report["largest"]["params_m"]
    assert metrics["final/test_acc"] == report["deployed_test_acc"]
    # AZ-NAS terms score the subnet's residual-block partitions (proxy_module)
    assert not any(json.loads((out / "zero_shot/DONE.json").read_text())["proxy_failures"].values())


def test_the_derived_space_is_written(boot_run):
    out, _ = boot_run
    space = json.loads((out / "space.json").read_text())
    assert space["space"] == "bootstrap" and space["meta"]["input_shape"] == [1, 16, 16]
    assert space["meta"]["output_shape"] == [10]
    assert [len(s["blocks"]) for s in space["depth_stages"]] == [2, 1, 1, 1]
    groups = {g["group"] for g in space["genes"]}
    assert groups == {"depth", "width"}
    assert all(g["choices"][-1] == g["channels"] for g in space["width_groups"])


def test_saved_subnet_reloads_and_matches_its_onnx(boot_run):
    import onnxruntime as ort

    out, _ = boot_run
    net = load_subnet(out / "final").eval()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(str(out / "final/subnet.onnx"))
    (onnx_out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.source=torchvision:resnet19", r"model.source='torchvision:resnet19'.*resnet18"),
        ("model.source=keras:resnet18", r"use torchvision:<name>, module:"),
        ("model.source=module:tests.nothing:build", r"cannot import 'tests.nothing'"),
        ("model.weights=/no/such/weights.pt", r"model.weights='/no/such/weights.pt': no such file"),
    ],
)
def test_bad_source_or_weights_fail_in_one_line_writing_nothing(tmp_path, override, match):
    out = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
        run(tiny_config(out, override))
    assert "\n" not in str(err.value)
    assert not out.exists()


def _resnet18(**kw) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, **kw)


def test_weights_fit_the_source_or_the_fitted_model(tmp_path):
    """ImageNet-shaped weights (3 channels, 1000 classes) load before fitting: the stem's
    RGB kernels are summed for grey input; weights of the fitted model load after it."""
    src = _resnet18().eval()
    torch.save(src.state_dict(), tmp_path / "imagenet.pt")
    cfg = {"name": "bootstrap", "source": "torchvision:resnet18", "width_ratios": [0.5, 1.0]}
    sn = build_model({**cfg, "weights": str(tmp_path / "imagenet.pt")}, (1, 16, 16), 10).eval()
    assert torch.equal(sn.net.get_submodule("layer1.0.conv1").weight, src.layer1[0].conv1.weight)
    assert torch.equal(sn.net.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    x = torch.randn(2, 1, 16, 16)
    trunk = nn.Sequential(*list(src.children())[:-1])  # the grey image repeated as RGB
    with torch.no_grad():
        feats = sn.forward_features(x).mean((2, 3))
        assert torch.allclose(feats, trunk(x.expand(-1, 3, -1, -1)).flatten(1), atol=1e-5)
    fitted = fit_to_data(_resnet18(), 1, 10)
    torch.save({"state_dict": fitted.state_dict()}, tmp_path / "fitted.ckpt")
    sn = build_model({**cfg, "weights": str(tmp_path / "fitted.ckpt")}, (1, 16, 16), 10)
    assert torch.equal(sn.net.fc.weight, fitted.fc.weight)
    torch.save(_resnet18(num_classes=7).state_dict(), tmp_path / "seven.pt")
    closer = r"neither as built.*; as built: 2 shape mismatches.*fc.weight \(7, 512\) vs \(1000, "
    with pytest.raises(ValueError, match=closer) as e:
        build_model({**cfg, "weights": str(tmp_path / "seven.pt")}, (1, 16, 16), 10)
    assert "\n" not in str(e.value)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.fc(x.mean((2, 3)))


def test_python_api_runs_the_pipeline_on_a_module(tmp_path):
    out = tmp_path / "run"
    overrides = ["experiment=bootstrap_tiny", "stages=[zero_shot]",
                 f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    metrics = run_pipeline(SmallNet(), out, overrides)
    assert (out / "zero_shot/DONE.json").is_file() and "zero_shot/best_descore" in metrics
    space = json.loads((out / "space.json").read_text())
    assert space["meta"]["source"] == "SmallNet" and space["meta"]["output_shape"] == [10]
