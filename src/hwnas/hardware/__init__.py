"""Hardware cost models: analytic params/FLOPs/memory, measured latency, lookup tables.

:func:`build_cost_model` turns a Hydra ``hardware`` config into one cost model;
:func:`measure_latency` times any module with the same settings (final reports).
"""

from hwnas.hardware.analytic import AnalyticCost
from hwnas.hardware.base import CompositeCost, CostModel
from hwnas.hardware.constraints import KNOWN_METRICS, Constraints, InfeasibleError
from hwnas.hardware.factory import (
    LATENCY_METHODS,
    FlopsLatency,
    HardwareConfig,
    HardwareCost,
    build_cost_model,
    build_table,
    table_cache_name,
)
from hwnas.hardware.latency import LatencyStats, MeasuredLatency, measure_latency
from hwnas.hardware.table import LatencyTable, TableLatency

__all__ = [
    "KNOWN_METRICS",
    "LATENCY_METHODS",
    "AnalyticCost",
    "CompositeCost",
    "Constraints",
    "CostModel",
    "FlopsLatency",
    "HardwareConfig",
    "HardwareCost",
    "InfeasibleError",
    "LatencyStats",
    "LatencyTable",
    "MeasuredLatency",
    "TableLatency",
    "build_cost_model",
    "build_table",
    "measure_latency",
    "table_cache_name",
]
