"""hardware.precision=int8: subnets timed as their uniform INT8 deployment on the
runtime, recorded apart from FP32 timings."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.hardware import build_cost_model
from hwnas.hardware.factory import HardwareConfig, table_cache_name
from hwnas.hardware.int8 import int8_model, kept_float, split_backend, weight_nodes
from hwnas.hardware.latency import check_setting, measure_latency
from hwnas.hardware.sessions import input_names
from tests.conftest import CONF, TINY


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ElasticCNN(**TINY)


def _hw(name: str, **over) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "hardware" / f"{name}.yaml"))
    return {**cfg, "warmup": 1, "repeats": 3, **over}


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        a = (q @ k.transpose(1, 2)).softmax(-1) @ v
        return self.out(torch.layer_norm(x + a, (8,)).mean(1))


def test_backend_strings_and_settings() -> None:
    assert split_backend("openvino:int8") == ("openvino", "int8")
    assert split_backend("torch") == ("torch", "fp32")
    check_setting("cpu", "onnxruntime:int8", 1, 1, 0, 1)
    with pytest.raises(ValueError, match="INT8 models are timed by onnxruntime or openvino"):
        check_setting("cpu", "torch:int8", 1, 1, 0, 1)
    with pytest.raises(ValueError, match="precision 'int4'"):
        check_setting("cpu", "onnxruntime:int4", 1, 1, 0, 1)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_model_quantizes_every_layer_and_nothing_else(tmp_path, runtime) -> None:
    net = Attention().eval()
    xs = (torch.randn(2, 5, 8),)
    path = tmp_path / "a.onnx"
    torch.onnx.export(net, xs, str(path), input_names=input_names(xs), output_names=["y"],
                      dynamo=False)  # fmt: skip
    proto = onnx.load(str(path))
    layers = [n.name for n in weight_nodes(proto)]
    assert len(layers) == 2  # the two attention MatMuls carry no weight
    assert any(proto.graph.node[i].op_type == "Softmax" for i in range(len(proto.graph.node)))
    assert set(kept_float(proto)) >= {n.name for n in proto.graph.node if n.op_type == "Add"}
    out = int8_model(path, runtime, {"x": xs[0].numpy()})
    assert out.suffix == (".xml" if runtime == "openvino" else ".onnx") and out.is_file()
    if runtime == "onnxruntime":
        q = onnx.load(str(out))
        dq = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        quantized = {n.name for n in q.graph.node if n.op_type in ("MatMul", "Gemm")
                     and n.input[1] in dq}  # fmt: skip
        assert quantized == set(layers)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_measured_int8_cost_model_times_int8_deployments(model, tmp_path, runtime) -> None:
    cost = build_cost_model(_hw(runtime, precision="int8"), model, tmp_path / "cache")
    assert cost.hw.timed == f"{runtime}:int8"
    assert f"{runtime}:int8" in cost.describe()
    arch = model.space.max_arch()
    assert cost(arch)["latency_ms"] > 0
    assert {s.backend for s in cost.latency.stats.values()} == {f"{runtime}:int8"}
    record = json.loads(cost.save_record(tmp_path / "run").read_text())
    assert record["meta"]["backend"] == f"{runtime}:int8"


def test_int8_tables_are_cached_apart_from_fp32(model) -> None:
    fp32 = HardwareConfig.from_mapping(_hw("onnxruntime", latency="table"))
    int8 = HardwareConfig.from_mapping(_hw("onnxruntime", latency="table", precision="int8"))
    assert table_cache_name(model, fp32) != table_cache_name(model, int8)
    assert "-onnxruntime-int8-" in table_cache_name(model, int8)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"precision": "int4"}, "hardware.precision='int4'; choose one of"),
        ({"precision": "int8", "backend": "torch"}, "hardware=onnxruntime or hardware=openvino"),
    ],
)
def test_bad_precision_is_one_line(over, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        HardwareConfig.from_mapping(_hw("cpu", **over))
    assert "\n" not in str(err.value)


def test_int8_timing_of_a_module() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    net(torch.randn(1, 3, 8, 8))
    stats = measure_latency(net, (3, 8, 8), batch_size=2, backend="onnxruntime:int8",
                            warmup=0, repeats=2)  # fmt: skip
    assert stats.backend == "onnxruntime:int8" and stats.median_ms > 0
