"""The elastic ViT: space, export equivalence, exact costs, reordering, ONNX, latency
units, cost models and every registered proxy on an exported subnet."""

from __future__ import annotations

import inspect
import io
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hwnas.domains.image.models.vit import ElasticViT
from hwnas.elastic import build_model
from hwnas.hardware.analytic import AnalyticCost, covering_archs, unit_keys
from hwnas.hardware.factory import build_cost_model
from hwnas.proxies import gaussian_inputs
from hwnas.proxies.base import list_proxies, score_proxy
from tests.conftest import CONF
from tests.test_transformer import randomize_

SHAPE = (1, 12, 16)  # non-square on purpose: 3 x 4 patches of 4 x 4
ATOL = 1e-5


def tiny_vit(**kw) -> ElasticViT:
    args = dict(in_channels=1, image_size=SHAPE[1:], num_classes=5, patch_size=4,
                embed_choices=(8, 12, 16), depth_choices=(1, 2, 3), max_depth=3,
                head_choices=(1, 2), head_dim=4, mlp_ratio_choices=(1, 2))  # fmt: skip
    args.update(kw)
    torch.manual_seed(0)
    return randomize_(ElasticViT(**args), seed=3).eval()


@pytest.fixture
def vit() -> ElasticViT:
    return tiny_vit()


def archs(model, n=10, seed=0):
    rng = random.Random(seed)
    return [model.space.max_arch(), model.space.min_arch()] + [
        model.space.sample(rng) for _ in range(n)
    ]


def images(n=3, seed=1) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- space
def test_space_genes_groups_and_extremes(vit):
    space = vit.space
    assert space.name == "elastic_vit"
    assert space.groups == ["depth", "embed", "heads", "mlp"]
    assert ElasticViT.reorder_groups <= set(space.groups)
    assert [g.name for g in space.genes] == [
        "depth", "embed", "heads0", "mlp0", "heads1", "mlp1", "heads2", "mlp2"
    ]  # fmt: skip
    assert space.gene("heads0").active_if is None  # layer 0 always runs (depth >= 1)
    assert space.gene("mlp2").active_if == ("depth", 2)
    big, small = space.max_arch(), space.min_arch()
    assert big.to_dict() == {"depth": 3, "embed": 16, "heads0": 2, "mlp0": 2, "heads1": 2,
                             "mlp1": 2, "heads2": 2, "mlp2": 2}  # fmt: skip
    assert small["depth"] == 1 and small["embed"] == 8 and small["heads0"] == 1
    assert small["mlp0"] == 1
    # inactive layers canonicalise: depth 1 ignores the genes of layers 1 and 2
    a = space.canonical(big.replace(depth=1))
    assert a == space.canonical(big.replace(depth=1, heads2=1, mlp1=1))
    assert a["heads1"] == a["heads2"] == 1
    assert space.size() == 3 * 4 * (1 + 4 + 16)


def test_space_id_depends_on_shapes():
    assert tiny_vit().space.id != tiny_vit(head_dim=8).space.id
    assert tiny_vit().space.id != tiny_vit(patch_size=2).space.id


# ------------------------------------------------------------------------ export
def test_export_matches_supernet_for_random_archs(vit):
    x = images()
    for arch in archs(vit):
        vit.set_active(arch)
        sub = vit.export(arch)
        assert not sub.training
        torch.testing.assert_close(sub(x), vit(x), rtol=1e-5, atol=ATOL)
        torch.testing.assert_close(
            sub.forward_features(x), vit.forward_features(x), rtol=1e-5, atol=ATOL
        )
        assert vit.forward_features(x).shape == (3, 1 + 12, arch["embed"])


def test_relu_variant_exports_too():
    vit = tiny_vit(activation="relu")
    x = images()
    for arch in archs(vit, n=3):
        vit.set_active(arch)
        torch.testing.assert_close(vit.export(arch)(x), vit(x), rtol=1e-5, atol=ATOL)


def test_export_copies_weights(vit):
    arch = vit.space.max_arch()
    sub = vit.export(arch)
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    vit.set_active(arch)
    assert not torch.allclose(vit(images()), sub(images()))


def test_onnx_export_of_a_random_subnet_matches_onnxruntime(vit):
    ort = pytest.importorskip("onnxruntime")
    sub = vit.export(vit.space.sample(random.Random(7))).eval()
    buf = io.BytesIO()
    torch.onnx.export(sub, (torch.zeros(1, *SHAPE),), buf, input_names=["input"],
                      output_names=["logits"], dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = images(n=4)
    (got,) = sess.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, sub(x).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_reorganize_keeps_the_largest_function(vit):
    x = images()
    vit.set_active(vit.space.max_arch())
    before = vit(x)
    vit.reorganize_by_importance()
    torch.testing.assert_close(vit(x), before, rtol=1e-5, atol=ATOL)
    for layer in vit.encoder.layers:
        heads = layer.attn.head_importance()
        assert torch.all(heads[:-1] >= heads[1:])


def test_reorganize_moves_the_important_embed_channels_first(vit):
    with torch.no_grad():  # make channel 15 dominate every reader of the embed dim
        for layer in vit.encoder.layers:
            layer.attn.qkv.weight[:, 15] *= 100
            layer.mlp.fc1.weight[:, 15] *= 100
    x = images()
    vit.set_active(vit.space.max_arch())
    before = vit(x)
    vit.reorganize_by_importance()
    torch.testing.assert_close(vit(x), before, rtol=1e-5, atol=ATOL)
    assert vit.encoder.layers[0].mlp.fc1.weight.abs().sum(0).argmax() == 0


# ------------------------------------------------------------------------- costs
def test_active_params_and_flops_are_exact(vit):
    """Exact equality (see tests/test_transformer.py for what is and isn't counted;
    attention under SDPA's MATH backend so ``FlopCounterMode`` sees QKᵀ and AV)."""
    x = images(n=2)
    for arch in archs(vit, n=4, seed=2):
        sub = vit.export(arch)
        with vit.active(arch):
            params, flops = vit.active_params(), vit.active_flops(batch_size=2)
        assert params == sum(p.numel() for p in sub.parameters())
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            sub(x)
        assert flops == counter.get_total_flops()


def test_cost_grows_with_every_choice(vit):
    small, big = vit.cost_of(vit.space.min_arch()), vit.cost_of(vit.space.max_arch())
    assert small["params_m"] < big["params_m"] and small["flops_m"] < big["flops_m"]


def test_latency_units_share_keys_for_equal_pieces_and_compose(vit):
    big = vit.space.max_arch()
    units = vit.latency_units(big)
    keys = [k for k, _, _ in units]
    assert keys[0].startswith("embed:") and keys[-1].startswith("head:")
    assert len(set(keys[1:-1])) == 1  # three identical layers, one key
    assert keys == unit_keys(vit, big)
    rng = random.Random(3)
    for arch in [vit.space.min_arch(), *(vit.space.sample(rng) for _ in range(10))]:
        assert vit.latency_unit_keys(arch) == [k for k, _, _ in vit.latency_units(arch)]
    # the same layer config at another depth or position keeps its key
    other = vit.space.canonical(big.replace(depth=2, heads0=1, mlp0=1))
    other_keys = [k for k, _, _ in vit.latency_units(other)]
    assert other_keys[2] == keys[1] and other_keys[1] != keys[1]
    # run unit by unit on the given shapes: the pieces compose to the whole subnet
    x = images(n=2)
    h = x
    for _, module, shape in units:
        assert tuple(h.shape[1:]) == tuple(shape)
        h = module.eval()(h)
    torch.testing.assert_close(h, vit.export(big)(x), rtol=1e-5, atol=ATOL)


def test_covering_archs_reach_every_latency_unit(vit):
    covered = {k for a in covering_archs(vit.space) for k, _, _ in vit.latency_units(a)}
    rng = random.Random(0)
    for _ in range(20):
        assert set(unit_keys(vit, vit.space.sample(rng))) <= covered


def test_analytic_cost_and_factory(vit):
    cost = AnalyticCost(vit, batch_size=2)
    arch = vit.space.sample(random.Random(1))
    got = cost(arch)
    assert set(got) == {"params_m", "flops_m", "memory_mb"}
    assert got["params_m"] == pytest.approx(vit.cost_of(arch)["params_m"])
    assert got["flops_m"] == pytest.approx(vit.cost_of(arch)["flops_m"])
    assert got["memory_mb"] > 0
    hw = {**OmegaConf.to_container(OmegaConf.load(CONF / "hardware" / "analytic.yaml")),
          "correction_samples": 0}  # fmt: skip
    model_cost = build_cost_model(hw, vit)
    out = model_cost(vit.space.max_arch())
    assert set(out) == {"params_m", "flops_m", "memory_mb"}  # no samples: no latency
    assert out["flops_m"] > model_cost(vit.space.min_arch())["flops_m"]


# ----------------------------------------------------------------------- proxies
@pytest.mark.parametrize("name", list_proxies())
def test_every_proxy_is_finite_and_deterministic_on_a_vit_subnet(name, one_thread):
    vit = tiny_vit()
    sub = vit.export(vit.space.sample(random.Random(3)))
    inputs = gaussian_inputs(SHAPE, batch_size=6, num_classes=5, seed=0)
    first = score_proxy(name, sub, inputs, seed=1)
    assert np.isfinite(first)
    assert score_proxy(name, sub, inputs, seed=1) == first


# ---------------------------------------------------------------- build / config
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_default_config_builds_for_fmnist_and_cifar(shape):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "elastic_vit.yaml"))
    model = build_model(cfg, shape, 10)
    assert isinstance(model, ElasticViT) and model.input_shape == shape
    model.set_active(model.space.min_arch())
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_config_keys_are_the_constructor_arguments():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "elastic_vit.yaml"))
    params = set(inspect.signature(ElasticViT).parameters)
    assert set(cfg) - {"name"} == params - {"in_channels", "image_size", "num_classes"}


def test_build_model_rejects_bad_shapes_and_options():
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        build_model({"name": "elastic_vit", "patch_size": 4}, (1, 30, 28), 10)
    with pytest.raises(ValueError, match="elastic_vit"):
        build_model({"name": "elastic_vit", "bogus": 1}, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="max_depth"):
        tiny_vit(depth_choices=(1, 2), max_depth=3)
    with pytest.raises(ValueError, match="activation"):
        tiny_vit(activation="tanh")


def test_set_active_rejects_archs_outside_the_space(vit):
    bad = dict(vit.space.max_arch())
    bad["embed"] = 10
    with pytest.raises(ValueError):
        vit.set_active(bad)
