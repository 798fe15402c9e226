"""One DE-Score for every domain: a term whose proxy does not apply to a network (the
network's own layers report nothing it measures) is left out of that network's sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hwnas.proxies as P
from hwnas.proxies.descore import DEScore

BASE = {"weights": {"expressivity": 1.0, "complexity": 1.0}, "normalize": "logrank",
        "proxies": {"expressivity": "az_expressivity", "complexity": "flops"},
        "extra": {"naswot": 1.0}}  # fmt: skip


def with_term(name: str, normalize: str = "logrank") -> DEScore:
    conf = {**BASE, "normalize": normalize, "extra": {**BASE["extra"], name: 1.0}}
    return DEScore.from_config(conf)


@pytest.mark.parametrize("normalize", ["logrank", "rank", "zlog"])
def test_a_term_no_network_has_is_left_out(normalize):
    rng = np.random.default_rng(0)
    raws = [{"expressivity": a, "complexity": b, "naswot": c}
            for a, b, c in rng.normal(size=(9, 3))]  # fmt: skip
    without = DEScore.from_config({**BASE, "normalize": normalize}).combine(raws)
    na = [dict(r, softmax_confidence=None) for r in raws]
    assert np.allclose(with_term("softmax_confidence", normalize).combine(na), without)
    assert np.allclose(with_term("softmax_confidence", normalize).combine(raws), without)
    # against a reference population as well
    ref = DEScore.from_config({**BASE, "normalize": normalize}).combine_against(raws, raws)
    assert np.allclose(with_term("softmax_confidence", normalize).combine_against(na, na), ref)


def test_a_network_without_the_term_gets_the_others_mean():
    raws = [{"expressivity": float(i), "complexity": float(i), "naswot": float(i),
             "softmax_confidence": float(i)} for i in range(1, 5)]  # fmt: skip
    raws.append({"expressivity": 0.0, "complexity": 0.0, "naswot": 0.0,
                 "softmax_confidence": None})  # fmt: skip
    score = with_term("softmax_confidence", "rank").combine(raws)
    base = DEScore.from_config({**BASE, "normalize": "rank"}).combine(raws)
    term = np.array([0.0, 1 / 3, 2 / 3, 1.0])  # ranks of 1..4 among the four that have it
    assert np.allclose(score[:4] - base[:4], term)
    assert score[4] - base[4] == pytest.approx(term.mean())  # neither reward nor penalty
    nan = [dict(r) for r in raws]
    nan[4]["softmax_confidence"] = float("nan")  # a failure ranks last instead
    assert with_term("softmax_confidence", "rank").combine(nan)[4] < score[4]


def test_components_of_a_cnn_mark_transformer_terms_not_applicable():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 5))  # fmt: skip
    inputs = P.gaussian_inputs((3, 8, 8), 4, 5, seed=0)
    score = DEScore.from_config({"weights": {"complexity": 1.0}, "proxies": {"complexity": "flops"},
                                 "extra": {"softmax_confidence": 1.0, "params": 1.0}})  # fmt: skip
    raw = score.components(cnn, inputs, seed=0)  # strict: does not raise for the term
    assert "softmax_confidence" not in raw and raw["params"] > 0  # absent: not applicable
    failures: dict[str, str] = {}
    assert score.components(cnn, inputs, seed=0, failures=failures) == raw
    assert failures == {}  # not applicable is not a failure (no proxy_failures count)
    with pytest.raises(P.NotApplicable):  # asked for alone, the proxy still says so
        P.score_proxies(["softmax_confidence"], cnn, inputs)


def test_a_cnn_pays_one_forward_for_the_transformer_terms():
    calls = []

    class Counted(nn.Sequential):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    torch.manual_seed(0)
    cnn = Counted(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5))
    inputs = P.gaussian_inputs((3, 8, 8), 4, 5, seed=0)
    report = P.score_proxies_report(["softmax_confidence", "wpca"], cnn, inputs, seed=0)
    assert report.not_applicable == {"softmax_confidence", "wpca"} and not report.scores
    assert len(calls) == 1  # the shared pass says "not applicable" for both at once


def test_a_network_that_declares_no_probe_records_costs_no_forward():
    from hwnas.core.types import Network

    calls = []

    class DeclaredCNN(Network):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(256, 5))  # fmt: skip

        def probe_kinds(self):
            return frozenset()

        def forward(self, x):
            calls.append(1)
            return self.body(x)

    inputs = P.gaussian_inputs((3, 8, 8), 4, 5, seed=0)
    report = P.score_proxies_report(["softmax_confidence", "wpca"], DeclaredCNN(), inputs)
    assert report.not_applicable == {"softmax_confidence", "wpca"} and calls == []
    with pytest.raises(P.NotApplicable, match="hwnas.core.probe"):
        P.score_proxy("head_importance", DeclaredCNN(), inputs)
