"""hwnas.bootstrap: converting plain models (torchvision, custom) into supernets."""

from __future__ import annotations

import copy
import functools
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

from hwnas.bootstrap import convert
from hwnas.bootstrap.model import BootstrapModel, width_choices
from hwnas.bootstrap.ops import ELASTIC_TYPES, kernel_choices

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
               "efficientnet_b0", "regnet_x_400mf"]  # fmt: skip
# "+kernel": converted with kernel=True (elastic kernel sizes)
KERNEL_MODELS = ["mobilenet_v3_large+kernel", "efficientnet_b0+kernel", "kernelnet+kernel"]
MODELS = [*TORCHVISION, "catnet", "cataddnet", *KERNEL_MODELS]
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


class CatAddNet(nn.Module):
    """Concatenations added to a single conv's output, and to one another with other
    boundaries; a grouped conv's output added to a concatenation cutting its groups."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16, 3)
        self.a, self.b, self.c = _cbr(16, 8), _cbr(16, 12, 3), _cbr(16, 20)
        self.p, self.q = _cbr(16, 12), _cbr(16, 8)
        self.t, self.g = _cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.u, self.v = _cbr(16, 6), _cbr(16, 10)
        self.head, self.fc = _cbr(36, 24), nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.a(x), self.b(x)], dim=1) + self.c(x)  # c splits into 8 + 12
        y = y + torch.cat([self.p(x), self.q(x)], dim=1)  # 8 + 12 against 12 + 8
        z = self.g(self.t(x)) + torch.cat([self.u(x), self.v(x)], dim=1)  # 6 cuts a four
        y = self.head(torch.cat([F.relu(y), z], dim=1))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class KernelNet(nn.Module):
    """Kernels that shrink (7x7 with reflect padding, dilated 5x5, depthwise 5x5 in a
    residual block, a 1-d 7) and ones that cannot (no padding, 1x5, even 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 7, padding=3, padding_mode="reflect")
        self.dil = nn.Conv2d(16, 16, 5, padding=4, dilation=2, bias=False)
        self.block = nn.Sequential(_cbr(16, 32), _cbr(32, 32, 5, g=32), _cbr(32, 16))
        self.valid = nn.Conv2d(16, 16, 5)  # 'valid': a smaller kernel changes the size
        self.wide = nn.Conv2d(16, 16, (1, 5), padding=(0, 2))
        self.even = nn.Conv2d(16, 16, 6, padding="same")
        self.seq = nn.Conv1d(16, 16, 7, padding="same")
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dil(F.relu(self.stem(x))))
        x = x + self.block(x)
        x = self.even(self.wide(self.valid(x)))
        x = self.seq(x.mean(3))
        return self.fc(x.mean(2))


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


CUSTOM = {"catnet": CatNet, "cataddnet": CatAddNet, "kernelnet": KernelNet}


def build(name: str) -> nn.Module:
    """Random init with non-trivial batch-norm statistics, so outputs are O(0.1-1) and the
    comparisons below mean something (fresh torchvision nets output ~1e-10)."""
    torch.manual_seed(0)
    if name in CUSTOM:
        model = CUSTOM[name]()
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


@functools.cache
def _converted(name: str) -> tuple[str, nn.Module, BootstrapModel, torch.Tensor]:
    base, _, kernel = name.partition("+")
    model = build(base)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return name, model, convert(model, x, kernel=kernel == "kernel").eval(), x


@pytest.fixture(scope="module", params=MODELS)
def converted(request) -> tuple[str, nn.Module, BootstrapModel, torch.Tensor]:
    return _converted(request.param)


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


def test_kernel_choices_need_odd_square_same_padded_kernels() -> None:
    assert kernel_choices(nn.Conv2d(4, 4, 7, padding=3)) == ((3, 5, 7), None)
    assert kernel_choices(nn.Conv2d(4, 4, 5, padding=4, dilation=2)) == ((3, 5), None)
    assert kernel_choices(nn.Conv1d(4, 4, 9, padding="same")) == ((3, 5, 7, 9), None)
    assert kernel_choices(nn.Conv2d(4, 4, 3, padding=1)) == ((), None)  # nothing to shrink
    for conv, why in [
        (nn.Conv2d(4, 4, 5), "padding [0, 0] is not (k-1)//2*dilation = [2, 2]"),
        (nn.Conv2d(4, 4, 5, padding="valid"), "padding valid is not"),
        (nn.Conv2d(4, 4, 5, padding=2, dilation=2), "padding [2, 2] is not"),
        (nn.Conv2d(4, 4, (1, 5), padding=(0, 2)), "not square"),
        (nn.Conv2d(4, 4, 6, padding="same"), "even kernel 6"),
    ]:
        choices, reason = kernel_choices(conv)
        assert choices == () and why in reason


def test_elastic_kernels_are_centre_crops() -> None:
    _, model, sn, x = _converted("kernelnet+kernel")
    desc = json.loads(json.dumps(sn.describe()))
    kernels = {k["module"]: k["choices"] for k in desc["kernel_convs"]}
    assert kernels == {"stem": [3, 5, 7], "dil": [3, 5], "block.1.0": [3, 5], "seq": [3, 5, 7]}
    fixed = {k["module"]: k["reason"] for k in desc["fixed_kernels"]}
    assert set(fixed) == {"valid", "wide", "even"}
    assert "would change the output size" in fixed["valid"]
    assert "centre crop" in desc["kernel_transform"]
    genes = {g.name: g for g in sn.space.genes if g.group == "kernel"}
    assert [g.name for g in genes.values()] == ["k0", "k1", "k2", "k3"]
    assert genes["k2"].active_if == ("d0", 0)  # the depthwise conv of the residual block
    # the stem at kernel 3: the centre 3x3 of its 7x7 weights, reflect padding 1
    small = {**sn.space.max_arch(), "k0": 3}
    with torch.no_grad(), sn.active(small):
        stem = model.stem
        ref = F.conv2d(F.pad(x, [1] * 4, mode="reflect"), stem.weight[:, :, 2:5, 2:5], stem.bias)
        assert torch.allclose(sn.net.stem(x), ref, atol=1e-6)
        assert sn.net.stem.active_params() == 16 * 3 * 9 + 16
        assert (sn(x) - model(x)).abs().max() > 1e-4  # the subnet differs from the original
        assert sn.export(small).stem.kernel_size == (3, 3)
    with torch.no_grad():
        assert (sn(x) - model(x)).abs().max() <= 1e-5  # the largest arch again


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0"])
def test_torchvision_depthwise_5x5_kernels_shrink(name: str) -> None:
    _, model, sn, x = _converted(f"{name}+kernel")
    desc = sn.describe()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    five = {n for n, m in convs.items() if m.kernel_size == (5, 5)}
    assert five and all(convs[n].groups == convs[n].in_channels for n in five)  # depthwise
    assert {k["module"] for k in desc["kernel_convs"]} == five
    assert all(k["choices"] == [3, 5] for k in desc["kernel_convs"]) and not desc["fixed_kernels"]
    # kernel genes of convs inside skippable blocks matter only when their block runs
    assert any(g.active_if for g in sn.space.genes if g.group == "kernel")
    assert sn.space.groups == ["depth", "kernel", "width"]
    # only the kernels shrunk: outputs change, costs drop by the cropped weights exactly
    small = {**sn.space.max_arch(), **{k["gene"]: 3 for k in desc["kernel_convs"]}}
    sub = sn.export(small).eval()
    with torch.no_grad(), sn.active(small):
        got = sub(x)
        assert (got - sn(x)).abs().max() <= 1e-5
        assert (got - model(x)).abs().max() > 1e-4
        cropped = sum(convs[n].out_channels * (25 - 9) for n in five)
        assert sn.active_params() == sum(p.numel() for p in model.parameters()) - cropped
    # sorting channels by importance commutes with the crop (it permutes channels only)
    sn, x = copy.deepcopy(sn).double(), x.double()
    with torch.no_grad(), sn.active(small):
        ref = sn(x)
        sn.reorganize_by_importance()
        assert (sn(x) - ref).abs().max() <= 1e-9 * max(1.0, ref.abs().max().item())


def test_add_of_a_concatenation_and_a_conv_splits_the_conv() -> None:
    _, model, sn, x = _converted("cataddnet")
    desc = sn.describe()
    # c's 20 channels: 8 with a (and the first 8 of p), 4 with b and p, 8 with b and q
    c_groups = [g for g in desc["width_groups"] if "c.0" in g["producers"]]
    assert [g["channels"] for g in c_groups] == [8, 4, 8]
    assert {"a.0", "p.0"} <= set(c_groups[0]["producers"])
    assert {"b.0", "p.0"} <= set(c_groups[1]["producers"])
    assert {"b.0", "q.0"} <= set(c_groups[2]["producers"])
    # g's channels shrink in fours: cut at 6 by the concatenation, they stay whole
    reasons = [f["reason"] for f in desc["fixed_groups"]]
    assert any("cutting groups of 4 channels of a grouped convolution" in r for r in reasons)
    assert not any("u.0" in g["producers"] or "t.0" in g["producers"]
                   for g in desc["width_groups"])  # fmt: skip
    rng = random.Random(5)
    for arch in [sn.space.min_arch(), *(sn.space.sample(rng) for _ in range(4))]:
        with torch.no_grad(), sn.active(arch):
            assert (sn.export(arch).eval()(x) - sn(x)).abs().max() <= 1e-5


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


def test_model_kernel_option_reaches_the_model_and_needs_a_kernel_phase(tmp_path) -> None:
    from hwnas.app.checks import preflight
    from hwnas.app.context import ConfigError, build_context
    from tests.conftest import compose_config

    base = ["experiment=bootstrap_tiny", f"paths.output_dir={tmp_path}/r",
            f"paths.cache_dir={tmp_path}/c"]  # fmt: skip
    assert compose_config(base).model.kernel is False
    ctx = build_context(compose_config([*base, "model.kernel=true"]))
    kernel = [g for g in ctx.model.space.genes if g.group == "kernel"]
    assert [(g.name, g.choices) for g in kernel] == [("k0", (3, 5, 7))]  # resnet18's 7x7 stem
    # no phase opens the kernel group: it would train only at 7 while searches pick any
    with pytest.raises(ConfigError, match=r"never make the bootstrap groups \['kernel'\]"):
        preflight(ctx)
    # the override conf/supernet/bootstrap.yaml gives (without its line breaks)
    phases = ("supernet.phases=[{name:largest,elastic:[],epochs:2,lr:0.01},"
              "{name:kernel,elastic:[kernel],epochs:1,lr:0.01},"
              "{name:depth,elastic:[kernel,depth],epochs:1,lr:0.01},"
              "{name:width,elastic:[kernel,depth,width],epochs:2,lr:0.01}]")  # fmt: skip
    assert preflight(build_context(compose_config([*base, "model.kernel=true", phases]))) == []
