"""The elastic CNN: export equivalence, exact costs, kernel transforms, reordering."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.elastic import build_model
from tests.conftest import tiny_cnn


def _archs(model, n=6, seed=0):
    rng = random.Random(seed)
    return [model.space.max_arch(), model.space.min_arch()] + [
        model.space.sample(rng) for _ in range(n)
    ]


@pytest.mark.parametrize("train", [False, True])
def test_export_matches_supernet_for_random_archs(cnn, train):
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    cnn.train(train)
    for arch in _archs(cnn):
        cnn.set_active(arch)
        want = cnn(x)
        got = cnn.export(arch).train(train)(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_export_copies_weights(cnn):
    arch = cnn.space.max_arch()
    sub = cnn.export(arch)
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    x = torch.randn(2, 1, 16, 16)
    cnn.eval().set_active(arch)
    assert not torch.allclose(cnn(x), sub.eval()(x))


def test_active_params_and_flops_are_exact(cnn):
    x = torch.randn(3, 1, 16, 16)
    for arch in _archs(cnn, n=4, seed=2):
        sub = cnn.export(arch).eval()
        with cnn.active(arch):
            params, flops = cnn.active_params(), cnn.active_flops(batch_size=3)
        assert params == sum(p.numel() for p in sub.parameters())
        counter = FlopCounterMode(display=False)
        with counter:
            sub(x)
        assert flops == counter.get_total_flops()


def test_cost_grows_with_every_choice(cnn):
    small, big = cnn.cost_of(cnn.space.min_arch()), cnn.cost_of(cnn.space.max_arch())
    assert small["params_m"] < big["params_m"] and small["flops_m"] < big["flops_m"]


def test_kernel_transform_is_identity_initialised(cnn):
    """A fresh supernet's 5x5 kernel is exactly the centre of its 7x7 one."""
    arch = cnn.space.max_arch()
    k5 = arch.replace(**{g.name: 5 for g in cnn.space.genes if g.group == "kernel"})
    sub7, sub5 = cnn.export(arch), cnn.export(cnn.space.canonical(k5))
    w7 = [m.weight for m in sub7.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    w5 = [m.weight for m in sub5.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert w7 and len(w7) == len(w5)
    for a, b in zip(w7, w5):
        torch.testing.assert_close(b, a[:, :, 1:6, 1:6])


def test_reorganize_keeps_the_largest_function(cnn):
    x = torch.randn(4, 1, 16, 16)
    cnn.eval().set_active(cnn.space.max_arch())
    before = cnn(x)
    cnn.reorganize_by_importance()
    torch.testing.assert_close(cnn(x), before, rtol=1e-4, atol=1e-5)


def test_active_context_restores_previous_arch(cnn):
    a, b = _archs(cnn, n=1)[:2]
    cnn.set_active(a)
    with cnn.active(b):
        assert cnn.get_active() == b
    assert cnn.get_active() == a


def test_build_model_for_cifar_and_fmnist_shapes():
    for shape in ((3, 32, 32), (1, 28, 28)):
        model = build_model({"name": "elastic_cnn", "stage_channels": [8, 16, 24]}, shape, 10)
        assert isinstance(model, ElasticCNN)
        assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_build_model_rejects_bad_names_and_options():
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"name": "nope"}, (1, 16, 16), 10)
    with pytest.raises(ValueError, match="elastic_cnn"):
        build_model({"name": "elastic_cnn", "bogus": 1}, (1, 16, 16), 10)


def test_set_active_rejects_archs_outside_the_space():
    model = tiny_cnn()
    bad = dict(model.space.max_arch())
    bad["d0"] = 9
    with pytest.raises(ValueError):
        model.set_active(bad)
