"""Thread choice under load and progress lines for logs that are not a terminal."""

from __future__ import annotations

import logging

import pytest

from hwnas import runtime
from hwnas.progress import IntervalLogger, progress_bar, use_bars


@pytest.mark.parametrize("load,expected", [(0.0, 4), (1.2, 3), (3.6, 1), (9.0, 1)])
def test_auto_threads_leaves_busy_cores_alone(monkeypatch, load, expected):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (load, load, load))
    assert runtime.auto_threads() == expected
    assert runtime.resolve_threads("auto") == expected
    assert runtime.resolve_threads(3) == 3


def test_log_mode_writes_steady_lines_not_bars(caplog):
    caplog.set_level(logging.INFO, logger="hwnas.progress")
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
