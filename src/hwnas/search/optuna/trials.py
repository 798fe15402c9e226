"""The trials of a shared study as the workers see them: a snapshot of their states,
the heartbeat that marks a worker alive, and failing the trials of a worker gone stale."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hwnas.search.base import SearchProblem
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)

METRICS = "hwnas.metrics"
WORKER = "hwnas.worker"
ALIVE = "hwnas.alive"
HEADER = "hwnas.header"


@dataclass
class _Slot:
    trial: FrozenTrial
    arch: Arch
    metrics: dict[str, float] | None


class _Snapshot:
    """The study as one worker reads it: owners (slots), duplicates, infeasible ones."""

    def __init__(self, trials: list[FrozenTrial], decode, problem: SearchProblem, n_params: int):
        self.slots: list[_Slot] = []
        self.owner: dict[Arch, _Slot] = {}
        self.infeasible: list[tuple[FrozenTrial, Arch]] = []
        self.unsettled: list[FrozenTrial] = []  # asked, params still being written
        self.live: list[FrozenTrial] = []
        seen_bad: set[Arch] = set()
        for t in sorted(trials, key=lambda t: t.number):
            if t.state == TrialState.FAIL:
                continue
            if len(t.params) < n_params:
                if t.state == TrialState.RUNNING:
                    self.unsettled.append(t)
                continue
            arch = decode(t.params)
            if not problem.feasible(arch):
                if arch not in seen_bad:
                    seen_bad.add(arch)
                    self.infeasible.append((t, arch))
                continue
            if arch in self.owner:
                continue
            raw = t.user_attrs.get(METRICS)
            metrics = {k: float(v) for k, v in raw.items()} if raw is not None else None
            slot = _Slot(t, arch, metrics)
            self.owner[arch] = slot
            self.slots.append(slot)
            if metrics is None and t.state == TrialState.RUNNING:
                self.live.append(t)

    def measured(self, budget: int) -> list[_Slot]:
        return [s for s in self.slots[:budget] if s.metrics is not None]

    def reference(self, size: int) -> list[dict[str, float]] | None:
        first = self.slots[:size]
        if len(first) < size or any(s.metrics is None for s in first):
            return None
        return [s.metrics for s in first]  # type: ignore[misc]


class _Heartbeat:
    """Writes ``hwnas.alive`` = now into the trials being measured, every ``interval``."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hwnas-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def watching(self, trial_id: int) -> Iterator[None]:
        with self._lock:
            self.trial_ids.add(trial_id)
        try:
            yield
        finally:
            with self._lock:
                self.trial_ids.discard(trial_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.set_trial_user_attr(trial_id, ALIVE, time.time())
                except Exception:  # finished meanwhile (or failed as stale): nothing to do
                    pass


def _last_sign(t: FrozenTrial) -> float:
    alive = t.user_attrs.get(ALIVE)
    start = t.datetime_start.timestamp() if t.datetime_start else time.time()
    return max(float(alive), start) if alive is not None else start


def _fail(storage: optuna.storages.BaseStorage, t: FrozenTrial, why: str) -> bool:
    try:
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    except Exception:  # someone finished or failed it first
        return False
    log.info("trial %d (%s) failed: %s", t.number, t.user_attrs.get(WORKER, "?"), why)
    return True
