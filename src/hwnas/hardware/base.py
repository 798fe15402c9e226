"""Cost models: map an arch to hardware costs (params, FLOPs, latency, memory)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from hwnas.spaces.base import Arch


class CostModel(ABC):
    """Maps an arch to ``{metric: value}`` with unit-suffixed keys (``latency_ms``...).

    Results are cached per arch; ``describe()`` says how the numbers were obtained
    (device, settings) for reports.
    """

    name: str = "cost"

    def __init__(self) -> None:
        self._cache: dict[Arch, dict[str, float]] = {}

    @abstractmethod
    def _compute(self, arch: Arch) -> dict[str, float]: ...

    def describe(self) -> str:
        return self.name

    def __call__(self, arch: Arch) -> dict[str, float]:
        if arch not in self._cache:
            self._cache[arch] = dict(self._compute(arch))
        return dict(self._cache[arch])

    def save_record(self, folder: str | Path) -> Path | None:
        """Write into ``folder`` what this model needs to give the same numbers again
        (a latency table, fitted line or the latencies measured so far, read back with
        ``hardware.table=<file>``) and return the file; ``None`` when there is nothing to
        record (analytic costs)."""
        return None


class CompositeCost(CostModel):
    """Merges the metrics of several cost models (later ones win on key clashes)."""

    name = "composite"

    def __init__(self, parts: Sequence[CostModel]):
        super().__init__()
        self.parts = list(parts)

    def _compute(self, arch: Arch) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts:
            out.update(p(arch))
        return out

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)

    def save_record(self, folder: str | Path) -> Path | None:
        """Every part's record; the last file written is returned (as later parts win)."""
        written = [p.save_record(folder) for p in self.parts]
        return next((p for p in reversed(written) if p is not None), None)
