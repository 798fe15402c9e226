"""Measured latency: warm-up, repeats, median, fixed threads, batch size and device.

:func:`measure_latency` times one module on one input shape with PyTorch eager (CPU
wall clock or CUDA events), ONNX Runtime or OpenVINO's CPU plugin (either: the module
exported to ONNX in a temporary folder, :func:`onnx_session`). :class:`MeasuredLatency`
is the cost model that measures each arch's exported subnet once and caches the median.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.core.runtime import torch_threads
from hwnas.core.types import Timing
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.base import CostModel
from hwnas.hardware.int8 import PRECISIONS, split_backend
from hwnas.hardware.openvino import require_openvino
from hwnas.hardware.sessions import (
    EXPORTED,
    no_gc,
    on_device,
    time_exported,
)
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
# A module's input: a shape without the batch dimension (one float32 Gaussian batch) or
# a callable ``(batch_size, generator) -> tuple of tensors`` (token ids, masks, ...).
InputFactory = Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
InputSpec = tuple[int, ...] | InputFactory
BACKENDS = ("torch", "onnxruntime", "openvino")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of ``repeats`` timed forward passes (milliseconds per batch)."""

    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    repeats: int
    warmup: int
    batch_size: int
    device: str
    device_name: str
    threads: int
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.median_ms:.3f} ms median (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
            f"on {setting_label(self.device, self.backend, self.threads, self.batch_size)}"
        )


def setting_label(device: str, backend: str, threads: int | None, batch_size: int) -> str:
    """Human-readable measurement setting, e.g. ``cpu, torch eager, 2 threads, batch 1``."""
    runtime = "torch eager" if backend == "torch" else backend
    parts = [device, runtime]
    if device == "cpu":
        n = threads or torch.get_num_threads()
        parts.append(f"{n} thread{'s' if n != 1 else ''}")
    parts.append(f"batch {batch_size}")
    return ", ".join(parts)


def device_name(device: str) -> str:
    """The hardware behind ``device`` (CPU model or GPU name), for table metadata."""
    if device.startswith("cuda"):
        return (
            torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else "?"
        )
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def check_setting(
    device: str,
    backend: str,
    threads: int | None,
    batch_size: int,
    warmup: int,
    repeats: int,
    available: bool = True,
) -> None:
    """Raise a one-line ``ValueError`` for a bad measurement setting; with
    ``available``, also when the device or runtime cannot be used here (nothing to
    time: False), e.g. ``backend="openvino"`` without OpenVINO installed."""
    if device not in DEVICES:
        raise ValueError(f"latency device {device!r} is not supported; use one of {list(DEVICES)}")
    backend, precision = split_backend(backend)
    if precision not in PRECISIONS or (precision == "int8" and backend not in EXPORTED):
        raise ValueError(
            f"precision {precision!r} with backend {backend!r}: INT8 models are timed by "
            f"{' or '.join(EXPORTED)}; use precision=fp32 or one of those backends"
        )
    if backend not in BACKENDS:
        raise ValueError(
            f"latency backend {backend!r} is not supported; use one of {list(BACKENDS)}"
        )
    if backend == "openvino" and device != "cpu":
        raise ValueError(
            f"backend='openvino' times on the cpu only, not device={device!r}; use "
            "device=cpu (or backend=onnxruntime / torch on cuda)"
        )
    if available and backend == "openvino":
        require_openvino("backend")
    if available and device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "latency device 'cuda' requested but CUDA is not available; use device=cpu"
        )
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1 or null (library default), got {threads}")
    if batch_size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            f"need batch_size >= 1, warmup >= 0, repeats >= 1; "
            f"got {batch_size}, {warmup}, {repeats}"
        )


def measure_latency(
    module: nn.Module,
    inputs: InputSpec,
    batch_size: int = 1,
    device: str = Timing.device,
    threads: int | None = None,
    warmup: int = Timing.warmup,
    repeats: int = Timing.repeats,
    backend: str = Timing.backend,
    seed: int = 0,
) -> LatencyStats:
    """Time ``module`` on a random batch of ``batch_size`` built from ``inputs`` (a
    shape without the batch dimension, or a callable; see ``InputSpec``).

    ``threads`` fixes the CPU intra-op threads (PyTorch's setting is restored
    afterwards; ``None`` keeps the current one). The module is run in eval mode under
    ``torch.inference_mode`` (its train/eval mode is restored); CUDA is timed with
    events after a synchronize; ``backend="onnxruntime"`` or ``"openvino"`` (CPU only)
    exports it to ONNX first and times that runtime's session.
    """
    check_setting(device, backend, threads, batch_size, warmup, repeats)
    gen = torch.Generator().manual_seed(seed)
    xs = make_inputs(inputs, batch_size, gen)
    was_training = module.training
    module.eval()
    try:
        with torch_threads(threads) as n_threads:
            if backend == "torch":
                times = _time_torch(module, xs, device, warmup, repeats)
            else:
                runtime, precision = split_backend(backend)
                times = time_exported(
                    module, xs, device, n_threads, warmup, repeats, runtime, precision
                )
    finally:
        module.train(was_training)
    return stats_of(times, warmup, batch_size, device, n_threads, backend)


def stats_of(
    times: Sequence[float],
    warmup: int,
    batch_size: int,
    device: str,
    threads: int | None,
    backend: str,
) -> LatencyStats:
    """:class:`LatencyStats` of timed runs ``times`` (ms) taken in the given setting."""
    t = np.asarray(times, dtype=np.float64)
    p10, p25, p50, p75, p90 = np.percentile(t, [10, 25, 50, 75, 90])
    return LatencyStats(
        median_ms=float(p50),
        mean_ms=float(t.mean()),
        p10_ms=float(p10),
        p90_ms=float(p90),
        iqr_ms=float(p75 - p25),
        repeats=len(t),
        warmup=warmup,
        batch_size=batch_size,
        device=device,
        device_name=device_name(device),
        threads=threads,
        backend=backend,
    )


def make_inputs(spec: InputSpec, batch_size: int, generator: torch.Generator) -> tuple:
    """The positional inputs of one batch described by ``spec`` (see ``InputSpec``)."""
    if callable(spec):
        return tuple(spec(batch_size, generator))
    return (torch.randn((batch_size, *spec), generator=generator),)


def describe_inputs(spec: InputSpec) -> list:
    """JSON-able description of ``spec``: the shape, or each input's shape and dtype
    (batch of one) for a callable."""
    if not callable(spec):
        return [int(d) for d in spec]
    xs = make_inputs(spec, 1, torch.Generator().manual_seed(0))
    return [f"{list(x.shape[1:])}:{str(x.dtype).removeprefix('torch.')}" for x in xs]


def _time_torch(
    module: nn.Module, xs: tuple, device: str, warmup: int, repeats: int
) -> list[float]:
    net = on_device(module, device)
    xs = tuple(x.to(device) for x in xs)
    times: list[float] = []
    with torch.inference_mode(), no_gc():
        for _ in range(warmup):
            net(*xs)
        if device == "cuda":
            torch.cuda.synchronize()
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                net(*xs)
                end.record()
                torch.cuda.synchronize()
                times.append(float(start.elapsed_time(end)))
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                net(*xs)
                times.append((time.perf_counter() - t0) * 1e3)
    return times


class MeasuredLatency(CostModel):
    """``latency_ms``: median measured latency of each arch's exported subnet (cached)."""

    name = "measured_latency"

    def __init__(
        self,
        model: ElasticModel,
        device: str = Timing.device,
        backend: str = Timing.backend,
        threads: int | None = None,
        batch_size: int = 1,
        warmup: int = Timing.warmup,
        repeats: int = Timing.repeats,
        progress: Callable[[Arch, LatencyStats], None] | None = None,
    ):
        super().__init__()
        check_setting(device, backend, threads, batch_size, warmup, repeats)
        self.model, self.device, self.backend, self.threads = model, device, backend, threads
        self.batch_size, self.warmup, self.repeats = batch_size, warmup, repeats
        self.stats: dict[Arch, LatencyStats] = {}
        self._progress = progress

    def settings(self) -> Mapping[str, Any]:
        return {
            "device": self.device,
            "backend": self.backend,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "repeats": self.repeats,
        }

    def _compute(self, arch: Arch) -> dict[str, float]:
        sub = self.model.export(arch)
        stats = measure_latency(sub, self.model.example_inputs, **self.settings())
        self.stats[arch] = stats
        if self._progress is not None:
            self._progress(arch, stats)
        return {"latency_ms": stats.median_ms}

    def describe(self) -> str:
        label = setting_label(self.device, self.backend, self.threads, self.batch_size)
        return (
            f"latency: measured ({label}; median of {self.repeats} runs after "
            f"{self.warmup} warm-up)"
        )
