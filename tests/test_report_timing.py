"""The final report times the chosen and the largest subnet interleaved."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from torch import nn

import hwnas.app.report as report


def test_latency_rounds_interleave_and_keep_the_median(monkeypatch):
    calls = []
    slow = {"largest": [40.0, 61.0, 41.0], "subnet": [25.0, 24.0, 26.0]}  # one slow spell

    def fake(net, shape, batch_size, **kw):
        tag = net.tag
        if batch_size > 1:
            return SimpleNamespace(median_ms=100.0, p90_ms=110.0)
        calls.append(tag)
        ms = slow[tag][sum(1 for c in calls if c == tag) - 1]
        return SimpleNamespace(median_ms=ms, p90_ms=ms + 1)

    monkeypatch.setattr(report, "measure_latency", fake)
    hw = dict(device="cpu", threads=1, warmup=0, repeats=1, backend="torch", batch_size=1)
    cfg = OmegaConf.create({"hardware": hw, "final": {"throughput_batch": 8}})
    task = SimpleNamespace(example_inputs=(3,), speed_fields=lambda latency, batch: {})
    settings = SimpleNamespace(final=SimpleNamespace(throughput_batch=8))
    ctx = SimpleNamespace(cfg=cfg, task=task, settings=settings)
    nets = {}
    for tag in ("largest", "subnet"):
        nets[tag] = nn.Identity()
        nets[tag].tag = tag
    rows = report._measure(ctx, nets)
    assert calls == ["largest", "subnet", "subnet", "largest", "largest", "subnet"]
    assert rows["largest"]["latency_ms"] == 41.0  # the slow round does not count
    assert rows["subnet"]["latency_ms"] == 25.0
    assert rows["largest"]["latency_p90_ms"] == 42.0
    assert rows["subnet"]["throughput_per_s"] == pytest.approx(8 / 0.1)
