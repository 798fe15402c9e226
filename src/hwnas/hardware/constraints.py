"""Hard constraints on hardware costs: min/max windows per metric."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Metric keys use their unit as suffix so configs read unambiguously (size_mb: a
# deployed model file, as stage `quantize` measures it).
KNOWN_METRICS = ("params_m", "flops_m", "latency_ms", "memory_mb", "size_mb")


class InfeasibleError(RuntimeError):
    """No architecture of the space can satisfy the constraints."""


@dataclass(frozen=True)
class Constraints:
    """``windows[metric] = (low, high)``; ``None`` leaves that side open."""

    windows: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, (lo, hi) in self.windows.items():
            if key not in KNOWN_METRICS:
                raise ValueError(
                    f"unknown constraint metric {key!r}; use one of {list(KNOWN_METRICS)}"
                )
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"constraint {key}: min {lo} is above max {hi}")

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> Constraints:
        """Build from ``{params_m: {min: .., max: ..}, latency_ms: {max: ..}}``; a bare
        number means a maximum."""
        windows: dict[str, tuple[float | None, float | None]] = {}
        for key, spec in (cfg or {}).items():
            if spec is None:
                continue
            if isinstance(spec, (int, float)):
                windows[key] = (None, float(spec))
                continue
            unknown = set(spec) - {"min", "max"}
            if unknown:
                raise ValueError(f"constraint {key}: unknown keys {sorted(unknown)}; use min/max")
            lo, hi = spec.get("min"), spec.get("max")
            if lo is None and hi is None:
                continue
            windows[key] = (None if lo is None else float(lo), None if hi is None else float(hi))
        return cls(windows)

    @property
    def metrics(self) -> list[str]:
        return list(self.windows)

    def violations(self, costs: Mapping[str, float]) -> list[str]:
        out = []
        for key, (lo, hi) in self.windows.items():
            if key not in costs:
                raise KeyError(f"constraint on {key!r} but the cost model does not report it")
            v = costs[key]
            if lo is not None and v < lo:
                out.append(f"{key}={v:.4g} < min {lo:.4g}")
            if hi is not None and v > hi:
                out.append(f"{key}={v:.4g} > max {hi:.4g}")
        return out

    def feasible(self, costs: Mapping[str, float]) -> bool:
        return not self.violations(costs)

    def describe(self) -> str:
        parts = []
        for key, (lo, hi) in self.windows.items():
            low = "" if lo is None else f"{lo:g} <= "
            high = "" if hi is None else f" <= {hi:g}"
            parts.append(f"{low}{key}{high}")
        return ", ".join(parts) or "none"
