"""Quantization-aware fine-tuning: the fake quantization simulates what ONNX Runtime
deploys (weights exactly, activations closely), trains through a straight-through
gradient with frozen batch norms, and leaves a plain module behind."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from hwnas.quantize.onnx_quant import QuantSettings, quantize_assignment
from hwnas.quantize.ort_runtime import OrtModule
from hwnas.quantize.qat import (
    FakeQuantizer,
    QatModule,
    WeightFakeQuant,
    activation_qparams,
    check_qat_config,
    weight_qmax,
)
from tests.test_quantize import LAYERS, _images, _rel_l2, tiny_export

QAT = {
    "epochs": 1, "assignment": "chosen", "lr": 1e-3, "optimizer": "sgd", "momentum": 0.9,
    "weight_decay": 0.0, "limit_train_batches": 1.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("qat"))


@pytest.fixture(scope="module")
def deployed(exported, tmp_path_factory):
    """Uniform INT8 of the tiny conv net through ORT, with 7-bit and 8-bit weights."""
    net, path, calib = exported
    folder = tmp_path_factory.mktemp("qat_int8")
    out = {}
    for reduce in (True, False):
        s = QuantSettings(reduce_range=reduce)
        target = folder / f"int8_{reduce}.onnx"
        out[reduce] = quantize_assignment(path, dict.fromkeys(LAYERS, "int8"), calib, target, s)
    return net, path, calib, out


def _dequantized_weights(path) -> dict[str, np.ndarray]:
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        q = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is None or q.dtype != np.int8:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        out[node.input[0]] = (q.astype(np.float32) * inits[node.input[1]].reshape(shape), axis)
    return out


@pytest.mark.parametrize("reduce", [True, False])
def test_weight_fake_quant_is_what_ort_deploys(deployed, reduce):
    net, path, _, out = deployed
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    weights = _dequantized_weights(out[reduce])
    assert len(weights) == len(LAYERS)  # the folded conv and the MatMul weight included
    fq = WeightFakeQuant(weight_qmax(reduce))
    for name, (deq, axis) in weights.items():
        w = torch.from_numpy(fp32[name.removesuffix("_quantized")].copy()).transpose(0, axis)
        sim = fq(w).transpose(0, axis).numpy()
        np.testing.assert_allclose(sim, deq, rtol=0, atol=1e-7, err_msg=name)
    assert float(net.head.weight.abs().max()) > 0 and weight_qmax(reduce) in (64, 127)


def test_activation_qparams_are_ort_s(deployed):
    net, _, calib, out = deployed
    sim = FakeQuantizer(copy.deepcopy(net), dict.fromkeys(LAYERS, "int8"), True)
    sim.calibrate(calib)
    proto = onnx.load(str(out[True]))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    q = {n.input[0]: n for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    lo, hi = (float(v) for v in sim.ranges[0, :2])  # the first conv's input: the image
    scale, zero, qmin, qmax = activation_qparams(lo, hi, "uint8")
    assert (qmin, qmax) == (0, 255)
    assert scale == pytest.approx(float(inits[q["input0"].input[1]]), rel=1e-6)
    assert zero == int(inits[q["input0"].input[2]])
    assert activation_qparams(-2.0, 1.0, "int8") == (pytest.approx(4 / 254), 0, -127, 127)
    assert activation_qparams(0.5, 2.0, "uint8")[1] == 0  # the range is widened to hold 0


def test_fake_quantized_model_predicts_the_deployed_int8_outputs(deployed):
    """Weights, inputs and outputs (after the folded batch norm; before the bias of a
    Linear exported as MatMul) rounded as ORT does: the simulation is much closer to
    the INT8 model than FP32 is (observed 0.0017 vs 0.0064 relative L2)."""
    net, _, calib, out = deployed
    sim_net = copy.deepcopy(net)
    FakeQuantizer(sim_net, dict.fromkeys(LAYERS, "int8"), True).calibrate(calib)
    x = _images(1, seed=7, batch=32)[0]
    with torch.no_grad():
        ref, sim = net(x), sim_net(x)
    int8 = OrtModule(out[True])(x)
    assert _rel_l2(sim, int8) < 0.5 * _rel_l2(ref, int8)


def test_gradients_pass_straight_through_and_remove_restores_a_plain_module(exported):
    net, _, calib = exported
    tuned = copy.deepcopy(net)
    keys = set(tuned.state_dict())
    fq = FakeQuantizer(tuned, {"features.1": "int8", "head": "int8", "mix": "fp32"}, True)
    fq.calibrate(calib)
    x = _images(1, seed=3)[0]
    tuned(x).square().mean().backward()
    grad = tuned.features[1].parametrizations.weight.original.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert torch.count_nonzero(tuned.mix.weight.grad) > 0  # an FP32 layer trains as usual
    with torch.no_grad():
        assert not torch.allclose(tuned(x), net(x), atol=1e-6)  # rounding is on
    plain = fq.remove()
    assert set(plain.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(plain(x), net(x))  # nothing trained yet: the FP32 net again
    with pytest.raises(KeyError, match="no layers"):
        FakeQuantizer(copy.deepcopy(net), {"nope": "int8"}, True)


def test_qat_module_keeps_batch_norms_frozen_and_ranges_in_its_state(exported):
    net, _, calib = exported
    tuned = copy.deepcopy(net)
    fq = FakeQuantizer(tuned, dict.fromkeys(LAYERS, "int8"), True)
    module = QatModule(tuned, fq, calib, epochs=1)
    module.on_train_batch_start(None, 0)  # the first batch of an epoch calibrates
    module.train()
    bn = tuned.features[0][1]
    before = bn.running_mean.clone()
    assert not bn.training and tuned.features[0][0].training
    tuned(_images(1, seed=4)[0] * 3)
    assert torch.equal(bn.running_mean, before)
    assert torch.equal(module.state_dict()["act_ranges"], fq.ranges)
    assert bool((fq.ranges[:, 0] <= fq.ranges[:, 1]).all())


@pytest.mark.parametrize(
    "key, value, match",
    [("epochs", -1, "epochs"), ("assignment", "all", "assignment"), ("lr", 0, "lr"),
     ("optimizer", "lamb", "optimizer"), ("limit_train_batches", 0, "limit_train_batches")],
)  # fmt: skip
def test_bad_qat_settings_are_one_line_errors(key, value, match):
    with pytest.raises(ValueError, match=match) as err:
        check_qat_config({**QAT, key: value})
    assert "\n" not in str(err.value)


def test_qat_in_the_quantize_cli(tmp_path):
    """``python -m hwnas.quantize`` with QAT of uniform INT8 on a tiny finished run: the
    QAT model is quantized by ORT in every layer, scored, reported and plotted."""
    from hwnas.app.quantize_cli import main
    from hwnas.quantize.onnx_quant import quantized_nodes
    from tests.test_quantize_stage import SMALL, _run

    run = tmp_path / "run"
    _run(run, "stages=[zero_shot,supernet,search,final]")
    dest = tmp_path / "q"
    args = [f"run_dir={run}", f"output_dir={dest}", *SMALL, "quantize.qat.epochs=1",
            "quantize.qat.assignment=int8"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((dest / "report.json").read_text())
    qat = report["qat"]
    assert set(qat["assignment"].values()) == {"int8"} and qat["epochs"] == 1
    for key in ("val", "ptq_val", "fp32_val", "test"):
        assert 0 <= qat[key] <= 1, key
    assert len(quantized_nodes(dest / "qat" / "model.onnx")) == report["assignment"]["layers"]
    assert (dest / "qat" / "checkpoints" / "last.ckpt").is_file()
    assert "Quantization-aware fine-tuning (1 epoch(s))" in (dest / "report.md").read_text()
    assert any("QAT" in line for line in (dest / "pareto.csv").read_text().splitlines())
    deployed = (dest / "model.onnx").read_bytes() == (dest / "qat" / "model.onnx").read_bytes()
    assert deployed == qat["deployed"] == report["chosen"]["qat"]
    bad = main([f"run_dir={run}", f"output_dir={tmp_path / 'b'}", "quantize.qat.assignment=x"])
    assert bad == 2 and not (tmp_path / "b").exists()
    # the same on OpenVINO: the fine-tuned weights are quantized by NNCF, saved as an IR
    ov = tmp_path / "ov"
    args = [f"run_dir={run}", f"output_dir={ov}", *SMALL, "quantize.qat.epochs=1",
            "quantize.qat.assignment=int8", "quantize.runtime=openvino",
            "quantize.compare=false"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((ov / "report.json").read_text())
    assert report["runtime"] == "openvino" and (ov / "qat" / "model.xml").is_file()
    assert 0 <= report["qat"]["test"] <= 1 and report["model"].endswith(".xml")


def test_restored_ranges_give_the_same_rounding_without_recalibrating(exported):
    """A training resumed mid-epoch restores the ranges and only attaches the output
    rounding: the model then rounds exactly as before the stop."""
    net, _, calib = exported
    first, again = copy.deepcopy(net), copy.deepcopy(net)
    a = FakeQuantizer(first, dict.fromkeys(LAYERS, "int8"), True)
    a.calibrate(calib)
    b = FakeQuantizer(again, dict.fromkeys(LAYERS, "int8"), True)
    b.ranges.copy_(a.ranges)
    b.attach(_images(1, seed=9)[0])  # another batch: the ranges must not move
    assert torch.equal(b.ranges, a.ranges)
    x = _images(1, seed=5)[0]
    with torch.no_grad():
        assert torch.equal(first(x), again(x))

