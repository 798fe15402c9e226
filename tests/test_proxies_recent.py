"""ZiCo, MeCo and VKDNW (hwnas.proxies.recent): on a tiny CNN, a tiny transformer and
NAS-Bench-201 networks, and against hand / brute-force computations of their definitions."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwnas.proxies as P
import hwnas.proxies.recent as R
from hwnas.proxies.common import prepare
from hwnas.spaces.nb201 import build_nb201, nb201_space
from tests.test_proxies import MODELS  # the tiny CNN and transformer every proxy is tested on

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("zico", "meco", "vkdnw", "vkdnw_single")


def make(kind: str, seed: int = 0, batch: int = 6) -> tuple[nn.Module, P.ProxyInputs]:
    cls, shape = MODELS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls()
    return model, P.gaussian_inputs(shape, batch, 5, seed=seed)


def mlp(seed: int = 0, bias: bool = True) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6, bias=bias), nn.ReLU(), nn.Linear(6, 3, bias=bias))


def small_nb201(arch) -> nn.Module:
    return build_nb201(arch, C=4, N=1, seed=0)


def test_registered_with_docs():
    listed = P.list_proxies()
    for name in NAMES:
        assert name in listed
        proxy = P.get_proxy(name)
        assert proxy.higher_is_better and len(proxy.doc) > 100


@pytest.mark.parametrize("name", NAMES)
def test_on_nas_bench_201(name):
    inputs = P.gaussian_inputs((3, 16, 16), 4, 10, 0)
    other = (
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    )
    archs = [nb201_space().sample(random.Random(0)), other]
    values = [P.score_proxy(name, small_nb201(a), inputs, seed=0) for a in archs]
    assert all(math.isfinite(v) for v in values)
    assert values[0] != values[1]  # the score sees the architecture


def test_seed_changes_only_the_random_parts():
    model, inputs = make("cnn")
    # zico draws labels, vkdnw re-draws weights; meco uses neither
    assert P.score_proxy("zico", model, inputs, 0) != P.score_proxy("zico", model, inputs, 1)
    assert P.score_proxy("vkdnw", model, inputs, 0) != P.score_proxy("vkdnw", model, inputs, 1)
    assert P.score_proxy("meco", model, inputs, 0) == P.score_proxy("meco", model, inputs, 1)


# -------------------------------------------------------------------------------- ZiCo
def test_zico_from_grads_by_hand():
    # layer 1: entries (1,3) -> mean|g| 2, std 1; (2,2) and (0,0) have std 0 (left out)
    # layer 2: (-1, 1) -> mean|g| 1, std 1 -> log 1 = 0; layer 3 unused (None) -> skipped
    g1 = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([[-1.0]]), None]
    g2 = [torch.tensor([3.0, 2.0, 0.0]), torch.tensor([[1.0]]), None]
    assert R.zico_from_grads([g1, g2]) == pytest.approx(math.log(2.0), rel=1e-12)
    # a layer whose gradients never vary is skipped; nothing varying -> the empty sum 0
    assert R.zico_from_grads([[torch.ones(3)], [torch.ones(3)]]) == 0.0
    # population std (ddof=0): three batches (0, 0, 3) -> mean|g| 1, std sqrt(2)
    three = [[torch.tensor([0.0])], [torch.tensor([0.0])], [torch.tensor([3.0])]]
    assert R.zico_from_grads(three) == pytest.approx(math.log(1 / math.sqrt(2)), rel=1e-12)


@pytest.mark.parametrize("batch", [6, 5])
def test_zico_matches_explicit_per_half_gradients(batch):
    inputs = P.gaussian_inputs((4,), batch, 3, 0)
    inputs.y = torch.arange(batch) % 3
    ref = mlp()
    h = batch // 2
    halves = []
    for sl in (slice(0, h), slice(h, batch)):
        loss = F.cross_entropy(ref(inputs.x[sl]), inputs.y[sl])
        halves.append(torch.autograd.grad(loss, [ref[0].weight, ref[2].weight]))
    expect = 0.0
    for g1, g2 in zip(*halves):
        g1, g2 = g1.double().flatten(), g2.double().flatten()
        std = (g1 - g2).abs() / 2  # population std of two values
        keep = std > 0
        expect += math.log(float((((g1.abs() + g2.abs()) / 2)[keep] / std[keep]).sum()))
    assert P.score_proxy("zico", mlp(), inputs) == pytest.approx(expect, rel=1e-9)


def test_zico_needs_two_samples_and_scores_dead_nets_zero():
    model, inputs = make("cnn", batch=1)
    with pytest.raises(ValueError, match="batch >= 2"):
        P.score_proxy("zico", model, inputs)
    dead = small_nb201("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert P.score_proxy("zico", dead, P.gaussian_inputs((3, 16, 16), 4, 10, 0)) == 0.0


# -------------------------------------------------------------------------------- MeCo
def test_min_correlation_eigenvalue_matches_numpy():
    feat = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    expect = np.linalg.eigvalsh(np.corrcoef(feat.double().numpy())).min()
    assert R.min_correlation_eigenvalue(feat) == pytest.approx(expect, rel=1e-10)
    assert R.min_correlation_eigenvalue(feat[:, :4]) == 0.0  # 4 positions < 5 channels
    const = torch.cat([feat, torch.full((1, 40), 0.3)])
    assert R.min_correlation_eigenvalue(const) == 0.0  # a constant channel (NaN row) -> 0


def _two_channel_input(r_seed: int = 0) -> tuple[torch.Tensor, float]:
    """(2, 2, 5, 5) images whose first sample's two channels have a known correlation."""
    g = torch.Generator().manual_seed(r_seed)
    x = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    x[0, 1] = 0.6 * x[0, 0] + 0.4 * x[0, 1]
    r = float(np.corrcoef(x[0].reshape(2, -1).numpy())[0, 1])
    return x.float(), r


def test_meco_on_constructed_feature_maps():
    x, r = _two_channel_input()
    conv_id = nn.Conv2d(2, 2, 1, bias=False)  # output = input: P = [[1, r], [r, 1]]
    conv_const = nn.Conv2d(2, 3, 1)  # third channel constant -> its layer contributes 0
    with torch.no_grad():
        conv_id.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        conv_const.weight.normal_(generator=torch.Generator().manual_seed(1))
        conv_const.weight[2].zero_()
    model = nn.Sequential(conv_id, conv_const, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(3, 4))  # 2-D output: skipped  # fmt: skip
    inputs = P.ProxyInputs(x, None, 4)
    assert P.score_proxy("meco", model, inputs) == pytest.approx(1 - abs(r), rel=1e-6)
    other = P.ProxyInputs(torch.cat([x[:1], -x[1:]]), None, 4)  # only sample 0 is used
    assert P.score_proxy("meco", model, other) == P.score_proxy("meco", model, inputs)
    # sample 0 runs ALONE: train-mode BatchNorm sees only its statistics
    cnn, batch = make("cnn")
    alone = P.ProxyInputs(batch.x[:1], None, 5)
    assert P.score_proxy("meco", cnn, batch) == P.score_proxy("meco", cnn, alone)


def test_meco_on_sequences_tokens_are_positions():
    x, r = _two_channel_input()
    seq = x.reshape(2, 2, 25).transpose(1, 2)  # (B, T=25, E=2), same two channels
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert P.score_proxy("meco", lin, P.ProxyInputs(seq, None, 2)) == pytest.approx(
        1 - abs(r), rel=1e-6
    )
    # a transformer with more tokens than channels gets non-singular matrices
    model, _ = make("transformer")
    long = P.gaussian_inputs((32, 8), 2, 5, 0)
    assert P.score_proxy("meco", model, long) > 0.0
    with pytest.raises(ValueError, match="no conv"):
        P.score_proxy("meco", mlp(), P.gaussian_inputs((4,), 3, 3, 0))


# ------------------------------------------------------------------------------- VKDNW
def test_decile_entropy():
    assert R.decile_entropy(torch.full((50,), 2.5)) == pytest.approx(math.log(9), rel=1e-12)
    lam = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)  # deciles 0.1 .. 0.9
    q = np.arange(1, 10) / 45.0
    assert R.decile_entropy(lam) == pytest.approx(float(-(q * np.log(q)).sum()), rel=1e-12)
    lam = torch.tensor([0.0] * 95 + [1.0] * 5)  # all nine deciles are 0
    with pytest.raises(FloatingPointError, match="sum to 0"):
        R.decile_entropy(lam)
    lam = torch.tensor([0.0] * 85 + [1.0] * 15)  # only the 0.9 decile is > 0: entropy 0
    assert R.decile_entropy(lam) == 0.0


def brute_force_fisher(model: nn.Module, x: torch.Tensor, smoothing: float) -> torch.Tensor:
    """``mean_n Σ_c p_c u_c u_cᵀ`` with ``u_c`` the gradient, w.r.t. the first entry of each
    parameter tensor, of ``log softmax_c`` (smoothing 0) or of ``logit_c - Σ_c' p_c'
    logit_c'`` with the smoothed ``p`` held fixed -- one autograd call per (sample, class)."""
    params = list(model.parameters())
    total = torch.zeros(len(params), len(params), dtype=torch.float64)
    for xn in x:
        logits = model(xn.unsqueeze(0))[0]
        p = (1 - smoothing) * torch.softmax(logits, 0) + smoothing / logits.shape[0]
        p = p.detach()
        for c in range(logits.shape[0]):
            if smoothing == 0.0:
                target = torch.log_softmax(logits, 0)[c]
            else:
                target = logits[c] - (p * logits).sum()
            grads = torch.autograd.grad(target, params, retain_graph=True)
            u = torch.stack([g.flatten()[0] for g in grads]).double()
            total += float(p[c]) * torch.outer(u, u)
    return total / x.shape[0]


@pytest.mark.parametrize("smoothing", [0.0, R.VKDNW_SMOOTHING])
def test_vkdnw_fisher_equals_per_sample_brute_force(smoothing):
    model = mlp().eval()
    x = P.gaussian_inputs((4,), 7, 3, 0).x * 3
    fast = R.vkdnw_fisher(model, x, smoothing=smoothing, chunk_size=3)
    slow = brute_force_fisher(model, x, smoothing)
    assert fast.shape == (4, 4) and fast.dtype == torch.float64
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-10)
    assert torch.allclose(fast, fast.T)


def test_vkdnw_and_single_match_their_definitions():
    model, inputs = make("cnn")
    seed = 5
    ref = copy.deepcopy(model)
    x = prepare(ref, inputs, train=False)
    R.kaiming_fanin_init_(ref, torch.Generator().manual_seed(seed))  # the proxy's own draws
    fisher = brute_force_fisher(ref, x, R.VKDNW_SMOOTHING)
    expect = R.decile_entropy(torch.linalg.eigvalsh(fisher).clamp_min(0))
    got = P.score_proxy("vkdnw", model, inputs, seed)
    assert got == pytest.approx(expect, rel=1e-5)
    assert 0.0 < got <= math.log(9)
    aleph = len(list(model.parameters()))  # conv/BN/conv/BN/linear weights and biases
    assert aleph == 10
    assert P.score_proxy("vkdnw_single", model, inputs, seed) == pytest.approx(aleph + got)
    model.head.bias.requires_grad_(False)  # ℵ counts trainable tensors only
    assert P.score_proxy("vkdnw_single", model, inputs, seed) == pytest.approx(aleph - 1 + got)


def test_kaiming_fanin_init():
    model = nn.Sequential(nn.Conv2d(16, 64, 3), nn.BatchNorm2d(64), nn.Flatten(),
                          nn.Linear(400, 300))  # fmt: skip
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
        model[1].weight.fill_(0.5)
    R.kaiming_fanin_init_(model, torch.Generator().manual_seed(0))
    conv, bn, _, lin = model
    assert float(conv.weight.std()) == pytest.approx(math.sqrt(2 / 144), rel=0.02)  # fan_in
    assert float(lin.weight.std()) == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert not conv.bias.any() and not lin.bias.any()
    assert torch.equal(bn.weight, torch.ones(64)) and not bn.bias.any()
    assert not bn.running_mean.any() and torch.equal(bn.running_var, torch.ones(64))


class _Overflow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * 1e39  # inf in float32


def test_vkdnw_fails_clearly():
    inputs = P.gaussian_inputs((4,), 3, 3, 0)
    with pytest.raises(ValueError, match="no parameters"):
        P.score_proxy("vkdnw", nn.Sequential(nn.Identity()), inputs)
    with pytest.raises(FloatingPointError, match="not finite"):
        P.score_proxy("vkdnw", _Overflow(), inputs)
    dead = small_nb201("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    images = P.gaussian_inputs((3, 16, 16), 4, 10, 0)
    with pytest.raises(FloatingPointError, match="sum to 0"):
        P.score_proxy("vkdnw_single", dead, images)
    report = P.score_proxies_report(["vkdnw", "zico"], dead, images)
    assert set(report.failures) == {"vkdnw"} and report.scores["zico"] == 0.0
