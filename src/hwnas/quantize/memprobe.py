"""Peak memory of one deployed model, measured in a fresh process.

``python -m hwnas.quantize.memprobe <model> <runtime> <inputs.npz>`` imports the
runtime, resets the peak and reads the resident memory (``VmRSS``), loads the model,
runs it once on the saved inputs and prints ``{"peak_mb": VmHWM - VmRSS before}`` as
JSON: the memory the model itself costs at its peak, free of what the calling process
already holds
(:func:`hwnas.quantize.ort_runtime.peak_memory_mb` runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise OSError(f"no {key} in /proc/self/status")


def main(argv: list[str]) -> int:
    model, runtime, feed_path = argv
    with np.load(feed_path) as data:
        feed = {k: data[k] for k in data.files}
    from hwnas.quantize.ort_runtime import open_session

    if runtime == "openvino":  # the library itself is not the model's cost
        import openvino  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    try:  # restart the peak (VmHWM) from the current resident size
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _status_mb("VmRSS")
    session = open_session(model, 1, runtime)
    session.run(None, feed)
    print(json.dumps({"peak_mb": max(0.0, _status_mb("VmHWM") - before)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
