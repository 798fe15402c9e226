"""Latency lookup table: profile every distinct piece once, predict any subnet.

An elastic model cuts each subnet into latency units (``ElasticModel.latency_units``:
key, module, input shape; equal keys are equal pieces). :meth:`LatencyTable.build`
enumerates every key the space can produce, times each unit once, then measures a
few whole networks (the smallest, the largest and seeded random ones) and fits a
correction from the sum of unit latencies to the whole-network latency; the
correction model (``scale``: ``a*sum``; ``affine``: ``a*sum + b``; ``per_unit``:
``a*sum + c*units + b``) with the smallest leave-one-out relative error is kept.
Tables are JSON with their metadata (space, setting and the fingerprint of the machine,
see :mod:`hwnas.hardware.records`) and can be built on one machine and used on
another; a table is refused for another space.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.core import atomic
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.analytic import covering_archs, unit_keys
from hwnas.hardware.base import CostModel
from hwnas.hardware.latency import check_setting, describe_inputs, measure_latency, setting_label
from hwnas.hardware.records import (
    FINGERPRINT_KEYS,
    RECORD_NAME,
    TABLE_FORMAT,
    check_identity,
    fingerprint,
    is_number,
    read_record,
    space_identity,
)
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)

REBUILD = (
    "rebuild it with `python -m hwnas.profile output={path}` (same model, data and "
    "hardware config as the run) or set hardware.table=null to build one automatically"
)
CORRECTIONS = {"scale": (0,), "affine": (0, 2), "per_unit": (0, 1, 2)}  # columns of [sum, n, 1]
Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass
class Correction:
    """``latency = scale * table_sum + per_unit * units + offset`` (milliseconds)."""

    kind: str = "none"
    scale: float = 1.0
    per_unit: float = 0.0
    offset: float = 0.0
    loo_mape: float = float("nan")
    samples: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, table_sum: float, units: int) -> float:
        return max(self.scale * table_sum + self.per_unit * units + self.offset, 1e-6)

    @classmethod
    def from_json(cls, raw: Any, source: str, fix: str) -> Correction:
        """The correction of a record's ``correction`` object; a one-line ``ValueError``
        naming ``source`` and ``fix`` when it is missing or malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source} has no 'correction' object (truncated?); {fix}")
        kinds, numbers = ("none", *CORRECTIONS), ("scale", "per_unit", "offset")
        if (
            set(raw) - set(cls.__dataclass_fields__)
            or raw.get("kind", "none") not in kinds
            or not all(is_number(raw.get(k, 0.0)) for k in numbers)
        ):
            raise ValueError(
                f"{source}: malformed 'correction' (fields of {cls.__name__} only, kind one "
                f"of {list(kinds)}, numeric {list(numbers)}); {fix}"
            )
        return cls(**raw)

    def formula(self) -> str:
        return {"none": "sum", "scale": "a*sum", "affine": "a*sum + b",
                "per_unit": "a*sum + c*units + b"}[self.kind]  # fmt: skip


def fit_correction(table_ms: np.ndarray, units: np.ndarray, measured_ms: np.ndarray) -> Correction:
    """The correction (see module doc) with the lowest leave-one-out MAPE; fitted by
    least squares on relative errors."""
    feats = np.stack([table_ms, units, np.ones_like(table_ms)], axis=1).astype(np.float64)
    y = measured_ms.astype(np.float64)
    best: Correction | None = None
    for kind, cols in CORRECTIONS.items():
        if len(y) < len(cols) + 2:
            continue
        loo = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef = _weighted_lstsq(feats[keep][:, cols], y[keep])
            loo.append(abs(feats[i, cols] @ coef - y[i]) / y[i])
        mape = float(np.mean(loo))
        # a richer model must beat a simpler one clearly (0.5 points) to be chosen
        if best is None or mape < best.loo_mape - 0.005:
            coef = dict(zip(cols, _weighted_lstsq(feats[:, cols], y), strict=True))
            best = Correction(
                kind,
                float(coef.get(0, 0.0)),
                float(coef.get(1, 0.0)),
                float(coef.get(2, 0.0)),
                mape,
            )
    return best or Correction()


def _weighted_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return coef


@dataclass
class LatencyTable:
    """Per-unit latencies (ms) of one space on one device, plus a whole-network
    correction; ``meta`` records where and how it was measured."""

    meta: dict[str, Any]
    units: dict[str, dict[str, float]]
    correction: Correction = field(default_factory=Correction)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        model: ElasticModel,
        device: str = "cpu",
        backend: str = "torch",
        threads: int | None = None,
        batch_size: int = 1,
        warmup: int = 5,
        repeats: int = 20,
        correction_samples: int = 12,
        seed: int = 0,
        rounds: int = 3,
        progress: Progress | None = None,
    ) -> LatencyTable:
        """Profile every distinct latency unit of ``model.space``, then fit the
        correction on ``correction_samples`` measured whole networks (0: none).

        Every piece is timed in ``rounds`` interleaved passes (warm-up plus ``repeats``
        runs each) and keeps the smallest of its per-pass medians, so a burst of load
        from other processes slows one pass, not the table.
        """
        check_setting(device, backend, threads, batch_size, warmup, repeats)
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        start = time.perf_counter()
        setting = {"device": device, "backend": backend, "threads": threads,
                   "batch_size": batch_size, "warmup": warmup, "repeats": repeats}  # fmt: skip
        pieces = _distinct_units(model, random.Random(seed))
        corr_archs = correction_archs(model.space, correction_samples, random.Random(seed + 1))
        total = rounds * (len(pieces) + len(corr_archs))
        done = 0

        def tick(what: str) -> None:
            nonlocal done
            done += 1
            if progress:
                progress(done, total, what)

        unit_ms = _min_of_medians(list(pieces.items()), setting, rounds, tick)
        units = {
            key: {"median_ms": ms, "input_shape": describe_inputs(pieces[key][1])}
            for key, ms in unit_ms.items()
        }
        table = cls(_metadata(model, setting, correction_samples, seed, rounds), units)
        if corr_archs:
            names = [f"network {i + 1}/{len(corr_archs)}" for i in range(len(corr_archs))]
            nets = [
                (n, (model.export(a), model.example_inputs))
                for n, a in zip(names, corr_archs, strict=True)
            ]
            net_ms = _min_of_medians(nets, setting, rounds, tick)
            rows = []
            for name, arch in zip(names, corr_archs, strict=True):
                keys = table.unit_keys(model, arch)
                rows.append(
                    {
                        "arch": arch.to_str(),
                        "table_ms": table._sum(keys),
                        "units": len(keys),
                        "measured_ms": net_ms[name],
                    }
                )
            table.correction = fit_correction(
                *(
                    np.array([r[k] for r in rows], dtype=float)
                    for k in ("table_ms", "units", "measured_ms")
                )
            )
            table.correction.samples = rows
        table.meta["build_seconds"] = round(time.perf_counter() - start, 3)
        log.info(
            "latency table for %s: %d units, %s correction (LOO MAPE %.1f%%) in %.1f s",
            model.space.name,
            len(units),
            table.correction.kind,
            100 * table.correction.loo_mape,
            table.meta["build_seconds"],
        )
        return table

    # ---------------------------------------------------------------- prediction
    def unit_keys(self, model: ElasticModel, arch: Mapping[str, Any]) -> list[str]:
        keys = unit_keys(model, arch)
        missing = [k for k in keys if k not in self.units]
        if missing:
            raise KeyError(
                f"latency table has no entry for units {missing}; it does not cover this "
                f"space: rebuild it with `python -m hwnas.profile`"
            )
        return keys

    def _sum(self, keys: list[str]) -> float:
        return float(sum(self.units[k]["median_ms"] for k in keys))

    def raw_ms(self, model: ElasticModel, arch: Mapping[str, Any]) -> float:
        """Sum of the arch's unit latencies, uncorrected."""
        return self._sum(self.unit_keys(model, arch))

    def predict(self, model: ElasticModel, arch: Mapping[str, Any]) -> float:
        """Predicted whole-network latency (ms) of ``arch``."""
        keys = self.unit_keys(model, arch)
        return self.correction.apply(self._sum(keys), len(keys))

    # ----------------------------------------------------------------- identity
    def check(self, target: ElasticModel | SearchSpace, source: str = "latency table") -> None:
        """Refuse a table built for another search space or, given a model, for a
        supernet with other layer sizes (same genes, e.g. other stage widths)."""
        fix = (
            "re-run `python -m hwnas.profile` for this space (same model and data config) "
            "or set hardware.table=null to build one automatically"
        )
        check_identity(self.meta, target, source, fix)

    def fingerprint(self) -> dict[str, Any]:
        """Where and how the table was measured (``FINGERPRINT_KEYS`` of its ``meta``)."""
        return {k: self.meta.get(k) for k in FINGERPRINT_KEYS}

    def setting(self) -> str:
        m = self.meta
        return setting_label(m["device"], m["backend"], m["threads"], m["batch_size"])

    def describe(self) -> str:
        corr = self.correction
        text = f"latency: lookup table ({self.setting()})"
        if corr.kind != "none":
            text += (
                f" + {corr.kind} correction ({corr.formula()}, LOO MAPE {100 * corr.loo_mape:.1f}%)"
            )
        return text

    # ---------------------------------------------------------------- file I/O
    def to_json(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "meta": self.meta,
            "units": self.units,
            "correction": asdict(self.correction),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, self.to_json())
        return path

    @classmethod
    def load(
        cls, path: str | Path, expect: ElasticModel | SearchSpace | None = None
    ) -> LatencyTable:
        """Read a table; with ``expect`` (a model or a space), refuse one built for
        another (see :meth:`check`). A missing file raises ``FileNotFoundError``, an
        unreadable or incomplete one a ``ValueError``; both say how to rebuild it."""
        blob = read_record(path, TABLE_FORMAT, REBUILD)
        fix = REBUILD.format(path=path)
        units = blob.get("units")
        if not isinstance(units, dict) or not units:
            raise ValueError(
                f"latency table {path} has no 'units' (truncated, or not written by hwnas); {fix}"
            )
        bad = [
            k
            for k, v in units.items()
            if not (isinstance(v, dict) and is_number(v.get("median_ms")))
        ]
        if bad:
            raise ValueError(
                f"latency table {path}: units {bad[:3]} lack a numeric 'median_ms' "
                f"(edited or truncated?); {fix}"
            )
        table = cls(
            dict(blob["meta"]),
            dict(units),
            Correction.from_json(blob.get("correction"), f"latency table {path}", fix),
        )
        if expect is not None:
            table.check(expect, f"latency table {path}")
        return table


class TableLatency(CostModel):
    """``latency_ms`` predicted from a :class:`LatencyTable` (refused for another space)."""

    name = "table_latency"

    def __init__(self, model: ElasticModel, table: LatencyTable):
        super().__init__()
        table.check(model)
        self.model, self.table = model, table

    def _compute(self, arch: Arch) -> dict[str, float]:
        return {"latency_ms": self.table.predict(self.model, arch)}

    def describe(self) -> str:
        return self.table.describe()

    def save_record(self, folder: str | Path) -> Path:
        """Write the table used to ``folder/latency_table.json`` (``hardware.table`` reads it)."""
        return self.table.save(Path(folder) / RECORD_NAME)


def _distinct_units(model: ElasticModel, rng: random.Random, extra: int = 16) -> dict:
    """key -> (module, input shape) for every unit key of the space."""
    pieces: dict[str, tuple] = {}
    for arch in covering_archs(model.space):
        for key, module, shape in model.latency_units(arch):
            pieces.setdefault(key, (module, shape if callable(shape) else tuple(shape)))
    covered = len(pieces)
    for _ in range(extra):  # safety net: random archs must not reveal new keys
        for key, module, shape in model.latency_units(model.space.sample(rng)):
            pieces.setdefault(key, (module, shape if callable(shape) else tuple(shape)))
    if len(pieces) > covered:
        log.warning(
            "covering archs missed %d latency units of %s; random samples added them",
            len(pieces) - covered,
            model.space.name,
        )
    return pieces


def _min_of_medians(
    items: list[tuple[str, tuple]],
    setting: Mapping[str, Any],
    rounds: int,
    tick: Callable[[str], None],
) -> dict[str, float]:
    """key -> smallest per-round median latency of (module, shape), rounds interleaved."""
    best = dict.fromkeys((k for k, _ in items), float("inf"))
    for _ in range(rounds):
        for key, (module, shape) in items:
            best[key] = min(best[key], measure_latency(module, shape, **setting).median_ms)
            tick(key)
    return best


def correction_archs(space: SearchSpace, n: int, rng: random.Random) -> list[Arch]:
    if n <= 0:
        return []
    archs = list(dict.fromkeys([space.min_arch(), space.max_arch()]))[:n]
    for _ in range(50 * n):
        if len(archs) >= n:
            break
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    return archs


def _metadata(
    model: ElasticModel, setting: Mapping[str, Any], samples: int, seed: int, rounds: int
) -> dict[str, Any]:
    """Space identity, the measurement setting and the machine's fingerprint."""
    fp = fingerprint(setting["device"], setting["backend"], setting["threads"],
                     setting["batch_size"])  # fmt: skip
    return {
        **space_identity(model),
        **setting,
        **fp,  # threads resolved to the count actually used
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rounds": rounds,
        "correction_samples": samples,
        "seed": seed,
    }
