"""Thread choice under load and progress lines for logs that are not a terminal."""

from __future__ import annotations

import logging

import pytest

from hwnas.core import runtime
from hwnas.core.progress import IntervalLogger, progress_bar, use_bars


@pytest.mark.parametrize("load,expected", [(0.0, 4), (1.2, 3), (3.6, 1), (9.0, 1)])
def test_auto_threads_leaves_busy_cores_alone(monkeypatch, load, expected):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.setattr(runtime, "busy_cores_now", lambda: load)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # lags: unused
    assert runtime.auto_threads() == expected
    assert runtime.resolve_threads("auto") == expected
    assert runtime.resolve_threads(3) == 3


def test_auto_threads_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.setattr(runtime, "busy_cores_now", lambda: None)  # no /proc/stat
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (2.2, 1.0, 1.0))
    assert runtime.auto_threads() == 2


def test_busy_cores_are_sampled_from_proc_stat(monkeypatch):
    samples = iter([(100, 1000), (130, 1040)])  # 30 of 40 jiffies busy
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(runtime.time, "sleep", lambda s: None)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert runtime.busy_cores_now() == pytest.approx(1.5)
    monkeypatch.undo()  # the real reader on this machine: a share of its cores
    busy = runtime.busy_cores_now(0.05)
    assert busy is None or 0.0 <= busy <= (runtime.os.cpu_count() or 1)


def test_log_mode_writes_steady_lines_not_bars(caplog):
    caplog.set_level(logging.INFO, logger="hwnas.core.progress")
    with progress_bar("scoring", total=5, mode="log", interval_s=3600) as update:
        assert isinstance(update, IntervalLogger)
        for i in range(1, 6):
            update(i, 5)
    lines = [r.getMessage() for r in caplog.records]
    # the first update and the last are always logged; the interval silences the rest
    assert len(lines) == 2 and lines[0].startswith("scoring: 1/5") and "5/5" in lines[1]


def test_auto_mode_uses_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert not use_bars("auto") and use_bars("bar") and not use_bars("log")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert use_bars("auto")
    with pytest.raises(ValueError, match="progress='quiet'"):
        use_bars("quiet")


def test_epoch_lines_show_that_epochs_training_means(tmp_path, caplog):
    """Lightning validates before it folds an epoch's training means into its metrics;
    each "epoch N done" line must still show epoch N's means (the CSV log's), once."""
    import csv

    from tests.test_pipeline import _run

    caplog.set_level(logging.INFO, logger="hwnas.training.trainer")
    out = tmp_path / "run"
    _run(out, "stages=[zero_shot,supernet]", "progress=log")
    lines = [r.getMessage() for r in caplog.records if " done (" in r.getMessage()]
    (csv_path,) = (out / "supernet" / "logs").rglob("metrics.csv")
    rows = list(csv.DictReader(csv_path.open()))
    means = {int(r["epoch"]): float(r["train/loss_epoch"]) for r in rows if r["train/loss_epoch"]}
    assert len(means) >= 3 and len(lines) == len(means)
    for epoch, mean in means.items():
        (line,) = [s for s in lines if f"supernet: epoch {epoch + 1}/{len(means)} done" in s]
        assert f"train/loss {mean:.4f}" in line and "val/" in line
        # every epoch but the last says how long the rest of the training will take
        assert (", eta " in line) == (epoch + 1 < len(means)), line


def test_the_eta_follows_the_rate_so_far(monkeypatch):
    from types import SimpleNamespace

    from hwnas.training.trainer import LogProgress

    clock = iter([100.0, 130.0])
    monkeypatch.setattr("hwnas.training.trainer.time.monotonic", lambda: next(clock))
    bar = LogProgress("final")
    bar.on_train_start(SimpleNamespace(current_epoch=1), None)  # resumed at epoch 2 of 4
    # 30 s for 1.5 of the 3 epochs this process runs: 30 s to go
    assert bar._eta(SimpleNamespace(max_epochs=4), 2.5) == ", eta 30 s"
    assert bar._eta(SimpleNamespace(max_epochs=4), 1.0) == ""  # no rate yet
