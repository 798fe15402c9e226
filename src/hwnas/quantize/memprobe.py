"""Peak memory of one deployed model, measured in a fresh process.

``python src/hwnas/quantize/memprobe.py <model> <runtime> <inputs.npz>`` imports the
runtime, resets the peak and reads the resident memory (``VmRSS``), loads the model,
runs it once on the saved inputs and prints ``{"peak_mb": VmHWM - VmRSS before}`` as
JSON: the memory the model itself costs at its peak, free of what the calling process
already holds (:func:`hwnas.quantize.ort_runtime.peak_memory_mb` runs it).

It runs as a file, not as ``-m hwnas.quantize.memprobe``: the ``hwnas.quantize`` and
``hwnas.hardware`` packages import torch, which would cost seconds a model. It opens
the session with the same code as every timing does, loading the two torch-free
session files (:mod:`hwnas.hardware.ort_sessions`, :mod:`hwnas.hardware.openvino`) on
their own.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARDWARE = HERE.parent / "hardware"


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise OSError(f"no {key} in /proc/self/status")


def _session_module(name: str):
    """``hwnas/hardware/<name>.py`` as a module, without its package's ``__init__``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_memprobe_{name}", HARDWARE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    import json

    import numpy as np

    model, runtime, feed_path = argv
    with np.load(feed_path) as data:
        feed = {k: data[k] for k in data.files}
    if runtime == "openvino":  # the library itself is not the model's cost
        import openvino  # noqa: F401

        opener = _session_module("openvino").ov_session
    else:
        import onnxruntime  # noqa: F401

        opener = _session_module("ort_sessions").ort_session
    try:  # restart the peak (VmHWM) from the current resident size
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _status_mb("VmRSS")
    session = opener(model, 1)
    session.run(None, feed)
    print(json.dumps({"peak_mb": max(0.0, _status_mb("VmHWM") - before)}))
    return 0


if __name__ == "__main__":
    # run as a file, its folder comes first on sys.path: its modules must not shadow
    # the packages they are named after
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.exit(main(sys.argv[1:]))
