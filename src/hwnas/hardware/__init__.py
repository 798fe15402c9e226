"""Hardware cost models: analytic params/FLOPs/memory, measured latency, lookup tables.

:func:`build_cost_model` turns a Hydra ``hardware`` config into one cost model, whose
``save_record(folder)`` keeps the latency table or FLOPs line it used (reloaded with
``hardware.table=<folder>/latency_table.json``) or, with measured latency, every arch's
latency (``measured_latency.json``, replayed the same way); :func:`measure_latency` times any
module with the same settings (final reports).
"""

from hwnas.hardware.analytic import AnalyticCost
from hwnas.hardware.base import CompositeCost, CostModel
from hwnas.hardware.constraints import KNOWN_METRICS, Constraints, InfeasibleError
from hwnas.hardware.factory import (
    LATENCY_METHODS,
    HardwareConfig,
    HardwareCost,
    build_cost_model,
    build_flops_line,
    build_table,
    table_cache_name,
)
from hwnas.hardware.flops import FlopsLatency, FlopsLine
from hwnas.hardware.latency import LatencyStats, MeasuredLatency, measure_latency
from hwnas.hardware.measured import RecordedLatency, load_measured
from hwnas.hardware.records import MEASURED_NAME, RECORD_NAME
from hwnas.hardware.table import LatencyTable, TableLatency

__all__ = [
    "KNOWN_METRICS",
    "LATENCY_METHODS",
    "MEASURED_NAME",
    "RECORD_NAME",
    "AnalyticCost",
    "CompositeCost",
    "Constraints",
    "CostModel",
    "FlopsLatency",
    "FlopsLine",
    "HardwareConfig",
    "HardwareCost",
    "InfeasibleError",
    "LatencyStats",
    "LatencyTable",
    "MeasuredLatency",
    "RecordedLatency",
    "TableLatency",
    "build_cost_model",
    "build_flops_line",
    "build_table",
    "load_measured",
    "measure_latency",
    "table_cache_name",
]
