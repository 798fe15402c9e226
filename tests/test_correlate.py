"""The proxy/accuracy correlation harness on a 15-row NAS-Bench-201 fixture."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from scipy import stats

import hwnas.proxies as proxy_lib
from hwnas.app.config import CONFIG_DIR
from hwnas.app.correlate import run_correlation
from hwnas.app.correlate_io import make_inputs, rank_correlation
from hwnas.data import build_datamodule
from hwnas.proxies import base as proxy_base

CONF = CONFIG_DIR
FIXTURE = Path(__file__).parent / "fixtures" / "nb201_small.csv"
CHEAP = ["params", "synflow", "naswot"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_cfg(out: Path, *overrides: str):
    base = [
        f"csv_path={FIXTURE}",
        "accuracy_column=val_accuracy",
        "+filter.dataset=cifar10",
        "nb201.C=4",
        "nb201.N=1",
        "batch_size=4",
        "bootstrap=30",
        "plots=false",
        "descore=false",
        f"proxies=[{','.join(CHEAP)}]",
        f"output_dir={out}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("correlate", overrides=[*base, *overrides])


@pytest.fixture
def counted(monkeypatch):
    """Count the real computations of the CHEAP proxies (registry entries wrapped)."""
    calls: list[str] = []
    for name in CHEAP:
        proxy = proxy_base.get_proxy(name)

        def fn(model, inputs, gen, _real=proxy.fn, _name=name):
            calls.append(_name)
            return _real(model, inputs, gen)

        monkeypatch.setitem(proxy_base.PROXIES.entries, name, dataclasses.replace(proxy, fn=fn))
    return calls


def test_statistics_match_scipy(tmp_path):
    metrics = run_correlation(make_cfg(tmp_path, "plots=true"))
    scores = pd.read_csv(tmp_path / "scores.csv")
    corr = pd.read_csv(tmp_path / "correlations.csv").set_index("proxy")
    assert len(scores) == 12 and list(corr.index) == CHEAP
    for name in CHEAP:
        rho = stats.spearmanr(scores[name], scores["accuracy"]).statistic
        tau = stats.kendalltau(scores[name], scores["accuracy"]).statistic
        assert corr.loc[name, "spearman"] == pytest.approx(rho, abs=1e-12)
        assert corr.loc[name, "kendall"] == pytest.approx(tau, abs=1e-12)
        assert corr.loc[name, "spearman_lo"] <= rho <= corr.loc[name, "spearman_hi"]
        assert corr.loc[name, "n"] == 12 and corr.loc[name, "failures"] == 0
        assert metrics[f"spearman/{name}"] == pytest.approx(rho)
        assert (tmp_path / f"scatter_{name}.png").stat().st_size > 0
    # The fixture's NASLib reference columns give an agreement table.
    agree = pd.read_csv(tmp_path / "agreement.csv").set_index("proxy")
    assert set(agree.index) == set(CHEAP)
    assert agree.loc["naswot", "reference"] == "nwot"
    table = pd.read_csv(FIXTURE).query("dataset == 'cifar10'")
    ref_rho = stats.spearmanr(table["synflow"], table["val_accuracy"]).statistic
    assert agree.loc["synflow", "reference_vs_accuracy"] == pytest.approx(ref_rho)
    assert "| naswot |" in (tmp_path / "correlations.md").read_text()


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=40), rng.normal(size=40)
    a, b = rank_correlation(x, y, 50, seed=3), rank_correlation(x, y, 50, seed=3)
    c = rank_correlation(x, y, 50, seed=4)
    assert a == b and a["spearman_lo"] != c["spearman_lo"]
    assert a["spearman_lo"] < a["spearman"] < a["spearman_hi"]


def test_resume_does_not_rescore(tmp_path, counted):
    run_correlation(make_cfg(tmp_path, "n=6"))
    assert len(counted) == 6 * len(CHEAP)
    first = pd.read_csv(tmp_path / "scores.csv")
    counted.clear()
    run_correlation(make_cfg(tmp_path, "n=12"))
    assert len(counted) == 6 * len(CHEAP)  # only the 6 new archs
    second = pd.read_csv(tmp_path / "scores.csv").set_index("arch")
    for name in CHEAP:  # resumed scores are reused unchanged
        assert np.allclose(second.loc[first["arch"], name].to_numpy(), first[name].to_numpy())
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len({json.loads(line)["arch"] for line in lines}) == 12
    # resume_from another run's journal: nothing left to score, journal copied over.
    counted.clear()
    other = tmp_path / "other"
    run_correlation(make_cfg(other, "n=12", f"resume_from={tmp_path}"))
    assert counted == [] and len((other / "scores.jsonl").read_text().splitlines()) == 12


def test_fresh_rerun_is_deterministic(tmp_path):
    run_correlation(make_cfg(tmp_path / "a", "n=5"))
    run_correlation(make_cfg(tmp_path / "b", "n=5"))
    a, b = (pd.read_csv(tmp_path / d / "scores.csv") for d in ("a", "b"))
    pd.testing.assert_frame_equal(a, b)


def test_failures_are_recorded_and_run_continues(tmp_path, monkeypatch):
    def fail_on_pool(model, inputs, gen):
        if "avg_pool_3x3" in model.arch_str:
            raise RuntimeError("injected failure")
        return float(inputs.x.shape[0])

    proxy = proxy_base.Proxy("test_fail_on_pool", fail_on_pool, True, "")
    monkeypatch.setitem(proxy_base.PROXIES.entries, proxy.name, proxy)
    run_correlation(make_cfg(tmp_path, "proxies=[params,test_fail_on_pool]"))
    table = pd.read_csv(FIXTURE).query("dataset == 'cifar10'")
    pooled = {a for a in table["arch"] if "avg_pool_3x3" in a}
    assert 0 < len(pooled) < len(table)
    fails = pd.read_csv(tmp_path / "failures.csv")
    assert set(fails["arch"]) == pooled and set(fails["proxy"]) == {"test_fail_on_pool"}
    assert fails["error"].str.contains("RuntimeError: injected failure").all()
    corr = pd.read_csv(tmp_path / "correlations.csv").set_index("proxy")
    assert corr.loc["test_fail_on_pool", "failures"] == len(pooled)
    assert corr.loc["test_fail_on_pool", "n"] == len(table) - len(pooled)
    assert corr.loc["params", "n"] == len(table)


def test_descore_columns(tmp_path):
    cfg = make_cfg(tmp_path, "descore=true", "proxies=[params]", "n=6", "batch_size=3")
    run_correlation(cfg)
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert {"descore", "descore_denas_rank", "descore_denas_reference", "zen", "ntk",
            "nuclear_diversity", "synflow", "az_expressivity", "flops", "naswot"} <= set(
        scores.columns
    )  # fmt: skip
    # The DE-NAS variant is the equal-weight rank sum of its four terms (latency off).
    ok = scores[["zen", "ntk", "nuclear_diversity", "synflow"]].notna().all(axis=1)
    denas = proxy_lib.DEScore(
        {c: 1.0 for c in ("expressivity", "complexity", "diversity", "saliency")}
    )
    sub = scores[ok]
    raws = [
        {
            "expressivity": r.zen,
            "complexity": r.ntk,
            "diversity": r.nuclear_diversity,
            "saliency": r.synflow,
        }
        for r in sub.itertuples()
    ]
    assert np.allclose(sub["descore_denas_rank"], denas.combine(raws))
    # the reference variant is DE-NAS's formula on each arch's raw values alone
    formula = sub.zen / sub.synflow - sub.ntk + sub.nuclear_diversity
    assert np.allclose(sub["descore_denas_reference"], formula)
    # the shipped score: AZ-NAS's terms and NASWOT, log-rank aggregated
    shipped = proxy_lib.DEScore.default()
    terms = {"expressivity": "az_expressivity", "complexity": "flops",
             "az_progressivity": "az_progressivity", "az_trainability": "az_trainability",
             "naswot": "naswot"}  # fmt: skip
    raws = [{k: getattr(r, v) for k, v in terms.items()} for r in scores.itertuples()]
    # NB-201 cells report no attention or FFN: the transformer terms are left out
    assert scores[["softmax_confidence", "wpca"]].isna().all().all()
    raws = [dict(r, softmax_confidence=None, wpca=None) for r in raws]
    assert np.allclose(scores["descore"], shipped.combine(raws, drop=("latency",)))
    before = proxy_lib.DEScore.from_config(
        {"weights": {"expressivity": 1.0, "complexity": 1.0}, "normalize": "logrank",
         "proxies": {"expressivity": "az_expressivity", "complexity": "flops"},
         "extra": {"az_progressivity": 1.0, "az_trainability": 1.0, "naswot": 1.0}}
    )  # fmt: skip  (the default before the transformer terms: NB-201 ranks the same)
    assert np.allclose(scores["descore"], before.combine([
        {k: v for k, v in r.items() if v is not None} for r in raws]))  # fmt: skip


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("accuracy_column=test_acc", KeyError, "columns present"),
        ("arch_column=genotype", KeyError, "val_accuracy"),
        ("csv_path=null", ValueError, "csv_path is required"),
        ("csv_path=/nonexistent/table.csv", FileNotFoundError, "does not exist"),
        ("filter.dataset=mnist", ValueError, "cifar100"),
        ("proxies=[no_such_proxy]", KeyError, "registered proxies"),
        ("space=no_such_space", KeyError, "nb201"),
    ],
)
def test_bad_config_fails_clearly(tmp_path, override, error, match):
    with pytest.raises(error, match=match):
        run_correlation(make_cfg(tmp_path, override))


def test_failed_terms_rank_last_in_descore(tmp_path, monkeypatch):
    def fail_on_pool(model, inputs, gen):
        if "avg_pool_3x3" in model.arch_str:
            raise RuntimeError("injected failure")
        return float(sum(p.numel() for p in model.parameters()))

    proxy = proxy_base.Proxy("test_fail_on_pool", fail_on_pool, True, "")
    monkeypatch.setitem(proxy_base.PROXIES.entries, proxy.name, proxy)
    run_correlation(
        make_cfg(tmp_path, "descore=true", "proxies=[params]", "~variants", "proxy=denas_rank",
                 *(f"proxy.weights.{c}=0" for c in ("expressivity", "complexity", "diversity")),
                 "+proxy.extra.test_fail_on_pool=1.0")
    )  # fmt: skip
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores["descore"].notna().all()  # a failed term ranks worst, the arch stays
    raws = [{"saliency": r.synflow, "test_fail_on_pool": r.test_fail_on_pool}
            for r in scores.itertuples()]  # fmt: skip
    expect = proxy_lib.DEScore({"saliency": 1.0}, extra={"test_fail_on_pool": 1.0}).combine(raws)
    assert np.allclose(scores["descore"], expect)
    corr = pd.read_csv(tmp_path / "correlations.csv").set_index("proxy")
    x = scores["test_fail_on_pool"].to_numpy(float)
    last = np.where(np.isnan(x), np.nanmin(x) - 1.0, x)
    rho = stats.spearmanr(last, scores["accuracy"]).statistic
    assert corr.loc["test_fail_on_pool", "spearman_all"] == pytest.approx(rho)
    assert corr.loc["descore", "n"] == len(scores)


def test_latency_stand_in(tmp_path):
    over = [
        "descore=true",
        "proxies=[params]",
        "~variants",
        "proxy=denas_rank",
        "latency_proxy=flops",
    ]
    run_correlation(make_cfg(tmp_path, *over, "n=6", "batch_size=3"))
    scores = pd.read_csv(tmp_path / "scores.csv")
    five = {c: 1.0 for c in proxy_lib.DEScore.COMPONENTS}
    raws = [{"expressivity": r.zen, "complexity": r.ntk, "diversity": r.nuclear_diversity,
             "saliency": r.synflow, "latency": r.flops} for r in scores.itertuples()]  # fmt: skip
    assert np.allclose(scores["descore"], proxy_lib.DEScore(five).combine(raws))
    with pytest.raises(KeyError, match="registered proxies"):
        run_correlation(make_cfg(tmp_path / "x", "descore=true", "latency_proxy=nope"))


def test_datamodule_inputs(tmp_path):
    data = ["inputs=data", "data=synthetic", "data.data_dir=unused", "data.shape=[3,32,32]",
            "data.train_size=32", "data.val_size=8", "data.test_size=8", "n=4"]  # fmt: skip
    cfg = make_cfg(tmp_path, *data)
    inputs, source = make_inputs(cfg, (3, 32, 32), torch.device("cpu"))
    x, y = build_datamodule(cfg.data).proxy_batch(4, 0)
    assert torch.equal(inputs.x, x) and torch.equal(inputs.y, y) and source["name"] == "synthetic"
    run_correlation(cfg)
    record = json.loads((tmp_path / "scores.jsonl").read_text().splitlines()[0])
    assert record["settings"]["inputs"] == "data" and record["settings"]["source"] == source
    noise = tmp_path / "noise"
    run_correlation(make_cfg(noise, "n=4"))
    a, b = (pd.read_csv(d / "scores.csv") for d in (tmp_path, noise))
    assert not np.allclose(a["naswot"], b["naswot"])  # the real batch was used
    with pytest.raises(ValueError, match=r"add data=cifar10"):
        run_correlation(make_cfg(tmp_path / "bad", "inputs=data"))
    with pytest.raises(ValueError, match="takes"):
        run_correlation(make_cfg(tmp_path / "bad", *data[:3], "data.shape=[1,16,16]"))
