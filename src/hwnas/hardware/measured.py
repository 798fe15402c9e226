"""Measured latencies as a record: every arch a run timed, replayed by a reproduction.

With ``latency: measured`` (the ``cuda``, ``onnxruntime`` and ``openvino`` targets,
``cpu`` on request) each arch's subnet is timed when first needed; two runs never time
alike, so a rerun with the same seed would search on other latencies.
:class:`RecordedLatency` keeps every arch's median: ``save_record(folder)`` writes them to
``folder/measured_latency.json`` (:data:`~hwnas.hardware.records.MEASURED_NAME`) and
``hardware.table=<that file>`` makes another run use them (:func:`load_measured`): an
arch in the record gets its recorded latency, bit for bit; one that is not is timed
here and logged as such.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwnas.core import atomic
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.latency import MeasuredLatency
from hwnas.hardware.records import (
    MEASURED_FORMAT,
    MEASURED_NAME,
    check_identity,
    fingerprint,
    read_record,
    space_identity,
)
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)

FIX = (
    "pass the measured_latency.json of a run with latency=measured, or set "
    "hardware.table=null to time every arch afresh"
)


def load_measured(path: str | Path, model: ElasticModel) -> tuple[dict[Arch, float], dict]:
    """The latencies (ms per arch) and ``meta`` of the measured-latency record ``path``;
    a record of another space, or one with a malformed entry, is refused in one line
    naming the file and the fix."""
    blob = read_record(path, MEASURED_FORMAT, FIX)
    meta = dict(blob["meta"])
    check_identity(meta, model, f"measured-latency record {path}", FIX)
    entries = blob.get("latencies")
    if not isinstance(entries, list):
        raise ValueError(f"measured-latency record {path} has no 'latencies' list; {FIX}")
    genes = [g.name for g in model.space.genes]
    latencies: dict[Arch, float] = {}
    for i, entry in enumerate(entries):
        arch = entry.get("arch") if isinstance(entry, dict) else None
        value = entry.get("latency_ms") if isinstance(entry, dict) else None
        if not isinstance(arch, dict) or sorted(arch) != sorted(genes):
            raise ValueError(
                f"measured-latency record {path}: entry {i} has no arch of this space "
                f"(genes {genes}); {FIX}"
            )
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ValueError(
                f"measured-latency record {path}: entry {i} has latency_ms={value!r}, not a "
                f"finite number >= 0; {FIX}"
            )
        latencies[Arch(arch)] = float(value)  # the recorded gene order, as timed
    return latencies, meta


class RecordedLatency(MeasuredLatency):
    """:class:`~hwnas.hardware.latency.MeasuredLatency` that records what it timed and
    replays a given record (``replay``: ms per arch, read from ``source``)."""

    def __init__(
        self,
        model: ElasticModel,
        replay: Mapping[Arch, float] | None = None,
        source: str | None = None,
        **timing: Any,
    ):
        super().__init__(model, **timing)
        self.replay = dict(replay or {})
        self.source = source
        self.replayed = self.timed = 0

    def _compute(self, arch: Arch) -> dict[str, float]:
        if arch in self.replay:
            self.replayed += 1
            return {"latency_ms": self.replay[arch]}
        if self.source is not None:  # the first one as a warning, the others as info
            log.log(logging.INFO if self.timed else logging.WARNING,
                    "arch %s is not in the measured-latency record %s: timed here",
                    arch.to_str(), self.source)  # fmt: skip
        self.timed += 1
        return super()._compute(arch)

    def describe(self) -> str:
        text = super().describe()
        if self.source is None:
            return text
        return f"{text}; recorded latencies replayed from {self.source}"

    def save_record(self, folder: str | Path) -> Path:
        """Write every arch's latency, sorted, to ``folder/measured_latency.json``: those
        timed so far and the whole replayed record (a resumed run that skips a finished
        stage keeps that stage's latencies); ``hardware.table=<that file>`` replays them."""
        meta = {
            **space_identity(self.model),
            **fingerprint(self.device, self.backend, self.threads, self.batch_size),
            "warmup": self.warmup,
            "repeats": self.repeats,
            "timed": self.timed,
            "replayed": self.replayed,
        }
        latencies = {**self.replay, **{a: c["latency_ms"] for a, c in self._cache.items()}}
        rows = sorted(((a.to_str(), a, ms) for a, ms in latencies.items()), key=lambda r: r[0])
        blob = {
            "format": MEASURED_FORMAT,
            "meta": meta,
            "latencies": [{"arch": a.to_dict(), "latency_ms": ms} for _, a, ms in rows],
        }
        return atomic.write_json(Path(folder) / MEASURED_NAME, blob)
