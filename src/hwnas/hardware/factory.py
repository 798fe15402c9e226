"""Build the cost model of a hardware target from its Hydra ``hardware`` config.

Analytic metrics (``params_m``, ``flops_m``, ``memory_mb``) are always reported;
``latency_ms`` comes from the method named by ``latency``:

- ``measured``: each arch's exported subnet is timed once (cached);
- ``table``: a :class:`~hwnas.hardware.table.LatencyTable` predicts it; the table is
  read from ``table`` when given, else looked up in (or built once into) the cache
  folder under a name made of space id, device, backend, batch size and threads;
- ``flops``: a FLOPs-linear proxy ``a * flops_m + b`` fitted on
  ``correction_samples`` measured whole networks (no table); with
  ``correction_samples: 0`` nothing is measured and ``latency_ms`` is omitted.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from hwnas.elastic.base import ElasticModel
from hwnas.hardware.analytic import AnalyticCost
from hwnas.hardware.base import CompositeCost, CostModel
from hwnas.hardware.latency import (
    BACKENDS,
    DEVICES,
    MeasuredLatency,
    check_setting,
    measure_latency,
    setting_label,
)
from hwnas.hardware.table import (
    Correction,
    LatencyTable,
    TableLatency,
    correction_archs,
    fit_correction,
    model_signature,
)
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)

LATENCY_METHODS = ("measured", "table", "flops")


@dataclass(frozen=True)
class HardwareConfig:
    """A validated ``hardware`` config node (see ``conf/hardware/cpu.yaml``)."""

    name: str = "cpu"
    device: str = "cpu"
    backend: str = "torch"
    threads: int | None = 1
    batch_size: int = 1
    warmup: int = 5
    repeats: int = 20
    latency: str = "table"
    table: str | None = None
    correction_samples: int = 12

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> HardwareConfig:
        """Validate ``cfg``; unknown keys or bad values raise a one-line ``ValueError``."""
        raw = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown hardware config keys {unknown}; valid keys are {known}")
        for key in ("threads", "batch_size", "warmup", "repeats", "correction_samples"):
            value = raw.get(key, 0)
            if value is None and key == "threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"hardware.{key} must be an integer, got {value!r}")
        hw = cls(**raw)
        if hw.latency not in LATENCY_METHODS:
            raise ValueError(
                f"hardware.latency={hw.latency!r}; choose one of {list(LATENCY_METHODS)}"
            )
        if hw.device not in DEVICES or hw.backend not in BACKENDS:
            raise ValueError(
                f"hardware.device must be one of {list(DEVICES)} and hardware.backend "
                f"one of {list(BACKENDS)}; got {hw.device!r}, {hw.backend!r}"
            )
        least = 3 if hw.latency == "table" else 2
        if hw.correction_samples < 0 or 0 < hw.correction_samples < least:
            raise ValueError(
                f"hardware.correction_samples must be 0 (none) or >= {least} with "
                f"latency={hw.latency}, got {hw.correction_samples}"
            )
        if hw.latency != "table" and hw.table is not None:
            raise ValueError(
                "hardware.table is only read with latency=table; set hardware.table=null"
            )
        if hw.latency != "flops" or hw.correction_samples:
            check_setting(hw.device, hw.backend, hw.threads, hw.batch_size, hw.warmup, hw.repeats)
        return hw

    def measure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~hwnas.hardware.latency.measure_latency`."""
        return {
            "device": self.device,
            "backend": self.backend,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "repeats": self.repeats,
        }

    def setting(self) -> str:
        return setting_label(self.device, self.backend, self.threads, self.batch_size)


class FlopsLatency(CostModel):
    """``latency_ms = a * flops_m + b``, fitted (relative least squares) on measured
    whole networks: the smallest, the largest and seeded random archs."""

    name = "flops_latency"

    def __init__(
        self,
        model: ElasticModel,
        hw: HardwareConfig,
        seed: int = 0,
        cache: str | Path | None = None,
    ):
        super().__init__()
        self.model, self.hw = model, hw
        cache = Path(cache) if cache is not None else None
        if cache is not None and cache.is_file():  # same fit on a rerun: same search
            saved = json.loads(cache.read_text())
            self.fit = Correction(saved["kind"], saved["scale"], 0.0, saved["offset"])
            log.info("FLOPs-latency line from cache %s", cache)
            return
        archs = correction_archs(model.space, hw.correction_samples, random.Random(seed))
        flops = np.array([model.cost_of(a)["flops_m"] for a in archs], dtype=float)
        ms = np.array(
            [
                measure_latency(
                    model.export(a), tuple(model.input_shape), **hw.measure_kwargs()
                ).median_ms
                for a in archs
            ]
        )
        fit = fit_correction(flops, np.zeros_like(flops), ms)
        if fit.kind == "none":  # too few samples for leave-one-out: plain line through them
            slope, offset = np.polyfit(flops, ms, 1) if len(set(flops)) > 1 else (0.0, ms.mean())
            fit.kind, fit.scale, fit.offset = "affine", float(slope), float(offset)
        self.fit = fit
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"kind": fit.kind, "scale": fit.scale,
                                         "offset": fit.offset}))

    def _compute(self, arch: Arch) -> dict[str, float]:
        flops = self.model.cost_of(arch)["flops_m"]
        return {"latency_ms": max(self.fit.scale * flops + self.fit.offset, 1e-6)}

    def describe(self) -> str:
        return (
            f"latency: FLOPs-linear proxy ({self.fit.scale:.4g} ms/MFLOP + "
            f"{self.fit.offset:.4g} ms, fitted on {self.hw.correction_samples} networks "
            f"measured on {self.hw.setting()})"
        )


class HardwareCost(CompositeCost):
    """Analytic metrics plus the configured latency model; ``describe()`` names both."""

    name = "hardware"

    def __init__(self, hw: HardwareConfig, analytic: AnalyticCost, latency: CostModel | None):
        super().__init__([analytic] + ([latency] if latency is not None else []))
        self.hw, self.analytic, self.latency = hw, analytic, latency

    def describe(self) -> str:
        latency = self.latency.describe() if self.latency else "latency: not estimated"
        return f"{self.hw.name}: {self.analytic.describe()}; {latency}"


def table_cache_name(model: ElasticModel, hw: HardwareConfig) -> str:
    """File name of the cached table for this space, supernet and measurement setting."""
    threads = hw.threads if hw.threads is not None else "auto"
    return (
        f"latency_table-{model.space.name}-{model.space.id}-{model_signature(model)[:8]}"
        f"-{hw.device}-{hw.backend}-b{hw.batch_size}-t{threads}.json"
    )


def build_table(
    model: ElasticModel,
    hw: HardwareConfig,
    progress: Callable[[int, int, str], None] | None = None,
    seed: int = 0,
    rounds: int = 3,
) -> LatencyTable:
    """Profile a latency table for ``model``'s space with the settings of ``hw``."""
    return LatencyTable.build(
        model,
        correction_samples=hw.correction_samples,
        seed=seed,
        rounds=rounds,
        progress=progress,
        **hw.measure_kwargs(),
    )


def _log_progress(done: int, total: int, what: str) -> None:
    if done == total or done % max(1, total // 10) == 0:
        log.info("profiling latency table: %d/%d (%s)", done, total, what)


def _table_for(
    model: ElasticModel, hw: HardwareConfig, cache_dir: str | Path | None
) -> LatencyTable:
    if hw.table is not None:
        table = LatencyTable.load(hw.table, model)
        wanted = {"device": hw.device, "backend": hw.backend, "batch_size": hw.batch_size}
        for key, value in wanted.items():
            if table.meta.get(key) != value:
                log.warning(
                    "latency table %s was measured with %s=%s but hardware.%s=%s",
                    hw.table,
                    key,
                    table.meta.get(key),
                    key,
                    value,
                )
        return table
    path = Path(cache_dir) / table_cache_name(model, hw) if cache_dir is not None else None
    if path is not None and path.is_file():
        table = LatencyTable.load(path, model)
        log.info("latency table from cache %s", path)
        return table
    log.info(
        "profiling a latency table for space %s (%s) on %s; one-time, %s",
        model.space.name,
        model.space.id,
        hw.setting(),
        f"cached in {path}" if path else "not cached (no cache_dir)",
    )
    table = build_table(model, hw, _log_progress)
    if path is not None:
        table.save(path)
    return table


def build_cost_model(
    hw_cfg: Mapping[str, Any], model: ElasticModel, cache_dir: str | Path | None = None
) -> CostModel:
    """The cost model of the hardware target ``hw_cfg`` for ``model``'s space."""
    hw = HardwareConfig.from_mapping(hw_cfg)
    analytic = AnalyticCost(model, hw.batch_size)
    latency: CostModel | None
    if hw.latency == "measured":
        latency = MeasuredLatency(model, **hw.measure_kwargs())
    elif hw.latency == "table":
        latency = TableLatency(model, _table_for(model, hw, cache_dir))
    elif hw.correction_samples:
        cache = None
        if cache_dir is not None:
            name = table_cache_name(model, hw).replace("latency_table", "flops_latency")
            cache = Path(cache_dir) / name.replace(".json", f"-n{hw.correction_samples}.json")
        latency = FlopsLatency(model, hw, cache=cache)
    else:
        latency = None
    cost = HardwareCost(hw, analytic, latency)
    log.info("cost model: %s", cost.describe())
    return cost


def hardware_summary(hw_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The validated config as a plain dict (for reports)."""
    return asdict(HardwareConfig.from_mapping(hw_cfg))
