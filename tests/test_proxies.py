"""Every registered proxy on a tiny CNN and a tiny transformer, closed-form checks of
the definitions, shared passes, inputs and the DE-Score combination."""

from __future__ import annotations

import copy
import math
import traceback

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy.stats import rankdata
from torch import nn

import hwnas.proxies as P
from hwnas.app.config import CONFIG_DIR
from hwnas.domains.image.models.vit import ElasticViT
from hwnas.proxies.common import prepare
from hwnas.proxies.ntk import ntk_gram
from hwnas.spaces.nb201 import build_nb201

CONF = CONFIG_DIR / "proxy"


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Dropout(0.2),
        )  # fmt: skip
        self.head = nn.Linear(8, 5)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, 8, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))  # (B, 5)


class TinyTransformer(nn.Module):
    """Linear embedding, two pre-norm encoder layers (MultiheadAttention, GELU MLP,
    LayerNorm, dropout), mean pooling, linear head; input (B, T, 8)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d)
        layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(self.embed(x))).mean(dim=1))  # (B, 5)


MODELS = {"cnn": (TinyCNN, (3, 8, 8)), "transformer": (TinyTransformer, (6, 8))}
# proxies that read hwnas.core.probe records (tests/test_transformer_proxies.py scores
# them on models that report); these two models report nothing
PROBED = ("head_confidence", "softmax_confidence", "head_importance", "pca_count", "wpca")


def make(kind: str, seed: int = 0) -> tuple[nn.Module, P.ProxyInputs]:
    cls, shape = MODELS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls()
    return model, P.gaussian_inputs(shape, 6, 5, seed=seed)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", P.list_proxies())
@pytest.mark.parametrize("training", [True, False])
def test_every_proxy_finite_deterministic_and_on_a_copy(name, kind, training):
    model, inputs = make(kind)
    model.train(training)
    model.head.bias.requires_grad_(False)  # a frozen tensor must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    rng = torch.random.get_rng_state()
    if name in PROBED:  # neither model reports through hwnas.core.probe: says so, no crash
        with pytest.raises(P.NotApplicable, match="hwnas.core.probe"):
            P.score_proxy(name, model, inputs, seed=3)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return
    a = P.score_proxy(name, model, inputs, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng)  # global RNG untouched
    b = P.score_proxy(name, model, inputs, seed=3)
    assert math.isfinite(a) and a == b
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training is training and all(m.training is training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_shared_passes_equal_single_proxies(kind):
    model, inputs = make(kind)
    names = P.list_proxies()
    report = P.score_proxies_report(names, model, inputs, seed=1)
    assert set(report.failures) == set(PROBED)  # no probe records: not applicable
    assert all(msg.startswith("NotApplicable") for msg in report.failures.values())
    assert list(report.scores) == [n for n in names if n not in PROBED]
    assert set(report.seconds) == set(names)
    for name in report.scores:
        assert report.scores[name] == P.score_proxy(name, model, inputs, seed=1), name
    assert P.score_proxies(["snip", "nuclear_diversity"], model, inputs, 1) == {
        k: report.scores[k] for k in ("snip", "nuclear_diversity")
    }


def test_seed_changes_the_random_parts():
    model, inputs = make("cnn")
    for name in ("zen", "snip", "grad_norm"):  # zen redraws weights, snip/grad_norm labels
        assert P.score_proxy(name, model, inputs, 0) != P.score_proxy(name, model, inputs, 1)


# ------------------------------------------------------------ closed-form checks
def mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False))


def test_params_and_flops():
    model, inputs = mlp(), P.gaussian_inputs((4,), 5, 3, 0)
    assert P.score_proxy("params", model, inputs) == 4 * 16 + 16 * 3
    assert P.score_proxy("flops", model, inputs) == 2 * (4 * 16 + 16 * 3)  # one sample


def test_flops_counts_attention_matrices_of_an_exported_vit():
    # FlopCounterMode has no formula for the fused CPU attention kernel; the proxy must
    # still count QKᵀ and AV, so it equals the ViT's analytic count (per sample).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit = ElasticViT(
            patch_size=7, embed_choices=(16, 32), depth_choices=(1, 2), max_depth=2,
            head_choices=(1, 2), head_dim=8, mlp_ratio_choices=(1, 2),
        )  # fmt: skip
    inputs = P.gaussian_inputs(vit.input_shape, 3, 10, 0)
    for arch in (vit.space.max_arch(), vit.space.min_arch()):
        with vit.active(arch):
            analytic = vit.active_flops(1)
        assert analytic == round(vit.cost_of(arch)["flops_m"] * 1e6)  # QKᵀ, AV included
        assert P.score_proxy("flops", vit.export(arch), inputs) == analytic


def test_synflow_equals_depth_times_r():
    # Bias-free ReLU net with |W|: positive signals, so R is linear in each layer's
    # weights and Σ W ⊙ ∂R/∂W = R per layer (Euler); two layers give 2R.
    model = mlp()
    w1, w2 = model[0].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    r = float((w2 @ w1 @ torch.ones(4, dtype=torch.float64)).sum())
    inputs = P.gaussian_inputs((4,), 5, 3, 0)
    assert P.score_proxy("synflow", model, inputs) == pytest.approx(2 * r, rel=1e-12)
    assert P.score_proxy("synflow_log", model, inputs) == pytest.approx(math.log(2 * r))


def test_naswot_is_logdet_of_hamming_kernel():
    model, inputs = mlp(), P.gaussian_inputs((4,), 5, 3, 0)
    with torch.no_grad():
        c = (model[0](inputs.x) > 0).double()  # (B, 16): codes of the one ReLU
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    expect = float(torch.linalg.slogdet(kernel).logabsdet)
    assert P.score_proxy("naswot", model, inputs) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="ReLU"):
        P.score_proxy("naswot", nn.Linear(4, 3), inputs)


def test_jacob_cov_matches_its_definition():
    model, inputs = mlp(), P.gaussian_inputs((4,), 5, 3, 0)
    x = inputs.x.clone().requires_grad_(True)
    model(x).sum().backward()
    v = np.linalg.eigvalsh(np.corrcoef(x.grad.double().numpy())).clip(0)
    expect = -np.sum(np.log(v + 1e-5) + 1 / (v + 1e-5))
    assert P.score_proxy("jacob_cov", model, inputs) == pytest.approx(expect, rel=1e-9)


def test_gradient_proxies_match_definitions():
    model, inputs = mlp(), P.gaussian_inputs((4,), 5, 3, 0)
    inputs.y = torch.tensor([0, 1, 2, 1, 0])
    ref = mlp()
    h = ref[0](inputs.x)
    h.retain_grad()
    out = ref[2](F.relu(h))
    out.retain_grad()
    loss = F.cross_entropy(out, inputs.y)
    loss.backward()
    ws = [ref[0].weight, ref[2].weight]
    snip = sum(float((w.grad * w).abs().sum()) for w in ws)
    norm = sum(float(w.grad.norm()) for w in ws)
    # per output channel 0.5·mean_b(a·∂L/∂a)², counted once per weight of the channel
    fisher = sum(0.5 * w.shape[1] * float((a * a.grad).pow(2).mean(0).sum())
                 for a, w in ((h, ws[0]), (out, ws[1])))  # fmt: skip
    nuc = torch.linalg.matrix_norm
    nuclear_diversity = sum(float(nuc(w.grad, ord="nuc") * nuc(w, ord="nuc")) for w in ws)
    got = P.score_proxies(["snip", "grad_norm", "fisher", "nuclear_diversity"], model, inputs)
    assert got == pytest.approx(
        {"snip": snip, "grad_norm": norm, "fisher": fisher, "nuclear_diversity": nuclear_diversity}
    )
    # GraSP: -Σ W ⊙ (H g), H g by differentiating g·stop_grad(g).
    grads = torch.autograd.grad(F.cross_entropy(ref(inputs.x), inputs.y), ws, create_graph=True)
    hg = torch.autograd.grad(sum((g.detach() * g).sum() for g in grads), ws)
    grasp = -sum(float((w * h).sum()) for w, h in zip(ws, hg))
    assert P.score_proxy("grasp", model, inputs) == pytest.approx(grasp, rel=1e-5)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_ntk_fast_path_equals_per_sample_loop(kind):
    model, inputs = make(kind)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    fast = ntk_gram(a, prepare(a, inputs), fast=True)
    loop = ntk_gram(b, prepare(b, inputs), fast=False)
    assert torch.allclose(fast, loop, rtol=1e-4, atol=1e-6 * float(loop.abs().max()))
    eig = torch.linalg.eigvalsh(loop)
    cond = P.score_proxy("ntk", model, inputs)
    assert cond == pytest.approx(float(eig[-1] / eig[0]), rel=1e-3)


def test_zen_skips_dead_bn_and_fails_clearly_on_dead_nets():
    inputs = P.gaussian_inputs((3, 32, 32), 4, 10, 0)
    dead_branch = "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|"
    assert math.isfinite(P.score_proxy("zen", build_nb201(dead_branch, C=4, N=1, seed=0), inputs))
    dead = build_nb201("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", C=4, N=1, seed=0)
    for name, match in (("zen", "do not depend on the input"), ("jacob_cov", "constant")):
        with pytest.raises((ValueError, FloatingPointError), match=match):
            P.score_proxy(name, dead, inputs)
    report = P.score_proxies_report(["zen", "params"], dead, inputs)
    assert set(report.failures) == {"zen"} and report.scores["params"] > 0


def test_bad_inputs_fail_clearly():
    model, inputs = make("cnn")
    with pytest.raises(KeyError, match="registered proxies"):
        P.score_proxy("no_such_proxy", model, inputs)
    too_many = P.ProxyInputs(inputs.x, None, num_classes=50)
    with pytest.raises(ValueError, match="num_classes"):
        P.score_proxy("snip", model, too_many)
    with pytest.raises(ValueError, match="batch_size"):
        P.gaussian_inputs((3, 8, 8), 0, 5, 0)
    tokens = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.ReLU(), nn.Linear(12, 5))
    ids = P.ProxyInputs(torch.randint(0, 10, (4, 3), generator=torch.Generator()), None, 5)
    for name in ("zen", "synflow"):
        with pytest.raises(ValueError, match="float"):
            P.score_proxy(name, tokens, ids)
    assert math.isfinite(P.score_proxy("snip", tokens, ids))  # gradients need no float input


def test_inputs_gaussian_and_datamodule():
    a, b = P.gaussian_inputs((3, 4, 4), 2, 10, 7), P.gaussian_inputs((3, 4, 4), 2, 10, 7)
    assert torch.equal(a.x, b.x) and a.y is None and a.x.shape == (2, 3, 4, 4)
    cfg = {"name": "synthetic", "data_dir": "unused", "shape": [3, 8, 8], "num_classes": 4,
           "train_size": 16, "val_size": 4, "test_size": 4}  # fmt: skip
    inputs = P.datamodule_inputs(cfg, 6, seed=0)
    again = P.datamodule_inputs(cfg, 6, seed=0)
    assert inputs.x.shape == (6, 3, 8, 8) and inputs.num_classes == 4
    assert torch.equal(inputs.x, again.x) and torch.equal(inputs.y, again.y)


# ------------------------------------------------------------------------ DE-Score
def test_descore_rank_and_zlog():
    raws = [{"expressivity": 1.0, "complexity": 50.0}, {"expressivity": 3.0, "complexity": 5.0},
            {"expressivity": 2.0, "complexity": float("nan")}]  # fmt: skip
    rank = P.DEScore({"expressivity": 2.0, "complexity": 1.0}).combine(raws)
    # expressivity ranks 0, 1, 0.5 (x2); complexity (lower better, NaN worst) 0.5, 1, 0
    assert np.allclose(rank, [0.5, 3.0, 1.0])
    z = P.DEScore({"expressivity": 1.0}, normalize="zlog").combine(raws)
    t = np.log1p([1.0, 3.0, 2.0])
    assert np.allclose(z, (t - t.mean()) / t.std())
    one = P.DEScore({"expressivity": 1.0}).combine(raws[:1])
    assert np.allclose(one, 0.5)


def test_descore_latency_penalty_and_limit():
    raws = [{"saliency": s, "latency": t} for s, t in ((1.0, 1.0), (2.0, 9.0), (3.0, 4.0))]
    pen = P.DEScore({"saliency": 1.0, "latency": 1.0}).combine(raws)
    sal = rankdata([1.0, 2.0, 3.0]) - 1
    assert np.allclose(pen, sal / 2 + (rankdata([-1.0, -9.0, -4.0]) - 1) / 2)
    capped = P.DEScore({"saliency": 1.0}, latency_limit_ms=5.0).combine(raws)
    assert capped[1] == -np.inf and capped[2] > capped[0]
    no_pen = P.DEScore({"saliency": 1.0, "latency": 1.0}, latency_penalty=False)
    assert "latency" not in no_pen.terms and not no_pen.needs_latency


def test_descore_components_and_population():
    models = [make("cnn", seed)[0] for seed in (0, 1, 2)]
    inputs = make("cnn")[1]
    ds = P.DEScore.default()
    with pytest.raises(ValueError, match="latency_ms"):
        ds.components(models[0], inputs)
    raws = [ds.components(m, inputs, 0, latency_ms=float(i)) for i, m in enumerate(models)]
    keys = {"expressivity", "complexity", "latency", "az_progressivity", "az_trainability",
            "naswot"}  # fmt: skip
    # a CNN reports no attention or FFN: its raws lack the transformer terms
    assert set(raws[0]) == keys and {"softmax_confidence", "wpca"} <= set(ds.terms)
    assert raws[0]["complexity"] == P.score_proxy("flops", models[0], inputs, 0)
    assert raws[0]["expressivity"] == P.score_proxy("az_expressivity", models[0], inputs, 0)
    five = P.DEScore.denas()
    assert five.components(models[0], inputs, 0, 1.0)["complexity"] == P.score_proxy(
        "ntk", models[0], inputs, 0
    )
    scores = ds.score_population(models, inputs, 0, latencies_ms=[0.0, 1.0, 2.0])
    assert np.allclose(scores, ds.combine(raws))


def test_descore_configs_and_errors():
    shipped = P.DEScore.from_config(yaml.safe_load((CONF / "descore.yaml").read_text()))
    assert repr(shipped) == repr(P.DEScore.default())
    assert shipped.proxies() == ["az_expressivity", "flops", "az_progressivity",
                                 "az_trainability", "naswot", "softmax_confidence",
                                 "wpca"]  # fmt: skip
    five = P.DEScore.from_config(yaml.safe_load((CONF / "denas_rank.yaml").read_text()))
    assert repr(five) == repr(P.DEScore.denas()) and five.extra == {}
    assert five.proxies() == ["zen", "ntk", "nuclear_diversity", "synflow"]
    ref = P.DEScore.from_config(yaml.safe_load((CONF / "denas_reference.yaml").read_text()))
    assert repr(ref) == repr(P.DEScore.denas_reference("cnn"))
    for kwargs, match in (
        ({"weights": {"speed": 1.0}}, "unknown DE-Score components"),
        ({"weights": {"saliency": -1.0}}, ">= 0"),
        ({"weights": {"saliency": 0.0}}, "no non-zero weight"),
        ({"weights": {"saliency": 1.0}, "normalize": "minmax"}, "choose one of"),
        ({"weights": {"saliency": 1.0}, "extra": {"nope": 1.0}}, "registered proxies"),
        ({"weights": {"saliency": 1.0}, "proxies": {"latency": "flops"}}, "proxy-backed"),
        ({"weights": {"saliency": 1.0}, "proxies": {"saliency": "nope"}}, "registered"),
        ({"weights": {"saliency": 1.0}, "normalize": "reference_cnn"}, "divides"),
        (
            {
                "weights": {"saliency": 1.0},
                "extra": {"params": 1.0},
                "normalize": "reference_transformer",
            },
            "no extra",
        ),
    ):
        with pytest.raises((ValueError, KeyError), match=match):
            P.DEScore(**kwargs)
    with pytest.raises(ValueError, match="'weights'"):
        P.DEScore.from_config({"normalize": "rank"})


class _ProxyBroke(RuntimeError):
    pass


def test_score_proxies_raises_the_first_runs_error_without_rerunning(monkeypatch):
    from hwnas.proxies import base as proxy_base

    calls: list[int] = []

    def broken(model, inputs, gen):
        calls.append(1)
        raise _ProxyBroke(f"call {len(calls)}")

    proxy = proxy_base.Proxy("test_broken", broken, True, "")
    monkeypatch.setitem(proxy_base.PROXIES.entries, proxy.name, proxy)
    model, inputs = make("cnn")
    with pytest.raises(_ProxyBroke, match="call 1") as err:
        P.score_proxies(["params", "test_broken", "snip"], model, inputs)
    assert calls == [1]  # not scored again just to re-raise
    frames = [f.name for f in traceback.extract_tb(err.value.__traceback__)]
    assert "broken" in frames  # the original traceback, down to the proxy's own frame
    assert any("test_broken" in note for note in err.value.__notes__)
    report = P.score_proxies_report(["test_broken", "params"], model, inputs)
    assert report.failures == {"test_broken": "_ProxyBroke: call 2"} and "params" in report.scores
