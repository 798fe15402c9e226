"""AZ-NAS's proxies (closed-form pieces, blocks, identity handling) and the DE-Score's
log-rank aggregation, DE-NAS reference formula and component remapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

import hwnas.proxies as P
from hwnas.proxies import aznas
from hwnas.spaces.nb201 import build_nb201, str_to_arch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_isotropy_entropy_of_known_covariances():
    iso = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # cov diag(.5, .5)
    assert aznas.isotropy_entropy(iso) == pytest.approx(math.log(2), abs=1e-6)
    flat = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # rank one: a single direction
    assert aznas.isotropy_entropy(flat) == pytest.approx(0.0, abs=1e-6)
    # (B, C, H, W) maps read every position as a sample of C channels
    fmap = iso.T.reshape(1, 2, 2, 2)
    assert aznas.isotropy_entropy(fmap) == pytest.approx(math.log(2), abs=1e-6)
    assert math.isnan(aznas.isotropy_entropy(torch.ones(4, 3)))  # dead features


def test_block_trainability_closed_form_and_identity():
    gen = torch.Generator().manual_seed(0)
    f_in = torch.randn(64, 1, requires_grad=True)
    # one channel: the cross-covariance is 2 * mean(g^2) = 2 exactly, so sigma = 2
    assert aznas.block_trainability(f_in, 2.0 * f_in, gen) == pytest.approx(-0.5, abs=1e-5)
    assert aznas.block_trainability(f_in, f_in * 1.0, gen) == -math.inf
    # a stride-2 block: the input gradient is pixel-unshuffled onto the output grid
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert math.isfinite(aznas.block_trainability(x, nn.functional.avg_pool2d(x, 2), gen))


class Chain(nn.Module):
    """Three linear blocks named by proxy_blocks(); the head is not a block."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 4), nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def proxy_blocks(self) -> list[nn.Module]:
        return [self.a, self.b, self.c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x)))))))


def test_expressivity_and_progressivity_from_the_block_features():
    model, inputs = Chain(), P.gaussian_inputs((6,), 32, 3, seed=0)
    got = P.score_proxies(list(aznas.NAMES), model, inputs, seed=4)
    # recompute by hand: same init draws, features = input of a, outputs of a, b, c
    work = Chain()
    aznas.kaiming_init_(work, torch.Generator().manual_seed(4))
    x = inputs.x
    feats = [x, work.a(x)]
    feats.append(work.b(torch.relu(feats[-1])))
    feats.append(work.c(torch.relu(feats[-1])))
    ent = [aznas.isotropy_entropy(f) for f in feats]
    assert got["az_expressivity"] == pytest.approx(sum(ent))
    assert got["az_progressivity"] == pytest.approx(min(np.diff(ent)))
    assert -1e9 < got["az_trainability"] <= 0.0
    # Kaiming normal, fan-in: weight std sqrt(2 / fan_in), biases zero
    big = nn.Linear(400, 300)
    aznas.kaiming_init_(big, torch.Generator().manual_seed(0))
    assert float(big.weight.std()) == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert not big.bias.any()


def test_blocks_found_in_nb201_and_transformers():
    net = build_nb201(str_to_arch("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
                                  "|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"),
                      C=4, N=1, seed=0)  # fmt: skip
    assert aznas.feature_blocks(net) == list(net.cells)  # 3 cells + 2 reductions
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 3,
                                enable_nested_tensor=False)  # fmt: skip
    assert aznas.feature_blocks(enc) == list(enc.layers)
    with pytest.raises(ValueError, match="proxy_blocks"):
        aznas.feature_blocks(nn.Linear(3, 3))


def test_identity_cell_fails_trainability_only_and_ranks_last():
    identity = str_to_arch("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    net = build_nb201(identity, C=4, N=1, seed=0)
    inputs = P.gaussian_inputs((3, 16, 16), 4, 10, seed=0)
    report = P.score_proxies_report(list(aznas.NAMES), net, inputs)
    assert set(report.failures) == {"az_trainability"}
    assert "non-finite" in report.failures["az_trainability"]
    assert set(report.scores) == {"az_expressivity", "az_progressivity"}
    with pytest.raises(FloatingPointError):
        P.score_proxies(list(aznas.NAMES), net, inputs)


# ------------------------------------------------------------------------ DE-Score
def test_logrank_is_azs_aggregation():
    raws = [{"expressivity": 1.0, "complexity": 50.0}, {"expressivity": 3.0, "complexity": 5.0},
            {"expressivity": 2.0, "complexity": float("nan")}]  # fmt: skip
    ds = P.DEScore({"expressivity": 1.0, "complexity": 2.0}, normalize="logrank")
    # expressivity ranks 1, 3, 2 of 3; complexity (ntk: lower better, NaN worst) 2, 3, 1
    want = np.log([1 / 3, 1.0, 2 / 3]) + 2 * np.log([2 / 3, 1.0, 1 / 3])
    assert np.allclose(ds.combine(raws), want)
    # against a fixed reference: log((1 + #beaten) / (1 + #reference))
    ref = [{"expressivity": v, "complexity": 1.0} for v in (0.0, 2.0, 4.0)]
    one = P.DEScore({"expressivity": 1.0}, normalize="logrank")
    assert np.allclose(one.combine_against(ref, raws[:2]), np.log([2 / 4, 3 / 4]))


def test_denas_reference_formula_on_hand_set_values():
    raw = {"expressivity": 6.0, "complexity": 2.0, "diversity": 5.0, "saliency": 3.0,
           "latency": 4.0}  # fmt: skip
    w = {"expressivity": 2.0, "complexity": 0.5, "diversity": 3.0, "saliency": 4.0,
         "latency": 0.25}  # fmt: skip
    cnn = P.DEScore(w, normalize="reference_cnn").combine([raw, raw])
    want = (6 * 2 / (3 * 4) - 2 * 0.5 + 5 * 3) / (1 + 4 * 0.25)
    assert np.allclose(cnn, want)  # raw values: a candidate's score ignores the others
    tfm = P.DEScore(w, normalize="reference_transformer").combine([raw])
    assert np.allclose(tfm, (6 * 2 + 2 * 0.5 + 5 * 3 + 3 * 4) / (1 + 4 * 0.25))
    bad = P.DEScore.denas_reference().combine([dict(raw, saliency=0.0), raw])
    assert bad[0] == -np.inf and np.isfinite(bad[1])  # division by zero ranks worst
    no_lat = P.DEScore.denas_reference().combine([raw], drop=("latency",))
    assert np.allclose(no_lat, 6 / 3 - 2 + 5)


def test_component_remap_takes_the_proxys_sign():
    ds = P.DEScore({"complexity": 1.0}, normalize="rank", proxies={"complexity": "flops"})
    assert ds.proxies() == ["flops"] and ds.terms == {"complexity": (1.0, 1.0)}
    raws = [{"complexity": 1.0}, {"complexity": 3.0}, {"complexity": 2.0}]
    assert np.allclose(ds.combine(raws), (rankdata([1.0, 3.0, 2.0]) - 1) / 2)
    assert P.DEScore.denas().terms["complexity"] == (1.0, -1.0)  # ntk: lower is better


def test_an_owned_model_saves_one_copy_and_scores_the_same(monkeypatch):
    from hwnas.proxies import base

    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    inputs = P.gaussian_inputs((6,), 8, 3, seed=0)
    names = ["az_expressivity", "az_trainability", "naswot", "params"]
    copies = []
    real = base.copy.deepcopy
    monkeypatch.setattr(base.copy, "deepcopy", lambda m: copies.append(1) or real(m))
    want = P.score_proxies(names, model, inputs, seed=2)
    shared = len(copies)  # one for the az pass, one per single proxy
    own = real(model)
    got = P.score_proxies(names, own, inputs, seed=2, owned=True)
    assert got == want and len(copies) - shared == shared - 1
