"""hwnas.bootstrap: converting plain models (torchvision, custom) into supernets."""

from __future__ import annotations

import copy
import io
import json
import random

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hwnas.bootstrap import BootstrapModel, convert, width_choices
from hwnas.bootstrap.ops import ELASTIC_TYPES

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
               "efficientnet_b0", "regnet_x_400mf"]  # fmt: skip
MODELS = [*TORCHVISION, "catnet"]
# skippable residual blocks per stage that conversion must find
STAGES = {
    "resnet18": [2, 1, 1, 1],
    "resnet50": [2, 3, 5, 2],
    "mobilenet_v2": [1, 2, 3, 2, 2],
    "efficientnet_b0": [1, 1, 2, 2, 3],
    "regnet_x_400mf": [1, 6, 11],
    "catnet": [1],
}


def _cbr(i: int, o: int, k: int = 1, g: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(i, o, k, padding=k // 2, groups=g, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(o), nn.ReLU())


class CatNet(nn.Module):
    """Residual block, two branches concatenated, a depthwise conv over the concatenation,
    a 2x2 pool flattened into an MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16, 3)
        dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.block = nn.Sequential(_cbr(16, 16), dw, nn.BatchNorm2d(16))
        self.a, self.b = _cbr(16, 8), _cbr(16, 12, 3)
        self.dw, self.proj = _cbr(20, 20, 3, g=20), _cbr(20, 24)
        self.fc1, self.fc2 = nn.Linear(96, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.block(x))
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = torch.flatten(F.adaptive_avg_pool2d(self.proj(self.dw(x)), 2), 1)
        return self.fc2(F.relu(self.fc1(x)))


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
            return self.conv(x)
        return x


class GatedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.gate = _cbr(3, 16, 3), Gate()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.stem(x)).mean((2, 3))
        return self.fc2(F.relu(self.fc1(x)))


def build(name: str) -> nn.Module:
    """Random init with non-trivial batch-norm statistics, so outputs are O(0.1-1) and the
    comparisons below mean something (fresh torchvision nets output ~1e-10)."""
    torch.manual_seed(0)
    if name == "catnet":
        model = CatNet()
    else:
        model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.momentum = None  # running stats = the average over the calibration batch
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 32, 32))
        scale = model.eval()(torch.randn(4, 3, 32, 32)).abs().max()
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        head.weight /= scale  # logits of order 1
        head.bias /= scale
    return model


@pytest.fixture(scope="module", params=MODELS)
def converted(request) -> tuple[str, nn.Module, BootstrapModel, torch.Tensor]:
    model = build(request.param)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return request.param, model, convert(model, x).eval(), x


def test_width_choices() -> None:
    assert width_choices(16, 1, (0.5, 0.75, 1.0)) == (8, 12, 16)
    assert width_choices(64, 16, (0.5, 0.75, 1.0)) == (32, 48, 64)
    assert width_choices(1, 1, (0.5, 1.0)) == (1,)
    assert width_choices(10, 1, (0.5,)) == (5, 10)  # the full width is always offered


def test_convert_finds_the_space(converted) -> None:
    name, model, sn, _ = converted
    desc = json.loads(json.dumps(sn.describe()))
    assert desc["width_groups"] and all(len(g["choices"]) > 1 for g in desc["width_groups"])
    stages = [len(s["blocks"]) for s in desc["depth_stages"]]
    if name in STAGES:
        assert stages == STAGES[name]
    assert any(f["reason"] == "network output" for f in desc["fixed_groups"])
    # the classifier's outputs never shrink: no width group contains the last layer's output
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert all(last not in g["producers"] for g in desc["width_groups"])
    assert sn.space.contains(sn.space.min_arch())
    assert sn.cost_of(sn.space.min_arch())["params_m"] < sn.cost_of(sn.space.max_arch())["params_m"]


def test_largest_arch_equals_original(converted) -> None:
    _, model, sn, x = converted
    with torch.no_grad():
        ref, out = model(x), sn(x)
    assert ref.abs().max() > 1e-3  # a meaningful comparison
    assert (ref - out).abs().max() <= 1e-5
    assert sn.active_params() == sum(p.numel() for p in model.parameters())


def test_export_matches_supernet(converted) -> None:
    _, model, sn, x = converted
    rng = random.Random(0)
    archs = [sn.space.min_arch(), sn.space.sample(rng), sn.space.sample(rng)]
    for arch in archs:
        sub = sn.export(arch).eval()
        assert not any(type(m) in ELASTIC_TYPES.values() for m in sub.modules())
        with torch.no_grad(), sn.active(arch):
            expected = sn(x)
            with FlopCounterMode(display=False) as counter:
                got = sub(x)
            assert sn.active_params() == sum(p.numel() for p in sub.parameters())
            assert sn.active_flops(x.shape[0]) == counter.get_total_flops()
        assert (got - expected).abs().max() <= 1e-5
    n_min = sum(p.numel() for p in sn.export(archs[0]).parameters())
    assert n_min < sum(p.numel() for p in model.parameters())


def test_onnx_of_smallest_arch(converted) -> None:
    _, _, sn, x = converted
    arch = sn.space.min_arch()
    sub = sn.export(arch).eval()
    buf = io.BytesIO()
    torch.onnx.export(sub, (x,), buf, dynamo=False, input_names=["x"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad(), sn.active(arch):
        expected = sn(x).numpy()
    err = abs(got - expected).max()
    # the smallest subnet's logits can be tiny (~1e-5): check the relative error too
    assert err <= 1e-4 and err <= 1e-4 * abs(expected).max()


def test_training_step(converted) -> None:
    _, _, sn, x = converted
    sn = copy.deepcopy(sn).train()
    sn.set_active(sn.space.sample(random.Random(3)))
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    opt = torch.optim.SGD(sn.parameters(), lr=0.05)
    loss = F.cross_entropy(sn(x), torch.tensor([1, 7]))
    loss.backward()
    # batch 2 at 1x1 spatial size makes batch-norm gradients huge: clip, as training does
    nn.utils.clip_grad_norm_(sn.parameters(), 1.0)
    opt.step()
    after = sn.state_dict()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.isfinite(sn.eval()(x)).all()


def test_reorganize_by_importance_keeps_outputs(converted) -> None:
    _, _, sn, x = converted
    sn, x = copy.deepcopy(sn).double(), x.double()  # float64: only the sum order changes
    w0 = sn.width_groups[0]
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    with torch.no_grad():
        ref = sn(x)
        sn.reorganize_by_importance()
        out = sn(x)
    assert (out - ref).abs().max() <= 1e-9 * max(1.0, ref.abs().max().item())
    assert not torch.equal(before[f"net.{w0.producers[0]}.weight"],
                           sn.state_dict()[f"net.{w0.producers[0]}.weight"])  # fmt: skip
    # the kept channels are now the important ones: importance is sorted descending
    imp = sn._importance(w0)
    if w0.granularity == 1:
        assert torch.all(imp[:-1] >= imp[1:])


def test_untraceable_model_names_the_module() -> None:
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"'gate'.*leaf_modules") as err:
        convert(GatedNet(), x)
    assert "\n" not in str(err.value)
    model = GatedNet().eval()
    sn = convert(model, x, leaf_modules=["gate"]).eval()
    with torch.no_grad():
        assert (sn(x) - model(x)).abs().max() <= 1e-5
    assert [g.name for g in sn.space.genes] == ["w0"]  # only the MLP's hidden width


def test_kernel_is_not_implemented() -> None:
    with pytest.raises(NotImplementedError):
        convert(CatNet(), torch.randn(1, 3, 32, 32), kernel=True)


def test_bad_example_input_names_the_node() -> None:
    with pytest.raises(ValueError, match=r"running node 'stem_0'") as err:
        convert(CatNet(), torch.randn(1, 4, 32, 32))  # 4 channels, the stem wants 3
    assert "\n" not in str(err.value)


def test_proxy_module_cuts_blocks_with_equal_outputs(converted) -> None:
    _, _, sn, x = converted
    for arch in (sn.space.max_arch(), sn.space.min_arch()):
        sub = sn.export(arch).eval()
        cut = sn.proxy_module(sub)
        blocks = cut.proxy_blocks()  # what AZ-NAS hooks: residual-block partitions
        assert blocks and all(isinstance(b, nn.Module) for b in blocks)
        with torch.no_grad():
            assert torch.equal(cut(x), sub(x))
