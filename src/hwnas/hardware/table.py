"""Latency lookup table: profile every distinct piece once, predict any subnet.

An elastic model cuts each subnet into latency units (``ElasticModel.latency_units``:
key, module, input shape; equal keys are equal pieces). :meth:`LatencyTable.build`
enumerates every key the space can produce, times each unit once, then measures a
few whole networks (the smallest, the largest and seeded random ones) and fits a
correction from the sum of unit latencies to the whole-network latency; the
correction model (``scale``: ``a*sum``; ``affine``: ``a*sum + b``; ``per_unit``:
``a*sum + c*units + b``) with the smallest leave-one-out relative error is kept.
Tables are JSON with their metadata (space, device, versions, settings) and can be
built on one machine and used on another; a table is refused for another space.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.elastic.base import ElasticModel
from hwnas.hardware.analytic import covering_archs, model_signature, unit_keys
from hwnas.hardware.base import CostModel
from hwnas.hardware.latency import check_setting, device_name, measure_latency, setting_label
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)

TABLE_FORMAT = "hwnas.latency_table/1"
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
            key: {"median_ms": ms, "input_shape": list(pieces[key][1])}
            for key, ms in unit_ms.items()
        }
        table = cls(_metadata(model, setting, correction_samples, seed, rounds), units)
        if corr_archs:
            names = [f"network {i + 1}/{len(corr_archs)}" for i in range(len(corr_archs))]
            nets = [
                (n, (model.export(a), tuple(model.input_shape)))
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
        table.meta["threads"] = table.meta["threads"] or torch.get_num_threads()
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
        space = target.space if isinstance(target, ElasticModel) else target
        fix = (
            "re-run `python -m hwnas.profile` for this space (same model and data config) "
            "or set hardware.table=null to build one automatically"
        )
        if self.meta.get("space_id") != space.id:
            raise ValueError(
                f"{source} was built for space {self.meta.get('space_name')!r} "
                f"(id {self.meta.get('space_id')}) but the model's space is {space.name!r} "
                f"(id {space.id}): {fix}"
            )
        built_for = self.meta.get("model_signature")
        if isinstance(target, ElasticModel) and built_for not in (None, model_signature(target)):
            raise ValueError(
                f"{source} was built for a {space.name!r} supernet with other layer sizes "
                f"(signature {built_for}, this model {model_signature(target)}): {fix}"
            )

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
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def load(
        cls, path: str | Path, expect: ElasticModel | SearchSpace | None = None
    ) -> LatencyTable:
        """Read a table; with ``expect`` (a model or a space), refuse one built for
        another (see :meth:`check`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"latency table {path} not found: build it with `python -m hwnas.profile "
                f"output={path}` or set hardware.table=null"
            )
        blob = json.loads(path.read_text())
        if not isinstance(blob, dict) or blob.get("format") != TABLE_FORMAT:
            raise ValueError(
                f"{path} is not a latency table ({TABLE_FORMAT}); rebuild it with "
                f"`python -m hwnas.profile`"
            )
        table = cls(dict(blob["meta"]), dict(blob["units"]), Correction(**blob["correction"]))
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


def _distinct_units(model: ElasticModel, rng: random.Random, extra: int = 16) -> dict:
    """key -> (module, input shape) for every unit key of the space."""
    pieces: dict[str, tuple] = {}
    for arch in covering_archs(model.space):
        for key, module, shape in model.latency_units(arch):
            pieces.setdefault(key, (module, tuple(shape)))
    covered = len(pieces)
    for _ in range(extra):  # safety net: random archs must not reveal new keys
        for key, module, shape in model.latency_units(model.space.sample(rng)):
            pieces.setdefault(key, (module, tuple(shape)))
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
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:  # pragma: no cover - optional at run time
        ort_version = None
    return {
        "space_id": model.space.id,
        "space_name": model.space.name,
        "model_signature": model_signature(model),
        "input_shape": list(model.input_shape),
        **setting,
        "device_name": device_name(setting["device"]),
        "torch_version": torch.__version__,
        "onnxruntime_version": ort_version,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rounds": rounds,
        "correction_samples": samples,
        "seed": seed,
    }
