"""The transformer proxies (hwnas.proxies.transformer): registration, determinism,
closed-form checks of each definition, the probe contract (a hand-written model that
reports through ``probe.note`` is scored like hwnas's own layers) and NotApplicable."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import hwnas.proxies as P
from hwnas.core import probe
from hwnas.elastic.transformer.encoder import ElasticTransformerEncoder
from hwnas.proxies.base import NotApplicable
from hwnas.proxies.transformer import GROUP, pca_components

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = (*GROUP, "weight_spectrum")
ATTENTION_PROXIES = ("head_confidence", "softmax_confidence", "head_importance")
T, D_IN = 6, 8  # tokens and input features of every sequence model here


# ------------------------------------------------------------------------ models
class ElasticNet(nn.Module):
    """Linear embedding, hwnas's elastic encoder (pre-norm, GELU MLP), mean pooling,
    linear head; input (B, T, 8)."""

    def __init__(self, hidden: int = 32, depth: int = 2, **kw) -> None:
        super().__init__()
        self.embed = nn.Linear(D_IN, 16)
        self.encoder = ElasticTransformerEncoder(16, depth, 2, 8, hidden, **kw)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class HandAttention(nn.Module):
    """Softmax self-attention written out by hand; reports ATTENTION."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, self.heads, hd).transpose(1, 2)  # (B, h, T, hd)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        probs = (q @ k.transpose(-2, -1) / hd**0.5).softmax(dim=-1)
        y = probs @ v
        probe.note(probe.ATTENTION, self, probs=probs, heads=y)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class FourierMixer(nn.Module):
    """FNet-style token mixer without weights; reports MIXER."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        y = torch.fft.fft(x, dim=1).real
        probe.note(probe.MIXER, self, heads=y.reshape(b, t, self.heads, -1).transpose(1, 2))
        return y


class HandFFN(nn.Module):
    def __init__(self, d: int, f: int, act: nn.Module | None = None) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, f), act or nn.GELU(), nn.Linear(f, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.fc1(x))
        probe.note(probe.FFN, self, hidden=hidden)
        return self.fc2(hidden)


class HandNet(nn.Module):
    """One residual layer per entry of ``mixers`` ("attention" or "fourier"), each
    followed by a hand-written FFN when ``ffn``; mean pooling, linear head."""

    def __init__(self, mixers=("attention",), ffn: bool = True, d: int = 8, f: int = 16):
        super().__init__()
        self.embed = nn.Linear(D_IN, d)
        self.mixers = nn.ModuleList(
            HandAttention(d, 2) if m == "attention" else FourierMixer(2) for m in mixers
        )
        self.ffns = nn.ModuleList(HandFFN(d, f) for _ in mixers) if ffn else None
        if ffn and not mixers:
            self.ffns = nn.ModuleList([HandFFN(d, f)])
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for mixer in self.mixers:
            x = x + mixer(x)
        for ffn in self.ffns or ():
            x = x + ffn(x)
        return self.head(x.mean(dim=1))


def seeded(build, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def inputs(seed: int = 0, batch: int = 6) -> P.ProxyInputs:
    return P.gaussian_inputs((T, D_IN), batch, 5, seed=seed)


MODELS = {
    "elastic": lambda: ElasticNet(dropout=0.1, attn_dropout=0.1),  # dropout must not matter
    "hand": lambda: HandNet(("attention", "fourier")),
}


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )  # fmt: skip


def recorded(model: nn.Module, x: torch.Tensor, grad: bool = False):
    """(output, records) of ``model(x)`` on a prepared copy (what the proxies see)."""
    with torch.set_grad_enabled(grad), probe.record() as records:
        out = model(x)
    return out, records


# ---------------------------------------------------------------- registration
def test_registered_with_direction_and_docs():
    listed = P.list_proxies()
    for name in NAMES:
        assert name in listed
        proxy = P.get_proxy(name)
        assert proxy.higher_is_better and len(proxy.doc) > 100, name
    assert issubclass(NotApplicable, ValueError) and P.NotApplicable is NotApplicable


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", NAMES)
def test_finite_deterministic_and_on_a_copy(name, kind):
    model = seeded(MODELS[kind])
    before = copy.deepcopy(model.state_dict())
    rng = torch.random.get_rng_state()
    a = P.score_proxy(name, model, inputs(), seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng)  # no dropout drew from it
    assert math.isfinite(a) and a == P.score_proxy(name, model, inputs(), seed=3)
    assert a == P.score_proxy(name, model, inputs(), seed=4)  # nothing random at all
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    if kind == "elastic":
        assert model.encoder.layers[0].attn.attn_dropout == 0.1  # the copy's was zeroed


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_shared_pass_equals_single_proxies(kind):
    model = seeded(MODELS[kind])
    report = P.score_proxies_report(NAMES, model, inputs(), seed=1)
    assert not report.failures and list(report.scores) == list(NAMES)
    for name in NAMES:
        assert report.scores[name] == P.score_proxy(name, model, inputs(), seed=1), name


# ------------------------------------------------------------- closed forms
def test_softmax_confidence_of_uniform_attention_is_one_over_t():
    model = seeded(ElasticNet)
    with torch.no_grad():
        for layer in model.encoder.layers:  # fused rows (head, [q, k, v], head_dim)
            attn = layer.attn
            w = attn.qkv.weight.view(attn.max_heads, 3, attn.head_dim, -1)
            b = attn.qkv.bias.view(attn.max_heads, 3, attn.head_dim)
            w[:, :2].zero_()
            b[:, :2].zero_()
    value = P.score_proxy("softmax_confidence", model, inputs())
    assert value == pytest.approx(1 / T, rel=1e-6)
    hand = seeded(lambda: HandNet(("attention", "attention")))
    with torch.no_grad():
        for m in hand.mixers:
            for lin in (m.q, m.k):
                lin.weight.zero_()
                lin.bias.zero_()
    assert P.score_proxy("softmax_confidence", hand, inputs()) == pytest.approx(1 / T, rel=1e-6)


def test_confidences_use_the_layers_they_apply_to():
    # one attention and one Fourier layer: head confidence averages both, softmax
    # confidence reads the attention one only, and the FFN records are skipped
    model = seeded(lambda: HandNet(("attention", "fourier")))
    _, records = recorded(model, inputs().x)
    assert [r.kind for r in records] == ["attention", "mixer", "ffn", "ffn"]
    per_layer = [float(r.tensors["heads"].abs().amax(dim=-1).double().mean()) for r in records[:2]]
    expected = sum(per_layer) / 2
    assert P.score_proxy("head_confidence", model, inputs()) == pytest.approx(expected, rel=1e-12)
    probs = records[0].tensors["probs"]
    soft = float(probs.amax(dim=-1).double().mean())
    assert P.score_proxy("softmax_confidence", model, inputs()) == pytest.approx(soft, rel=1e-12)


def test_head_importance_is_weight_times_gradient_of_the_output_sum():
    model = seeded(lambda: HandNet(("attention", "fourier")))
    work = copy.deepcopy(model)
    out, _ = recorded(work, inputs().x, grad=True)
    out.sum().backward()
    attn = work.mixers[0]  # the Fourier mixer has no weights: it adds nothing
    expected = sum(
        float((lin.weight.double() * lin.weight.grad.double()).abs().sum())
        for lin in (attn.q, attn.k, attn.v, attn.o)
    )
    value = P.score_proxy("head_importance", model, inputs())
    assert value == pytest.approx(expected, rel=1e-9) and value > 0
    fourier_only = seeded(lambda: HandNet(("fourier",)))
    assert P.score_proxy("head_importance", fourier_only, inputs()) == 0.0


def nuclear_capacity(weights) -> float:
    return sum(
        math.log1p(float(torch.linalg.svdvals(w.detach().float()).double().sum())) for w in weights
    )


def test_weight_spectrum_weighs_mixers_and_the_rest_equally_and_is_data_free():
    model = seeded(lambda: HandNet(("attention",)))
    attn, ffn = model.mixers[0], model.ffns[0]
    mix = nuclear_capacity([attn.q.weight, attn.k.weight, attn.v.weight, attn.o.weight])
    rest = nuclear_capacity([model.embed.weight, ffn.fc1.weight, ffn.fc2.weight, model.head.weight])
    expected = 0.5 * math.log(mix) + 0.5 * math.log(rest)
    value = P.score_proxy("weight_spectrum", model, inputs(0))
    assert value == pytest.approx(expected, rel=1e-9)
    assert P.score_proxy("weight_spectrum", model, inputs(1, batch=3)) == value


def test_a_plain_cnn_gets_not_applicable_but_a_weight_spectrum():
    cnn = seeded(tiny_cnn)
    x = P.gaussian_inputs((3, 8, 8), 4, 5, seed=0)
    report = P.score_proxies_report(NAMES, cnn, x, seed=0)
    assert set(report.failures) == set(GROUP) and list(report.scores) == ["weight_spectrum"]
    assert all(msg.startswith("NotApplicable: ") for msg in report.failures.values())
    assert "hwnas.core.probe" in report.failures["head_confidence"]
    for name in GROUP:
        with pytest.raises(NotApplicable, match=name):
            P.score_proxy(name, cnn, x)
    convs = [cnn[0].weight.reshape(4, -1), cnn[3].weight.reshape(6, -1), cnn[7].weight]
    expected = math.log(nuclear_capacity(convs))  # one group: no mixer reported
    assert report.scores["weight_spectrum"] == pytest.approx(expected, rel=1e-9)


def test_each_proxy_needs_its_own_kind_of_record():
    ffn_only = seeded(lambda: HandNet(()))
    for name in ATTENTION_PROXIES:
        with pytest.raises(NotApplicable, match="reports no"):
            P.score_proxy(name, ffn_only, inputs())
    assert P.score_proxy("pca_count", ffn_only, inputs()) > 0
    fourier = seeded(lambda: HandNet(("fourier",)))
    assert P.score_proxy("head_confidence", fourier, inputs()) > 0  # MIXER counts
    with pytest.raises(NotApplicable, match="attention probabilities"):
        P.score_proxy("softmax_confidence", fourier, inputs())
    no_ffn = seeded(lambda: HandNet(("attention",), ffn=False))
    assert P.score_proxy("softmax_confidence", no_ffn, inputs()) > 0
    for name in ("pca_count", "wpca"):
        with pytest.raises(NotApplicable, match="feed-forward"):
            P.score_proxy(name, no_ffn, inputs())


# -------------------------------------------------------------------- W-PCA
def test_pca_components_counts_the_explained_variance():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    u, _ = torch.linalg.qr(z - z.mean(dim=0))  # orthonormal, centred columns
    var = torch.tensor([50.0, 30.0, 15.0, 4.5, 0.5], dtype=torch.float64)
    mix, _ = torch.linalg.qr(torch.randn(7, 7, generator=gen, dtype=torch.float64))
    x = (u * var.sqrt()) @ mix[:5]  # (40, 7): variances 50, 30, 15, 4.5, 0.5 (sum 100)
    assert [pca_components(x, eta) for eta in (0.4, 0.8, 0.9, 0.99, 1.0)] == [1, 2, 3, 4, 5]
    assert pca_components(torch.ones(10, 3)) == 0


@pytest.mark.parametrize("rank", [1, 2, 3, 5])
def test_pca_count_of_a_rank_r_ffn_is_r(rank):
    f = 12

    def build() -> nn.Module:
        net = HandNet((), d=D_IN, f=f)
        net.embed = nn.Identity()
        ffn = net.ffns[0]
        ffn.act = nn.Identity()
        q, _ = torch.linalg.qr(torch.randn(f, rank))
        with torch.no_grad():  # hidden = x[..., :r] Qᵀ: rank r, variance spread over r
            ffn.fc1.weight.zero_()
            ffn.fc1.weight[:, :rank] = q
            ffn.fc1.bias.zero_()
        return net

    model = seeded(build)
    assert P.score_proxy("pca_count", model, inputs(batch=8)) == rank
    params = sum(p.numel() for p in model.parameters())
    assert P.score_proxy("wpca", model, inputs(batch=8)) == params * rank


def test_wpca_grows_with_width():
    nets = [seeded(lambda h=h: ElasticNet(h)) for h in (4, 8, 16)]
    values = [P.score_proxy("wpca", net, inputs()) for net in nets]
    assert values[0] < values[1] < values[2]
    model = seeded(ElasticNet)
    params = P.score_proxy("params", model, inputs())
    assert P.score_proxy("wpca", model, inputs()) == params * P.score_proxy(
        "pca_count", model, inputs()
    )
