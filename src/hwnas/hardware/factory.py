"""Build the cost model of a hardware target from its Hydra ``hardware`` config.

Analytic metrics (``params_m``, ``flops_m``, ``memory_mb``) are always reported;
``latency_ms`` comes from the method named by ``latency``:

- ``measured``: each arch's exported subnet is timed once (cached); ``table`` may name
  a run's ``measured_latency.json``, whose latencies are then replayed
  (:mod:`hwnas.hardware.measured`);
- ``table``: a :class:`~hwnas.hardware.table.LatencyTable` predicts it;
- ``flops``: a FLOPs-linear proxy ``a * flops_m + b``
  (:class:`~hwnas.hardware.flops.FlopsLine`) fitted on ``correction_samples``
  measured whole networks; with ``correction_samples: 0`` (and no ``table``) nothing
  is measured and ``latency_ms`` is omitted.

The table or line (a latency record, :mod:`hwnas.hardware.records`) is read from
``table`` when given: it may come from another machine (build on the target, use
anywhere), and a setting (device, backend, threads, batch size) other than the
config's is warned about. Else it is looked up in (or built once into) the cache
folder under a name made of space id, supernet signature and setting, and a cached
one measured on another setup (its fingerprint: machine, threads, versions...)
is rebuilt. ``cost_model.save_record(run_dir)`` keeps the record a run used, so
``hardware.table=<run_dir>/latency_table.json`` (``measured_latency.json`` with
``latency: measured``) reproduces its latencies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hwnas.core.types import Timing, to_plain
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.analytic import AnalyticCost, model_signature
from hwnas.hardware.base import CompositeCost, CostModel
from hwnas.hardware.flops import FlopsLatency, FlopsLine
from hwnas.hardware.int8 import PRECISIONS, timed_backend
from hwnas.hardware.latency import BACKENDS, DEVICES, EXPORTED, check_setting, setting_label
from hwnas.hardware.measured import RecordedLatency, load_measured
from hwnas.hardware.openvino import require_openvino
from hwnas.hardware.records import SETTING_KEYS, fingerprint, fingerprint_changes, resolved_threads
from hwnas.hardware.table import LatencyTable, TableLatency

log = logging.getLogger(__name__)

LATENCY_METHODS = ("measured", "table", "flops")


@dataclass(frozen=True)
class HardwareConfig(Timing):
    """A validated ``hardware`` config node (see ``conf/hardware/cpu.yaml``): how to time
    (:class:`~hwnas.core.types.Timing`) and how ``latency_ms`` is obtained."""

    name: str = "cpu"
    latency: str = "table"
    table: str | None = None
    correction_samples: int = 12
    # the precision a subnet deploys at: int8 times each subnet (or block) quantized
    # uniformly to INT8 on the backend (onnxruntime | openvino), hwnas.hardware.int8
    precision: str = "fp32"

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> HardwareConfig:
        """Validate ``cfg``; unknown keys or bad values raise a one-line ``ValueError``."""
        raw = to_plain(cfg)
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
        if hw.precision not in PRECISIONS:
            raise ValueError(
                f"hardware.precision={hw.precision!r}; choose one of {list(PRECISIONS)}"
            )
        if hw.precision == "int8" and hw.backend not in EXPORTED:
            raise ValueError(
                f"hardware.precision=int8 times INT8 models on onnxruntime or openvino, not "
                f"hardware.backend={hw.backend}; use hardware=onnxruntime or hardware=openvino"
            )
        if hw.backend == "openvino" and hw.device == "cpu" and hw.measures():
            require_openvino("hardware.backend")  # its fix names the full key
        try:
            check_setting(hw.device, hw.backend, hw.threads, hw.batch_size, hw.warmup,
                          hw.repeats, available=hw.measures())  # fmt: skip
        except ValueError as err:  # name the group the keys belong to
            raise ValueError(f"hardware.{err}") from None
        return hw

    def measures(self) -> bool:
        """Whether building the cost model may time networks here (a given ``table``
        or ``latency: flops`` with no samples needs no device)."""
        if self.latency == "measured":
            return True
        return self.table is None and (self.latency == "table" or self.correction_samples > 0)

    def measure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~hwnas.hardware.latency.measure_latency`."""
        return Timing(self.device, self.timed, self.threads, self.batch_size, self.warmup,
                      self.repeats).kwargs()  # fmt: skip

    @property
    def timed(self) -> str:
        """The backend as timed and recorded: ``openvino:int8`` for INT8 deployments."""
        return timed_backend(self.backend, self.precision)

    def setting(self) -> str:
        return setting_label(self.device, self.timed, self.threads, self.batch_size)


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
        f"-{hw.device}-{hw.timed.replace(':', '-')}-b{hw.batch_size}-t{threads}.json"
    )


def flops_cache_name(model: ElasticModel, hw: HardwareConfig) -> str:
    """File name of the cached FLOPs-latency line (setting and sample count in it)."""
    name = table_cache_name(model, hw).replace("latency_table", "flops_latency")
    return name.replace(".json", f"-n{hw.correction_samples}.json")


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


def build_flops_line(model: ElasticModel, hw: HardwareConfig, seed: int = 0) -> FlopsLine:
    """Fit the FLOPs-latency line of ``model``'s space with the settings of ``hw``."""
    return FlopsLine.build(
        model, correction_samples=hw.correction_samples, seed=seed, **hw.measure_kwargs()
    )


Record = LatencyTable | FlopsLine


def _given_record(load: Callable[..., Record], model: ElasticModel, hw: HardwareConfig) -> Record:
    """The record ``hw.table`` names: used wherever it was measured, with a warning for
    each setting that differs from the config."""
    record = load(hw.table, model)
    what = "latency table" if isinstance(record, LatencyTable) else "FLOPs-latency line"
    _check_given(record.meta, f"{what} {hw.table}", hw)
    return record


def _check_given(meta: Mapping[str, Any], source: str, hw: HardwareConfig) -> None:
    """Warn for each setting of the given record ``source`` (its ``meta``) that differs
    from the config; say so when it was measured on another machine."""
    now = {"device": hw.device, "backend": hw.timed, "threads": resolved_threads(hw.threads),
           "batch_size": hw.batch_size}  # fmt: skip
    for key in SETTING_KEYS:
        then = meta.get(key)
        if then != now[key]:
            shown = (
                f"null ({now[key]} here)" if key == "threads" and hw.threads is None else now[key]
            )
            log.warning(
                "%s was measured with %s=%s but hardware.%s=%s: its latencies are for %s=%s; "
                "rebuild it with this setting or set hardware.%s=%s",
                source, key, then, key, shown, key, then, key, then,
            )  # fmt: skip
    machine = fingerprint_changes(
        meta,
        fingerprint(hw.device, hw.timed, hw.threads, hw.batch_size),
        ("device_name", "torch_version", "onnxruntime_version", "openvino_version"),
    )
    if machine:
        log.info("%s was measured on another machine, used as given (%s)", source,
                 "; ".join(machine))  # fmt: skip


def _measured(model: ElasticModel, hw: HardwareConfig) -> RecordedLatency:
    """Measured latency; with ``hw.table`` (a run's ``measured_latency.json``) the
    recorded latencies are replayed and only archs missing from it are timed."""
    if hw.table is None:
        return RecordedLatency(model, **hw.measure_kwargs())
    replay, meta = load_measured(hw.table, model)
    source = f"measured-latency record {hw.table}"
    _check_given(meta, source, hw)
    log.info("%s: %d archs' latencies replayed, any other arch is timed", source, len(replay))
    return RecordedLatency(model, replay, str(hw.table), **hw.measure_kwargs())


def _cached_record(
    path: Path, load: Callable[..., Record], model: ElasticModel, hw: HardwareConfig
) -> Record | None:
    """The record cached at ``path`` if it is readable and was measured on this setup
    (same fingerprint); else ``None``, with the reason logged."""
    if not path.is_file():
        return None
    try:
        record = load(path, model)
    except ValueError as exc:
        log.warning("cached %s is unusable, rebuilding it: %s", path, exc)
        return None
    now = fingerprint(hw.device, hw.timed, hw.threads, hw.batch_size)
    changes = fingerprint_changes(record.meta, now)
    if changes:
        log.warning(
            "cached %s was measured on another setup (%s); rebuilding it here",
            path,
            "; ".join(changes),
        )
        return None
    log.info("latency record from cache %s", path)
    return record


def _record_for(model: ElasticModel, hw: HardwareConfig, cache_dir: str | Path | None) -> Record:
    """The table (``latency: table``) or line (``latency: flops``) the cost model uses."""
    table = hw.latency == "table"
    load = LatencyTable.load if table else FlopsLine.load
    if hw.table is not None:
        return _given_record(load, model, hw)
    name = table_cache_name(model, hw) if table else flops_cache_name(model, hw)
    path = Path(cache_dir) / name if cache_dir is not None else None
    if path is not None and (cached := _cached_record(path, load, model, hw)) is not None:
        return cached
    where = f"cached in {path}" if path else "not cached (no cache_dir)"
    if table:
        log.info(
            "profiling a latency table for space %s (%s) on %s; one-time, %s",
            model.space.name, model.space.id, hw.setting(), where,
        )  # fmt: skip
        record: Record = build_table(model, hw, _log_progress)
    else:
        log.info("fitting the FLOPs-latency line on %d networks (%s); %s",
                 hw.correction_samples, hw.setting(), where)  # fmt: skip
        record = build_flops_line(model, hw)
    if path is not None:
        record.save(path)
    return record


def build_cost_model(
    hw_cfg: Mapping[str, Any], model: ElasticModel, cache_dir: str | Path | None = None
) -> HardwareCost:
    """The cost model of the hardware target ``hw_cfg`` for ``model``'s space.

    Its ``save_record(folder)`` writes the latency table or line it predicts from to
    ``folder/latency_table.json``, or with ``latency: measured`` every arch's measured
    latency so far to ``folder/measured_latency.json`` (``None`` without latency);
    ``hardware.table=<that file>`` makes another run use the same latencies."""
    hw = HardwareConfig.from_mapping(hw_cfg)
    analytic = AnalyticCost(model, hw.batch_size)
    latency: CostModel | None
    if hw.latency == "measured":
        latency = _measured(model, hw)
    elif hw.latency == "table":
        latency = TableLatency(model, _record_for(model, hw, cache_dir))
    elif hw.table is not None or hw.correction_samples:
        latency = FlopsLatency(model, _record_for(model, hw, cache_dir))
    else:
        latency = None
    cost = HardwareCost(hw, analytic, latency)
    log.info("cost model: %s", cost.describe())
    return cost


def hardware_summary(hw_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The validated config as a plain dict (for reports)."""
    return asdict(HardwareConfig.from_mapping(hw_cfg))
