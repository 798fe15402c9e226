"""Deploying precision assignments on ONNX Runtime and OpenVINO: INT8 and INT4 exactly
where assigned, the layers a forward runs, and Hessian traces through attention."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.app.subnet_io import export_onnx
from hwnas.hardware.openvino import ov_core
from hwnas.quantize.deploy import deploy_assignment, int4_layers
from hwnas.quantize.hessian import exact_trace, hutchinson_trace
from hwnas.quantize.layers import called_layers, onnx_layer_nodes, quantizable_layers
from hwnas.quantize.onnx_quant import quantized_nodes
from hwnas.quantize.ort_runtime import OrtModule, model_size_mb, peak_memory_mb, time_onnx
from hwnas.quantize.ov_quant import ov_op_names
from hwnas.quantize.space import lowest, precision_space


class Block(nn.Module):
    """A token mixer with attention (two activation-by-activation MatMuls), an MLP on
    3-D input (MatMul layers), a 2-D head (Gemm) and a layer forward never runs."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 10)
        self.unused = nn.Linear(dim, dim)  # e.g. a transducer's joiner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    torch.manual_seed(0)
    net = Block().eval()
    example = (torch.randn(2, 16, 64),)
    path = export_onnx(net, example, tmp_path_factory.mktemp("rt") / "fp32.onnx", ["x"], ["y"])
    layers = called_layers(net, example)
    nodes = onnx_layer_nodes(net, path, layers, example=example)
    calib = [(torch.randn(8, 16, 64),) for _ in range(3)]
    return net, path, layers, nodes, calib


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_layers_of_the_forward_and_their_weight_nodes(block):
    net, path, layers, nodes, _ = block
    names = [layer.name for layer in layers]
    assert names == ["qkv", "fc1", "fc2", "head"]  # "unused" is not in the export
    assert "unused" in [layer.name for layer in quantizable_layers(net)]
    ops = {n.name: n.op_type for n in onnx.load(str(path)).graph.node}
    assert [ops[nodes[n][0]] for n in names] == ["MatMul", "MatMul", "MatMul", "Gemm"]
    # the attention MatMuls (no weight) belong to no layer
    assert sum(t == "MatMul" for t in ops.values()) > 3
    assert sorted(int4_layers("onnxruntime", layers, nodes, path)) == ["fc1", "fc2", "qkv"]
    assert sorted(int4_layers("openvino", layers, nodes, path)) == ["fc1", "fc2", "head", "qkv"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_mixed_int4_int8_fp32_deploys_exactly_as_assigned(block, tmp_path, runtime):
    net, path, layers, nodes, calib = block
    x = torch.randn(4, 16, 64)
    ref = net(x).detach()
    assign = {"qkv": "int8", "fc1": "int4", "fc2": "fp32", "head": "fp32"}
    mixed = deploy_assignment(runtime, path, assign, calib, tmp_path / "m", layer_nodes=nodes)
    fp32 = deploy_assignment(runtime, path, dict.fromkeys(assign, "fp32"), calib, tmp_path / "f")
    int8 = deploy_assignment(
        runtime, path, dict.fromkeys(assign, "int8"), calib, tmp_path / "i8", layer_nodes=nodes
    )
    assert mixed.suffix == (".xml" if runtime == "openvino" else ".onnx")
    assert _rel(OrtModule(fp32, 1, runtime)(x), ref) < 1e-5
    err = _rel(OrtModule(mixed, 1, runtime)(x), ref)
    assert 1e-5 < err < 0.05
    if runtime == "onnxruntime":
        graph = onnx.load(str(mixed)).graph
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        assert [n.name.removesuffix("_Q4") for n in nbits] == nodes["fc1"]
        assert quantized_nodes(mixed) == set(nodes["qkv"])
    else:
        model = ov_core().read_model(str(mixed))
        op = ov_op_names(model, [n for v in nodes.values() for n in v])
        fq_into = set()
        u4 = set()
        for node in model.get_ordered_ops():
            for i in node.inputs():
                src = i.get_source_output().get_node()
                if src.get_type_name() == "FakeQuantize":
                    fq_into.add(node.get_friendly_name())
            if (
                node.get_type_name() == "Constant"
                and "4" in node.get_element_type().get_type_name()
            ):
                u4.add(node.get_friendly_name())
        assert op[nodes["qkv"][0]] in fq_into  # INT8 layer: FakeQuantize on its inputs
        assert not {op[nodes[k][0]] for k in ("fc1", "fc2", "head")} & fq_into
        assert u4  # INT4 weights stored as 4-bit constants
    assert model_size_mb(mixed) < model_size_mb(fp32)
    int4 = deploy_assignment(
        runtime, path, {"qkv": "int4", "fc1": "int4", "fc2": "int4", "head": "int8"}, calib,
        tmp_path / "i4", layer_nodes=nodes,
    )  # fmt: skip
    assert model_size_mb(int4) < model_size_mb(int8) < model_size_mb(fp32)
    stats = time_onnx(mixed, (16, 64), batch_size=2, repeats=2, warmup=0, runtime=runtime)
    assert stats.backend == runtime and stats.median_ms > 0
    assert peak_memory_mb(mixed, (16, 64), 2, runtime) > 0


def test_int4_refused_where_the_runtime_has_no_kernel(block, tmp_path):
    _, path, _, nodes, calib = block
    with pytest.raises(ValueError, match="MatMul only"):
        deploy_assignment("onnxruntime", path, {"head": "int4"}, calib, tmp_path / "x", None, nodes)
    with pytest.raises(ValueError, match="quantize.runtime='tvm'"):
        deploy_assignment("tvm", path, {"head": "int8"}, calib, tmp_path / "x")


def test_missing_openvino_is_one_line_naming_the_key(block, tmp_path, monkeypatch):
    import hwnas.hardware.openvino as ov

    monkeypatch.setattr(ov, "openvino_version", lambda: None)
    _, path, _, nodes, calib = block
    with pytest.raises(ValueError) as err:
        deploy_assignment("openvino", path, {"qkv": "int8"}, calib, tmp_path / "x", None, nodes)
    msg = str(err.value)
    assert "\n" not in msg and "quantize.runtime=openvino" in msg and "onnxruntime" in msg
    assert not list(tmp_path.iterdir())


def test_precision_space_offers_int4_only_where_it_deploys(block):
    _, _, layers, _, _ = block
    space = precision_space(layers, ("int4", "int8", "fp32"), int4=["fc1", "fc2"])
    choices = {g.name: g.choices for g in space.genes}
    assert choices["fc1"] == ("int4", "int8", "fp32") and choices["head"] == ("int8", "fp32")
    assert lowest(space, "int4").to_dict() == {
        "qkv": "int8", "fc1": "int4", "fc2": "int4", "head": "int8",
    }  # fmt: skip
    assert space.max_arch().to_dict() == dict.fromkeys(choices, "fp32")
    with pytest.raises(ValueError, match="unknown precisions"):
        precision_space(layers, ("int2", "fp32"))


def test_hessian_trace_runs_through_fused_attention():
    """Double backward through scaled_dot_product_attention (the fused CPU kernels have
    none): the Hutchinson estimate agrees with the exact trace of a small layer."""
    torch.manual_seed(0)
    net = Block(dim=8).eval()
    batches = [(torch.randn(4, 6, 8), torch.randint(0, 10, (4,)))]

    def loss(model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    exact = exact_trace(net, loss, batches, "qkv")
    est = hutchinson_trace(net, loss, batches, ["qkv"], samples=400, seed=0)["qkv"]
    assert np.isfinite(est.mean) and abs(est.mean - exact) < 4 * est.stderr + 1e-6
