"""Running deployed models: sessions, a module wrapper, timing, size on disk, memory.

A deployed model is an ONNX file (ONNX Runtime, or OpenVINO reading ONNX) or an
OpenVINO IR (``model.xml`` + ``model.bin``). :func:`open_session` opens either runtime
behind ONNX Runtime's session interface (:mod:`hwnas.hardware.openvino`);
:func:`time_onnx` times a file with the settings of
:func:`hwnas.hardware.latency.measure_latency` (fixed intra-op threads, warm-up,
repeats, median) and returns the same :class:`LatencyStats`; :class:`OrtModule` lets a
task's ``evaluate`` score the file as if it were a module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from hwnas.core.types import Timing
from hwnas.hardware.latency import InputSpec, LatencyStats, check_setting, make_inputs, stats_of
from hwnas.hardware.openvino import ir_files, ov_session
from hwnas.hardware.ort_sessions import ort_session
from hwnas.hardware.sessions import time_session

log = logging.getLogger(__name__)


def as_feed(batch: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """One batch of model inputs (tensor, tuple of tensors/arrays, or a dict by name)
    as an ORT feed."""
    if isinstance(batch, Mapping):
        items = dict(batch)
    else:
        xs = batch if isinstance(batch, (tuple, list)) else (batch,)
        if len(xs) != len(names):
            raise ValueError(f"a batch has {len(xs)} inputs, the model takes {list(names)}")
        items = dict(zip(names, xs))
    return {
        k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        for k, v in items.items()
    }


RUNTIMES = ("onnxruntime", "openvino")


def runtime_of(path: str | Path, runtime: str | None = None) -> str:
    """The runtime that runs ``path``: ``runtime`` when given, else OpenVINO for an IR
    (``.xml``) and ONNX Runtime for an ONNX file."""
    if runtime is not None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: choose one of {list(RUNTIMES)}")
        return runtime
    return "openvino" if Path(path).suffix == ".xml" else "onnxruntime"


def open_session(
    path: str | Path, threads: int = 1, runtime: str | None = None, device: str = "cpu"
) -> Any:
    """A session on ``path`` in ``runtime`` (:func:`runtime_of`) with ``threads``
    intra-op threads: ``run(None, feed)`` and ``get_inputs()`` as in ONNX Runtime."""
    if runtime_of(path, runtime) == "openvino":
        return ov_session(path, threads, device)
    return ort_session(path, threads, device)


def model_size_mb(path: str | Path) -> float:
    """Size of a deployed model in MB (10^6 bytes, as ``memory_mb``): an ONNX file with
    the external data files beside it, or an OpenVINO IR's ``.xml`` and ``.bin``."""
    path = Path(path)
    if path.suffix == ".xml":
        return sum(f.stat().st_size for f in ir_files(path)) / 1e6
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                total += (path.parent / entry.value).stat().st_size
    return total / 1e6


class OrtModule(nn.Module):
    """A deployed model behind the ``nn.Module`` call interface (torch tensors in and
    out), so :meth:`hwnas.tasks.Task.evaluate` can score a quantized model as it is
    deployed; ``runtime`` as :func:`runtime_of` (ONNX Runtime for ``.onnx``)."""

    def __init__(self, path: str | Path, threads: int = 1, runtime: str | None = None):
        super().__init__()
        self.path = Path(path)
        self.runtime = runtime_of(path, runtime)
        self.session = open_session(self.path, threads, self.runtime)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, *xs: Any) -> Any:
        outs = self.session.run(None, as_feed(tuple(xs), self.input_names))
        tensors = [torch.from_numpy(np.asarray(o)) for o in outs]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _random_feed(session: Any, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs built from the graph's own shapes: the first (symbolic) dimension set to
    ``batch_size``; floats Gaussian, integers zero (valid token ids and lengths)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for i, inp in enumerate(session.get_inputs()):
        dims = list(inp.shape)
        if dims and not isinstance(dims[0], int):
            dims[0] = batch_size
        if not all(isinstance(d, int) for d in dims):
            raise ValueError(
                f"input {inp.name!r} has symbolic dimensions {inp.shape}: pass inputs="
            )
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {i} ({inp.name!r}) has type {inp.type}: pass inputs=")
        floating = np.issubdtype(dtype, np.floating)
        feed[inp.name] = (rng.standard_normal(dims) if floating else np.zeros(dims)).astype(dtype)
    return feed


def session_feed(
    session: Any, inputs: InputSpec | None, batch_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """One batch for ``session``: built from ``inputs`` (a shape or a callable, as
    :func:`time_onnx` takes), or from the graph's own input shapes when ``None``."""
    if inputs is None:
        return _random_feed(session, batch_size, seed)
    xs = make_inputs(inputs, batch_size, torch.Generator().manual_seed(seed))
    return as_feed(xs, [i.name for i in session.get_inputs()])


def time_onnx(
    path: str | Path,
    inputs: InputSpec | None = None,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = Timing.warmup,
    repeats: int = Timing.repeats,
    seed: int = 0,
    device: str = Timing.device,
    runtime: str | None = None,
) -> LatencyStats:
    """Median (and spread) of ``repeats`` timed runs of a deployed model (``runtime``
    as :func:`runtime_of`) after ``warmup`` runs, at ``batch_size`` with ``threads``
    intra-op threads.

    ``inputs``: a shape without the batch dimension or a callable
    ``(batch_size, generator) -> tensors`` (as :func:`hwnas.hardware.measure_latency`;
    e.g. ``task.example_inputs``); ``None`` builds them from the graph's input shapes.
    """
    runtime = runtime_of(path, runtime)
    check_setting(device, "onnxruntime", threads, batch_size, warmup, repeats)
    session = open_session(path, threads, runtime, device)
    feed = session_feed(session, inputs, batch_size, seed)
    times = time_session(session, feed, warmup, repeats)
    return stats_of(times, warmup, batch_size, device, threads, runtime)


def peak_memory_mb(
    path: str | Path, inputs: InputSpec | None, batch_size: int = 1, runtime: str | None = None
) -> float:
    """Peak resident memory (MB) that loading ``path`` and running it once at
    ``batch_size`` costs, measured in a fresh process (:mod:`hwnas.quantize.memprobe`);
    NaN where it cannot be measured (no /proc)."""
    import json
    import subprocess
    import sys
    import tempfile

    probe = Path(__file__).with_name("memprobe.py")  # run as a file: no package import
    runtime = runtime_of(path, runtime)
    session = open_session(path, 1, runtime)
    feed = session_feed(session, inputs, batch_size)
    del session
    with tempfile.TemporaryDirectory(prefix="hwnas-mem-") as tmp:
        npz = Path(tmp) / "feed.npz"
        np.savez(npz, **feed)
        done = subprocess.run(
            [sys.executable, str(probe), str(path), runtime, str(npz)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        log.warning("peak memory of %s not measured: %s", path, done.stderr.strip()[-300:])
        return float("nan")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def throughput(stats: LatencyStats) -> float:
    """Samples per second at the median latency of ``stats``."""
    return stats.batch_size / stats.median_ms * 1e3
