"""DE-Score against a frozen reference (what NSGA-II/TPE are told), and its config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwnas.proxies.descore import DEScore


def _raws(sal, lat=None):
    lat = lat if lat is not None else [1.0] * len(sal)
    return [{"saliency": s, "latency": t} for s, t in zip(sal, lat)]


REF = _raws([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])


def test_rank_against_is_the_fraction_of_the_reference_beaten():
    ds = DEScore({"saliency": 1.0})
    got = ds.combine_against(REF, _raws([2.5, 5.0, 2.0, 0.0, math.nan]))
    assert got.tolist() == [0.5, 1.0, 0.375, 0.0, 0.0]
    assert ds.combine_against([], _raws([7.0])).tolist() == [0.5]


@pytest.mark.parametrize("normalize", ["rank", "zlog"])
def test_a_candidates_score_ignores_the_other_candidates(normalize):
    ds = DEScore({"saliency": 1.0, "latency": 1.0}, normalize=normalize)
    alone = ds.combine_against(REF, _raws([2.5], [1.5]))[0]
    crowd = ds.combine_against(REF, _raws([2.5, 100.0, -3.0, 9.0], [1.5, 0.1, 9.0, 2.0]))
    assert crowd[0] == alone
    # whereas combine() normalises among the candidates: the crowd moves the score
    assert ds.combine(_raws([2.5, 100.0], [1.5, 0.1]))[0] != ds.combine(_raws([2.5], [1.5]))[0]


def test_zlog_against_uses_the_references_mean_and_std():
    ds = DEScore({"saliency": 1.0}, normalize="zlog")
    t = np.log1p(np.array([1.0, 2.0, 3.0, 4.0]))
    mid = math.expm1(t.mean())
    assert ds.combine_against(REF, _raws([mid]))[0] == pytest.approx(0.0, abs=1e-12)
    one_up = math.expm1(t.mean() + t.std())
    assert ds.combine_against(REF, _raws([one_up]))[0] == pytest.approx(1.0)
    lowest = (t.min() - t.mean()) / t.std()
    assert ds.combine_against(REF, _raws([math.inf]))[0] == pytest.approx(lowest - 1.0)


def test_drop_leaves_a_term_out_but_keeps_the_latency_limit():
    ds = DEScore({"saliency": 1.0, "latency": 1.0}, latency_limit_ms=3.5)
    cand = _raws([2.5, 2.5, 2.5], [1.0, 3.0, 9.0])
    full = ds.combine_against(REF, cand)
    no_lat = ds.combine_against(REF, cand, drop=("latency",))
    assert full[0] > full[1] and no_lat[0] == no_lat[1]  # latency no longer counts ...
    assert full[2] == no_lat[2] == -math.inf  # ... but the limit still does
    # the reference member over the limit (latency 4.0) is left out of the reference
    assert no_lat[0] == pytest.approx(DEScore({"saliency": 1.0}).combine_against(
        REF[1:], cand[:1])[0])  # fmt: skip
    assert ds.combine(cand, drop=("latency",))[0] == ds.combine(cand, drop=("latency",))[1]
    with pytest.raises(ValueError, match="drop"):
        ds.combine(cand, drop=("speed",))


def test_from_config_rejects_unknown_keys_listing_the_valid_ones():
    cfg = {"weights": {"saliency": 1.0}, "normalise": "rank"}
    with pytest.raises(ValueError, match=r"unknown DE-Score config keys \['normalise'\]") as e:
        DEScore.from_config(cfg)
    for key in ("weights", "normalize", "extra", "latency_penalty", "latency_limit_ms"):
        assert key in str(e.value)
    ok = DEScore.from_config({"weights": {"saliency": 1.0}, "normalize": "zlog"})
    assert ok.normalize == "zlog"


def test_a_failing_proxy_ranks_its_candidates_last_and_the_search_goes_on():
    """One proxy raising for some candidates must not abort the zero-shot search: those
    candidates are NaN on its term (ranked last there) and the failures are counted."""
    import random

    from hwnas.proxies import gaussian_inputs
    from hwnas.proxies.base import PROXIES, register_proxy
    from hwnas.search.objectives import ZeroShotObjective
    from tests.conftest import tiny_cnn

    @register_proxy("test_flaky_params")
    def flaky(model, inputs, gen):  # fails on the larger networks
        n = sum(p.numel() for p in model.parameters())
        if n > 3000:
            raise RuntimeError("flaky proxy failure")
        return float(n)

    try:
        model = tiny_cnn()
        descore = DEScore({"saliency": 1.0}, "rank", {"test_flaky_params": 1.0})
        inputs = gaussian_inputs((1, 16, 16), 4, 10, seed=0)
        objective = ZeroShotObjective(model, descore, inputs, seed=0)
        rng = random.Random(0)
        archs = list(dict.fromkeys(model.space.sample(rng) for _ in range(8)))
        archs += [model.space.max_arch(), model.space.min_arch()]
        raws = objective.measure(archs)
        failed = [math.isnan(r["test_flaky_params"]) for r in raws]
        assert any(failed) and not all(failed)
        assert objective.failures["test_flaky_params"] == sum(failed)
        ranks = DEScore({"saliency": 0.0}, "rank", {"test_flaky_params": 1.0}).combine(raws)
        assert max(ranks[np.array(failed)]) < min(ranks[~np.array(failed)])
        with pytest.raises(RuntimeError, match="flaky"):  # strict without a failures dict
            descore.components(model.export(model.space.max_arch()), inputs)
    finally:
        PROXIES.entries.pop("test_flaky_params", None)


def test_zero_shot_takes_flops_from_the_cost_model_and_they_equal_the_proxy():
    """The objective does not count FLOPs again: the cost model's flops_m is the same
    count as the ``flops`` proxy on the proxy module, for the CNN, the ViT and BERT."""
    import random
    from pathlib import Path

    from hwnas.domains.qa.models.hf import bert_from_pretrained
    from hwnas.proxies import gaussian_inputs
    from hwnas.proxies.base import score_proxy
    from hwnas.search.objectives import ZeroShotObjective
    from tests.conftest import tiny_cnn
    from tests.test_vit import tiny_vit

    bert = Path(__file__).parent / "fixtures" / "squad" / "tiny_bert"
    models = [tiny_cnn(), tiny_vit(), bert_from_pretrained(str(bert), max_seq_length=16)]
    rng = random.Random(0)
    for model in models:
        inputs = gaussian_inputs(model.proxy_shape or model.input_shape, 2, 2, seed=0)
        for arch in (model.space.max_arch(), model.space.min_arch(), model.space.sample(rng)):
            sub = model.proxy_module(model.export(arch))
            flops = model.cost_of(arch)["flops_m"] * 1e6
            assert score_proxy("flops", sub, inputs) == pytest.approx(flops, rel=1e-9)
    # the objective's complexity term is the cost model's count, not a re-count
    model = models[0]
    fake = {"flops_m": 1.25, "latency_ms": 2.0, "params_m": 0.1}
    objective = ZeroShotObjective(model, DEScore.default(), gaussian_inputs((1, 16, 16), 4, 10, 0),
                                  lambda arch: dict(fake), seed=0)  # fmt: skip
    (raw,) = objective.measure([model.space.max_arch()])
    assert raw["complexity"] == 1.25e6 and raw["latency"] == 2.0
