"""Mixed-precision quantization: layer/node mapping, Hessian traces, ORT QDQ deployment,
the precision search space and per-layer sensitivity, on tiny models and random data."""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.app.subnet_io import export_onnx
from hwnas.domains.image.task import ImageClassification
from hwnas.hardware.base import CostModel
from hwnas.hardware.constraints import Constraints
from hwnas.quantize.hessian import (
    exact_trace,
    fake_quantize_weight,
    hawq_sensitivity,
    hutchinson_trace,
    quantization_error,
    task_loss,
)
from hwnas.quantize.layers import layer_nodes_by_name, onnx_layer_nodes, quantizable_layers
from hwnas.quantize.onnx_quant import QuantSettings, cpu_flags, quantize_assignment, quantized_nodes
from hwnas.quantize.ort_runtime import OrtModule, model_size_mb, throughput, time_onnx
from hwnas.quantize.sensitivity import (
    estimate_accuracy,
    hessian_drops,
    layer_sensitivity,
    measured_drops,
    top1_evaluator,
)
from hwnas.quantize.space import MeasuredQuantCost, WeightSizeCost, precision_space, uniform
from hwnas.search.base import Objective, SearchProblem, build_strategy
from hwnas.spaces.base import Arch

# Relative L2 error of uniform INT8 (ORT QDQ, per-channel weights, MinMax or
# Percentile calibration on 4 batches of the same distribution) against FP32 on the
# tiny conv net below; observed 0.006 on this AVX2 CPU (7-bit weights, see below).
INT8_REL_L2_BOUND = 0.05


class TinyConvNet(nn.Module):
    """Conv+BN (folded on export: its weight loses its name), a bias-free conv, a
    Linear on 3-D input (exported as MatMul with a transposed weight) and a Gemm head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Conv2d(8, 16, 3, stride=2, bias=False),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.features(x)).flatten(1)  # (B, 16)
        z = self.mix(y.unsqueeze(1).expand(-1, 3, -1)).mean(1)  # (B, 3, 16) -> (B, 16)
        return self.head(y + z)


LAYERS = ["features.0.0", "features.1", "mix", "head"]
NODES = {
    "features.0.0": ["/features/features.0/features.0.0/Conv"],
    "features.1": ["/features/features.1/Conv"],
    "mix": ["/mix/MatMul"],
    "head": ["/head/Gemm"],
}


def _tiny_net() -> TinyConvNet:
    torch.manual_seed(0)
    net = TinyConvNet()
    bn = net.features[0][1]
    gen = torch.Generator().manual_seed(1)
    bn.running_mean.copy_(torch.rand(8, generator=gen) - 0.5)
    bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    return net.eval()


def _images(n: int, seed: int, batch: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=gen) for _ in range(n)]


def tiny_export(folder) -> tuple[TinyConvNet, object, list[torch.Tensor]]:
    """The tiny conv net, its ONNX export into ``folder`` and calibration batches."""
    net = _tiny_net()
    path = export_onnx(net, (torch.randn(2, 3, 16, 16),), folder / "fp32.onnx")
    return net, path, _images(4, seed=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """:func:`tiny_export`, shared and read-only."""
    return tiny_export(tmp_path_factory.mktemp("quant"))


def _op_counts(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------- layers
def test_quantizable_layers_are_convs_and_linears_with_weight_shapes():
    layers = quantizable_layers(_tiny_net())
    assert [layer.name for layer in layers] == LAYERS
    assert [layer.kind for layer in layers] == ["conv", "conv", "linear", "linear"]
    assert layers[1].weight_shape == (16, 8, 3, 3) and layers[1].n_params == 16 * 8 * 9


def test_onnx_nodes_found_through_folded_bn_and_transposed_matmul(exported):
    net, path, _ = exported
    inits = {i.name for i in onnx.load(str(path)).graph.initializer}
    # the premise: two of the four weights lost their torch names in the export
    assert "features.1.weight" in inits and "head.weight" in inits
    assert "features.0.0.weight" not in inits and "mix.weight" not in inits
    assert onnx_layer_nodes(net, path) == NODES
    assert layer_nodes_by_name(path, LAYERS) == NODES


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.fc_unused = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(torch.relu(self.fc(x))))


def test_shared_layer_maps_to_every_call_and_unused_layer_is_reported(tmp_path):
    net = _Shared().eval()
    path = export_onnx(net, (torch.randn(2, 8),), tmp_path / "m.onnx")
    nodes = onnx_layer_nodes(net, path, strict=False)
    assert nodes == {"fc": ["/fc/Gemm", "/fc_1/Gemm"], "fc_unused": [], "out": ["/out/Gemm"]}
    with pytest.raises(ValueError, match="fc_unused"):
        onnx_layer_nodes(net, path)
    root = export_onnx(nn.Linear(4, 2).eval(), (torch.randn(2, 4),), tmp_path / "r.onnx")
    assert onnx_layer_nodes(nn.Linear(4, 2), root) == {"": ["/Gemm"]}


# ------------------------------------------------------------------------ hessian
def _hessian_setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(64, 3)).double()
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(8, 2, 6, 6, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=gen),
        )
        for _ in range(2)
    ]

    def loss(m, b):
        return F.cross_entropy(m(b[0]), b[1])

    return net, loss, batches


def test_hutchinson_matches_exact_trace_within_its_error():
    net, loss, batches = _hessian_setup()
    block = hutchinson_trace(net, loss, batches, samples=200, seed=0, mode="block")
    joint = hutchinson_trace(net, loss, batches, samples=200, seed=0, mode="joint")
    for layer in ("0", "3"):  # a 72-weight conv and a 192-weight linear
        exact = exact_trace(net, loss, batches, layer)
        assert exact > 0
        assert abs(block[layer].mean - exact) <= 3 * block[layer].stderr
        assert abs(joint[layer].mean - exact) <= 3 * joint[layer].stderr
        assert block[layer].stderr < 0.1 * exact  # 200 probes of the exact block
        assert block[layer].stderr < joint[layer].stderr  # no cross-layer terms


def test_hutchinson_is_seeded_and_leaves_the_model_as_it_was():
    net, loss, batches = _hessian_setup()
    net.train()
    net[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = hutchinson_trace(net, loss, batches, samples=4, seed=3)
    b = hutchinson_trace(net, loss, batches, samples=4, seed=3)
    assert a == b and a != hutchinson_trace(net, loss, batches, samples=4, seed=4)
    assert net.training and not net[0].weight.requires_grad and net[3].weight.requires_grad
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in net.parameters())


def test_fake_quantizer_is_symmetric_per_channel():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=gen) * torch.linspace(0.01, 3, 6).view(6, 1, 1, 1)
    w[2] = 0.0
    q8, q4 = fake_quantize_weight(w, 8), fake_quantize_weight(w, 4)
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    assert torch.equal(q8[2], w[2])
    assert torch.allclose(q8.abs().amax(dim=(1, 2, 3)), w.abs().amax(dim=(1, 2, 3)))
    assert ((q8 - w).abs() <= scale / 2 + 1e-7).all()  # round to nearest level
    levels = torch.where(scale > 0, q8 / torch.where(scale > 0, scale, 1), 0)
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # integers in [-127, 127]
    assert quantization_error(w, 4) > 50 * quantization_error(w, 8)
    assert torch.equal(q4, fake_quantize_weight(q4, 4))  # idempotent


def test_hawq_sensitivity_is_mean_curvature_times_perturbation():
    net, _, _ = _hessian_setup()
    traces = {"0": 2.0, "3": 5.0}
    omega = hawq_sensitivity(net, traces, "int8")
    w = net[3].weight
    assert omega["3"] == pytest.approx(5.0 / w.numel() * quantization_error(w, 8))
    assert hawq_sensitivity(net, traces, "int4")["3"] > omega["3"]
    assert hawq_sensitivity(net, traces, "fp32") == {"0": 0.0, "3": 0.0}


# ---------------------------------------------------------------------- onnx_quant
@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_uniform_int8_stays_close_to_fp32(exported, tmp_path, calibration):
    net, path, calib = exported
    out = quantize_assignment(
        path, dict.fromkeys(LAYERS, "int8"), calib, tmp_path / "q.onnx",
        QuantSettings(calibration=calibration),
    )  # fmt: skip
    x = _images(1, seed=7, batch=32)[0]
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(OrtModule(path)(x), ref, atol=1e-4)  # the FP32 export itself
    assert _rel_l2(OrtModule(out)(x), ref) < INT8_REL_L2_BOUND
    assert quantized_nodes(out) == {n for nodes in NODES.values() for n in nodes}


def test_assignment_quantizes_exactly_its_int8_layers(exported, tmp_path):
    net, path, calib = exported
    fp32 = quantize_assignment(path, dict.fromkeys(LAYERS, "fp32"), calib, tmp_path / "f.onnx")
    ops = _op_counts(fp32)
    assert ops["QuantizeLinear"] == 0 and ops["DequantizeLinear"] == 0
    assert fp32.read_bytes() == path.read_bytes()
    mixed = {"features.0.0": "fp32", "features.1": "int8", "mix": "fp32", "head": "int8"}
    out = quantize_assignment(path, mixed, calib, tmp_path / "m.onnx")
    assert quantized_nodes(out) == {"/features/features.1/Conv", "/head/Gemm"}
    assert _op_counts(out)["QuantizeLinear"] > 0
    # every Q -> DQ pair quantizes an output of a chosen node or feeds one: no other op
    proto = onnx.load(str(out))
    chosen = [n for n in proto.graph.node if n.name in quantized_nodes(out)]
    outputs = {t for n in chosen for t in n.output}
    inputs = {t for n in chosen for t in n.input}
    dq_of = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear":
            assert node.input[0] in outputs or dq_of[node.output[0]] in inputs, node.name
    # other_ops also quantizes what lies between layers, yet no FP32 layer
    wide = quantize_assignment(
        path, mixed, calib, tmp_path / "w.onnx", QuantSettings(other_ops=True)
    )
    assert quantized_nodes(wide) == quantized_nodes(out)
    assert _op_counts(wide)["QuantizeLinear"] > _op_counts(out)["QuantizeLinear"]
    with pytest.raises(ValueError, match="INT4 kernels for MatMul only"):
        quantize_assignment(path, {"head": "int4"}, calib, tmp_path / "x.onnx")


def test_calibration_cache_serves_later_assignments(exported, tmp_path):
    _, path, calib = exported
    cache = tmp_path / "calib.json"
    assign = dict.fromkeys(LAYERS, "int8")
    a = quantize_assignment(path, assign, calib, tmp_path / "a.onnx", cache_path=cache)
    assert cache.exists()
    b = quantize_assignment(path, assign, None, tmp_path / "b.onnx", cache_path=cache)
    x = _images(1, seed=8)[0]
    assert torch.equal(OrtModule(a)(x), OrtModule(b)(x))


def test_time_onnx_and_model_size(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10)).eval()  # fmt: skip
    path = export_onnx(mlp, (torch.randn(2, 64),), tmp_path / "mlp.onnx")
    calib = [torch.randn(16, 64) for _ in range(2)]
    q = quantize_assignment(path, {"0": "int8", "2": "int8", "4": "int8"}, calib, tmp_path / "q")
    fp32_mb, int8_mb = model_size_mb(path), model_size_mb(q)
    assert fp32_mb == pytest.approx(path.stat().st_size / 1e6)
    assert int8_mb < 0.4 * fp32_mb  # 4-byte weights -> 1 byte (+ scales, Q/DQ nodes)
    stats = time_onnx(q, batch_size=4, threads=1, warmup=1, repeats=5)
    assert stats.batch_size == 4 and stats.repeats == 5 and stats.backend == "onnxruntime"
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert throughput(stats) == pytest.approx(4e3 / stats.median_ms)
    spec = time_onnx(path, inputs=(64,), batch_size=2, warmup=0, repeats=2)
    factory = time_onnx(path, ImageClassification((64,), 10).example_inputs, 3, repeats=2)
    assert spec.batch_size == 2 and factory.batch_size == 3


def test_reduce_range_follows_the_cpu_as_ort_advises():
    """7-bit weights on x86 without VNNI: on this AVX2 machine full-range INT8 weights
    saturate ORT's u8*s8 kernels (the Gemm head's error rose from 0.005 to 0.07)."""
    settings = QuantSettings()
    assert settings.reduce_range is None
    if platform.machine() == "x86_64":
        vnni = bool({"avx512_vnni", "avx_vnni"} & cpu_flags())
        assert settings.resolved_reduce_range is not vnni
    assert QuantSettings(reduce_range=False).to_dict()["reduce_range"] is False
    with pytest.raises(ValueError, match="calibration"):
        QuantSettings(calibration="kl")


# --------------------------------------------------------------------------- space
def test_precision_space_orders_lowest_precision_first():
    space = precision_space(quantizable_layers(_tiny_net()), ("fp32", "int8", "int4"))
    assert [g.name for g in space.genes] == LAYERS
    assert all(g.choices == ("int4", "int8", "fp32") and g.group == "precision"
               for g in space.genes)  # fmt: skip
    assert space.max_arch() == uniform(space, "fp32")  # the reference network
    assert space.min_arch() == uniform(space, "int4")
    assert space.size() == 3 ** len(LAYERS)
    size = WeightSizeCost(quantizable_layers(_tiny_net()))
    assert size(uniform(space, "int8"))["size_mb"] == pytest.approx(
        size(uniform(space, "fp32"))["size_mb"] / 4
    )
    with pytest.raises(ValueError, match="fp16"):
        precision_space(LAYERS, ("fp16", "fp32"))


class _FakeLatency(CostModel):
    """Latency falls with each INT8 layer, by a layer-specific amount."""

    SAVING = {"features.0.0": 0.5, "features.1": 0.6, "mix": 0.3, "head": 0.2}

    def _compute(self, arch: Arch) -> dict[str, float]:
        saved = sum(self.SAVING[k] for k, p in arch.items() if p == "int8")
        return {"latency_ms": 2.0 - saved}


class _EstimatedAccuracy(Objective):
    relative = False
    DROPS = {"features.0.0": 0.002, "features.1": 0.02, "mix": 0.001, "head": 0.004}

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        return [{"acc": estimate_accuracy(a, 0.9, self.DROPS)} for a in archs]

    def fitness(self, metrics):
        return np.asarray([m["acc"] for m in metrics])


@pytest.mark.parametrize(
    "name,kw",
    [
        ("random", dict(samples=30)),
        ("evolution", dict(iterations=3, population=4, top_k=3, mutations=4, crossovers=4)),
        ("tpe", dict(trials=30, n_startup_trials=8)),
        ("nsga2", dict(trials=30, population_size=8)),
    ],
)
def test_strategies_search_the_precision_space_within_the_latency_limit(name, kw):
    space = precision_space(LAYERS)
    cost = _FakeLatency()
    problem = SearchProblem(
        space, _EstimatedAccuracy(), cost, Constraints.from_config({"latency_ms": 1.15}), seed=0
    )
    result = build_strategy(name, **kw).run(problem)
    for e in [result.best, *result.top, *result.pareto()]:
        assert cost(e.arch)["latency_ms"] <= 1.15
    assert cost(space.max_arch())["latency_ms"] > 1.15  # the limit binds
    feasible = [a for a in space.enumerate() if problem.feasible(a)]
    best = max(estimate_accuracy(a, 0.9, _EstimatedAccuracy.DROPS) for a in feasible)
    assert result.best.metrics["acc"] == pytest.approx(best)
    # the answer keeps the most sensitive layer in FP32 and quantizes the three others
    assert result.best.arch.to_dict() == {**dict.fromkeys(LAYERS, "int8"), "features.1": "fp32"}


def test_measured_quant_cost_reports_deployed_latency_and_size(exported, tmp_path):
    _, path, calib = exported
    space = precision_space(LAYERS)
    cost = MeasuredQuantCost(path, calib, tmp_path, warmup=1, repeats=3)
    fp32, int8 = cost(space.max_arch()), cost(space.min_arch())
    assert set(fp32) == {"latency_ms", "size_mb"} and fp32["latency_ms"] > 0
    assert fp32["size_mb"] == pytest.approx(model_size_mb(path))
    assert cost.model_path(space.min_arch()).exists()
    assert len(list(tmp_path.glob("calibration_*.json"))) == 1
    assert int8["size_mb"] != fp32["size_mb"]


# --------------------------------------------------------------------- sensitivity
def test_layer_sensitivity_rows_measure_one_int8_layer_at_a_time(exported, tmp_path):
    net, path, calib = exported
    xs = _images(4, seed=9, batch=16)
    with torch.no_grad():  # labels = the FP32 model's predictions: base accuracy 1
        batches = [(x, net(x).argmax(1)) for x in xs]

    task = ImageClassification((3, 16, 16), 10)
    traces = hutchinson_trace(net, task_loss(task), batches[:1], samples=4, seed=0)

    def evaluate(module):  # the task scores the ORT model as it would a torch one
        acc = task.evaluate(module, batches)["acc"]
        assert acc == top1_evaluator(batches)(module)
        return acc

    rows = layer_sensitivity(net, path, evaluate, calib, tmp_path, traces)
    assert [r.layer for r in rows] == LAYERS
    for r in rows:
        assert r.base_metric == 1.0 and 0.0 <= r.drop <= 0.2
        assert r.drop == pytest.approx(r.base_metric - r.metric)
        assert r.trace == traces[r.layer].mean and r.omega >= 0
        assert set(r.to_dict()) >= {"layer", "drop", "trace", "trace_stderr", "omega"}
    assert len(list(tmp_path.glob("only_*_int8.onnx"))) == len(LAYERS)
    drops = measured_drops(rows)
    est = estimate_accuracy(dict.fromkeys(LAYERS, "int8"), 1.0, drops)
    assert est == pytest.approx(1.0 - sum(drops.values()))
    assert set(hessian_drops(rows)) == set(LAYERS)


def test_estimate_accuracy_adds_drops_of_quantized_layers():
    drops = {"a": 0.01, "b": {"int8": 0.02, "int4": 0.1}}
    assert estimate_accuracy({"a": "fp32", "b": "fp32"}, 0.9, drops) == 0.9
    assert estimate_accuracy({"a": "int8", "b": "int4"}, 0.9, drops) == pytest.approx(0.79)
    with pytest.raises(KeyError):
        estimate_accuracy({"c": "int8"}, 0.9, drops)
    with pytest.raises(KeyError):
        estimate_accuracy({"a": "int4"}, 0.9, drops)


def test_hessian_drops_scale_omega_to_measured_drops():
    from hwnas.quantize.sensitivity import SensitivityRow

    rows = [
        SensitivityRow(n, "conv", 10, "int8", 1.0, 1.0 - d, d, omega=o)
        for n, d, o in [("a", 0.02, 2.0), ("b", 0.01, 1.0), ("c", 0.0, 0.0)]
    ]
    assert hessian_drops(rows) == pytest.approx({"a": 0.02, "b": 0.01, "c": 0.0})
    # rows without omega are refused
    with pytest.raises(ValueError):
        hessian_drops([SensitivityRow("a", "conv", 1, "int8", 1.0, 1.0, 0.0)])


def test_node_scope_reads_both_exporter_path_styles():
    from hwnas.quantize.layers import node_scope

    assert node_scope("/features/features.0/features.0.0/Conv") == "features.0.0"
    assert node_scope("/blocks/blocks.0/expand/Conv") == "blocks.0.expand"
    assert node_scope("/features/features.1/conv/conv.0/conv.0.0/Conv") == "features.1.conv.0.0"
    assert node_scope("/head/Gemm") == "head" and node_scope("/Gemm") == ""


def test_fx_traced_subnets_map_by_call_order(tmp_path):
    """A bootstrapped subnet (torch.fx GraphModule) loses module paths in ONNX node
    names; the call order of its layers pairs them with the graph's nodes."""
    import torchvision

    from hwnas.app.subnet_io import export_onnx
    from hwnas.bootstrap import convert
    from hwnas.quantize.layers import onnx_layer_nodes, quantizable_layers

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    sup = convert(model, x, width_ratios=(0.5, 1.0))
    net = sup.export(sup.space.min_arch()).eval()
    path = export_onnx(net, (x[:1],), tmp_path / "sub.onnx")
    layers = quantizable_layers(net)
    with pytest.raises(ValueError, match="has no Conv node"):
        onnx_layer_nodes(net, path, layers)
    nodes = onnx_layer_nodes(net, path, layers, example=(x[:1],))
    assert sorted(n for ns in nodes.values() for n in ns) == sorted(
        n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm")
    )
    assert all(len(v) == 1 for v in nodes.values()) and len(nodes) == len(layers)
    # the head is the last layer called and the only Gemm
    head = [name for name, layer in zip(nodes, layers) if layer.kind == "linear"]
    gemm = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm"]
    assert [nodes[h][0] for h in head] == gemm


def test_torchvision_mobilenet_maps_by_scope(tmp_path):
    import torchvision

    from hwnas.app.subnet_io import export_onnx
    from hwnas.quantize.layers import onnx_layer_nodes, quantizable_layers

    net = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25).eval()
    path = export_onnx(net, (torch.randn(1, 3, 32, 32),), tmp_path / "m.onnx")
    nodes = onnx_layer_nodes(net, path)  # by name alone, BN folded into every conv
    assert nodes["features.1.conv.0.0"] == ["/features/features.1/conv/conv.0/conv.0.0/Conv"]
    assert len(nodes) == len(quantizable_layers(net))
