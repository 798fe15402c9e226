"""Every tiny experiment computes what it computed before the house was rebuilt: the
outputs recorded in ``tests/golden/`` (``python tests/golden/capture.py``) are equal,
floats to 1e-9; measured latencies and wall-clock figures are recorded as volatile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import capture  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(capture.EXPERIMENTS))
def test_golden_outputs_equal(name, tmp_path):
    golden = json.loads((capture.HERE / f"{name}.json").read_text())
    now = capture.capture(capture.run_experiment(name, tmp_path))
    diff = capture.differences(golden, now)
    assert not diff, f"{len(diff)} values differ from tests/golden/{name}.json:\n" + "\n".join(
        diff[:30]
    )


def test_differences_catch_a_changed_value():
    golden = {"metrics.json.acc": 0.5, "metrics.json.latency": capture.VOLATILE}
    assert capture.differences(golden, {"metrics.json.acc": 0.5, "metrics.json.latency": 9.0}) == []
    assert capture.differences(golden, {"metrics.json.acc": 0.5 + 1e-6, "metrics.json.latency": 1})
    assert capture.differences(golden, {"metrics.json.latency": 1.0})  # a value went missing
