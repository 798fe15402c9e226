"""Journal of a search's evaluations, replayed when a killed run resumes.

Every strategy reaches its objective only through ``objective.measure(archs)``, and
given the same measurements it takes the same decisions from its seed. So
:class:`JournaledObjective` wraps the objective: each arch it measures is appended to a
JSON-lines journal in the stage folder (one line per arch: metrics, costs, proxy
failures; flushed and fsynced before the search goes on), and a resumed run reads the
journal back as a cache. The strategy, re-run from its seed, then walks the same path
without measuring the journaled archs again: at most the arch that was being measured
when the run died is measured twice, and the result equals an uninterrupted run's.

The journal's first line is a header: the search's title, seed, space and a digest of
the weights it scores. A journal whose header differs (another supernet state, another
space) is stale: it is set aside as ``<name>.stale`` with a warning and the search
starts afresh.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.core.atomic import append_jsonl, corrupt, read_jsonl
from hwnas.hardware.base import CostModel
from hwnas.search.base import Objective
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)

JOURNAL_NAME = "evaluations.jsonl"
_KIND = "hwnas search journal"


def weights_digest(module: torch.nn.Module) -> str:
    """A short hash of a module's state (names, shapes, dtypes and values)."""
    h = hashlib.blake2b(digest_size=10)
    for name, value in module.state_dict().items():
        h.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def journal_header(title: str, seed: int, space: SearchSpace, **extra: Any) -> dict[str, Any]:
    """What identifies one search: a journal with another header is not replayed."""
    return {"journal": _KIND, "search": title, "seed": int(seed), "space": space.id, **extra}


class JournaledObjective(Objective):
    """``inner`` with every measurement journaled to ``path`` and journaled ones replayed.

    Fitness, names and cost terms are ``inner``'s. Measured metrics are stored and
    returned as Python floats, fresh or replayed alike, so a resumed search computes
    with exactly the values an uninterrupted one did. ``replayed`` / ``measured`` count
    the archs taken from the journal / measured by this run.
    """

    def __init__(
        self,
        inner: Objective,
        path: str | Path,
        header: Mapping[str, Any],
        cost_model: CostModel | None = None,
    ):
        self.inner, self.path, self.cost_model = inner, Path(path), cost_model
        self.name, self.relative = inner.name, inner.relative
        self.header = dict(header)
        self.replayed = self.measured = 0
        self._records: dict[Arch, dict[str, Any]] = {}
        self._used: set[Arch] = set()
        fix = f"delete {self.path} and rerun to redo that search from its start"
        records = read_jsonl(self.path, fix=fix) if self.path.is_file() else []
        if records and records[0] != self.header:
            stale = self.path.with_name(self.path.name + ".stale")
            log.warning(
                "%s belongs to another search (%s); moved to %s, the search starts afresh",
                self.path,
                records[0],
                stale.name,
            )
            self.path.replace(stale)
            records = []
        # the header is written with the first evaluation: a search that never runs
        # (a phase with no feasible arch) leaves no folder behind
        self._header_written = bool(records)
        for number, record in enumerate(records[1:], start=2):
            try:
                metrics = {k: float(v) for k, v in record["metrics"].items()}
                self._records[Arch(record["arch"])] = {**record, "metrics": metrics}
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                reason = f"line {number}: not an evaluation ({err!r})"
                raise corrupt(self.path, reason, fix) from err
        if len(records) > 1:
            log.info("%s: %d evaluations journaled, replayed", self.path, len(records) - 1)

    @property
    def cost_terms(self) -> frozenset[str]:  # type: ignore[override]
        return self.inner.cost_terms

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            record = self._records.get(arch)
            if record is None:
                record = self._measure(arch)
            elif arch not in self._used:
                self.replayed += 1
                failures = getattr(self.inner, "failures", None)
                if isinstance(failures, Counter):  # counted as a fresh measurement would
                    failures.update(record.get("failures", {}))
            self._used.add(arch)
            out.append(dict(record["metrics"]))
        return out

    def _measure(self, arch: Arch) -> dict[str, Any]:
        failures = getattr(self.inner, "failures", None)
        before = Counter(failures) if isinstance(failures, Counter) else Counter()
        (metrics,) = self.inner.measure([arch])
        after = Counter(failures) if isinstance(failures, Counter) else Counter()
        record = {
            "arch": arch.to_dict(),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "costs": (
                {k: float(v) for k, v in self.cost_model(arch).items()} if self.cost_model else {}
            ),
            "failures": dict(after - before),
        }
        if not self._header_written:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.path, self.header)
            self._header_written = True
        append_jsonl(self.path, record)
        self._records[arch] = record
        self.measured += 1
        return record

    def fitness(self, metrics: Sequence[dict[str, float]]) -> np.ndarray:
        return self.inner.fitness(metrics)

    def stable_fitness(
        self,
        reference: Sequence[dict[str, float]],
        metrics: Sequence[dict[str, float]],
        exclude_costs: Collection[str] = (),
    ) -> np.ndarray:
        return self.inner.stable_fitness(reference, metrics, exclude_costs)
