"""FLOPs-linear latency: ``latency_ms = a * flops_m + b``, fitted on measured networks.

:meth:`FlopsLine.build` measures whole networks (the smallest, the largest and seeded
random archs) and fits the line by least squares on relative errors. A line is a
latency record like a table (:mod:`hwnas.hardware.records`): JSON with the space and
the fingerprint of the machine it was measured on, so a run can keep the line it used
and a reproduction reads it back with ``hardware.table=<run>/latency_table.json``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.core import atomic
from hwnas.core.types import Timing
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.base import CostModel
from hwnas.hardware.latency import check_setting, measure_latency, setting_label
from hwnas.hardware.records import (
    FINGERPRINT_KEYS,
    FLOPS_FORMAT,
    RECORD_NAME,
    check_identity,
    fingerprint,
    read_record,
    space_identity,
)
from hwnas.hardware.table import Correction, correction_archs, fit_correction
from hwnas.spaces.base import Arch, SearchSpace

REFIT = (
    "set hardware.table=null to fit the line again on this machine, or pass the "
    "latency_table.json a run with latency=flops recorded"
)


@dataclass
class FlopsLine:
    """A fitted ``a * flops_m + b`` line (``fit.scale``, ``fit.offset``; ms) of one space;
    ``meta`` records where and how its networks were measured."""

    meta: dict[str, Any]
    fit: Correction = field(default_factory=Correction)

    @classmethod
    def build(
        cls,
        model: ElasticModel,
        device: str = Timing.device,
        backend: str = Timing.backend,
        threads: int | None = None,
        batch_size: int = 1,
        warmup: int = Timing.warmup,
        repeats: int = Timing.repeats,
        correction_samples: int = 12,
        seed: int = 0,
    ) -> FlopsLine:
        """Measure ``correction_samples`` (>= 2) whole networks and fit the line."""
        check_setting(device, backend, threads, batch_size, warmup, repeats)
        if correction_samples < 2:
            raise ValueError(f"a FLOPs line needs >= 2 networks, got {correction_samples}")
        setting = {"device": device, "backend": backend, "threads": threads,
                   "batch_size": batch_size, "warmup": warmup, "repeats": repeats}  # fmt: skip
        archs = correction_archs(model.space, correction_samples, random.Random(seed))
        flops = np.array([model.cost_of(a)["flops_m"] for a in archs], dtype=float)
        ms = np.array(
            [
                measure_latency(model.export(a), model.example_inputs, **setting).median_ms
                for a in archs
            ]
        )
        fit = fit_correction(flops, np.zeros_like(flops), ms)
        if fit.kind == "none":  # too few samples for leave-one-out: plain line through them
            slope, offset = np.polyfit(flops, ms, 1) if len(set(flops)) > 1 else (0.0, ms.mean())
            fit.kind, fit.scale, fit.offset = "affine", float(slope), float(offset)
        fit.samples = [
            {"arch": a.to_str(), "flops_m": float(f), "measured_ms": float(m)}
            for a, f, m in zip(archs, flops, ms, strict=True)
        ]
        meta = {
            **space_identity(model),
            **setting,
            **fingerprint(device, backend, threads, batch_size),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "correction_samples": correction_samples,
            "seed": seed,
        }
        return cls(meta, fit)

    def predict_flops(self, flops_m: float) -> float:
        """Predicted latency (ms) of a network of ``flops_m`` MFLOPs."""
        return self.fit.apply(flops_m, 0)

    def fingerprint(self) -> dict[str, Any]:
        """Where and how the line was measured (``FINGERPRINT_KEYS`` of its ``meta``)."""
        return {k: self.meta.get(k) for k in FINGERPRINT_KEYS}

    def check(self, target: ElasticModel | SearchSpace, source: str = "FLOPs-latency line") -> None:
        """Refuse a line fitted for another space or supernet."""
        check_identity(self.meta, target, source, REFIT)

    def setting(self) -> str:
        m = self.meta
        return setting_label(m["device"], m["backend"], m["threads"], m["batch_size"])

    # ---------------------------------------------------------------- file I/O
    def to_json(self) -> dict[str, Any]:
        return {"format": FLOPS_FORMAT, "meta": self.meta, "correction": asdict(self.fit)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path, expect: ElasticModel | SearchSpace | None = None) -> FlopsLine:
        """Read a line; with ``expect``, refuse one fitted for another space. Errors
        are one line naming the file and the fix (see ``records.read_record``)."""
        blob = read_record(path, FLOPS_FORMAT, REFIT)
        fit = Correction.from_json(blob.get("correction"), f"FLOPs-latency line {path}", REFIT)
        line = cls(dict(blob["meta"]), fit)
        if expect is not None:
            line.check(expect, f"FLOPs-latency line {path}")
        return line


class FlopsLatency(CostModel):
    """``latency_ms = a * flops_m + b`` from a :class:`FlopsLine` (refused for another
    space)."""

    name = "flops_latency"

    def __init__(self, model: ElasticModel, line: FlopsLine):
        super().__init__()
        line.check(model)
        self.model, self.line = model, line

    @property
    def fit(self) -> Correction:
        return self.line.fit

    def _compute(self, arch: Arch) -> dict[str, float]:
        return {"latency_ms": self.line.predict_flops(self.model.cost_of(arch)["flops_m"])}

    def describe(self) -> str:
        return (
            f"latency: FLOPs-linear proxy ({self.fit.scale:.4g} ms/MFLOP + "
            f"{self.fit.offset:.4g} ms, fitted on {self.line.meta.get('correction_samples')} "
            f"networks measured on {self.line.setting()})"
        )

    def save_record(self, folder: str | Path) -> Path:
        """Write the fitted line to ``folder/latency_table.json``; with
        ``hardware.latency=flops hardware.table=<that file>`` a run predicts the same."""
        return self.line.save(Path(folder) / RECORD_NAME)
