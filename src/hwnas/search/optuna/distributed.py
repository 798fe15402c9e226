"""One Optuna search shared by many worker processes (NSGA-II and TPE).

Workers on one machine or many open the same Optuna study storage (a journal file, or
an RDB URL such as ``postgresql://...``) and ask it for trials. Optuna numbers trials
atomically, and that order decides everything, so no lock is needed:

- **Owner**: the arch of a trial is measured only by the lowest-numbered live
  (not failed) trial that suggested it. A later trial with the same arch is a
  duplicate: it is failed at once (Optuna then ignores it) and never measured. So no
  two workers measure the same arch, whenever they ask.
- **Budget**: the owners, in trial order, are the budget's slots; an owner past the
  first ``budget`` slots is failed without being measured.
- **Record**: an owner stores its raw metrics in the trial (user attribute
  ``hwnas.metrics``) as soon as it has them, before its value is told.
- **Reference**: a population-relative fitness (the DE-Score) is told against the
  first ``reference_size`` slots, read from the study once all of them are measured
  (a worker holds its trials until then, as the one-process search does).
- **Result**: when the first ``budget`` slots are measured, every worker reads the
  same records from the study, in trial order, and ranks them as the one-process
  search does (:meth:`~hwnas.search.base.Strategy.finalize`): every worker returns the
  same result, and so does a later run on the finished study (a replay that measures
  nothing).
- **Crashes**: a worker measuring a trial writes a heartbeat into it every
  ``heartbeat_s``; a trial silent for ``stale_s`` is failed by whichever worker sees
  it, and its slot is asked again. A restarted worker (same ``worker`` tag) fails its
  predecessor's unfinished trials at once and tells the measured ones it held. Clocks
  of the machines sharing a study should agree (NTP) to well within ``stale_s``.

Infeasible suggestions are told at once with their constraint violations, as in the
one-process search. Feasibility is recomputed by each worker from the cost model, which
must therefore be deterministic (a latency table or analytic costs).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hwnas.core.seeding import derive_seed
from hwnas.search.base import SearchProblem, infeasible_error
from hwnas.search.optuna.trials import _fail, _Heartbeat, _last_sign, _Snapshot
from hwnas.search.result import Evaluated, SearchResult
from hwnas.spaces.base import Arch

log = logging.getLogger(__name__)

METRICS = "hwnas.metrics"
WORKER = "hwnas.worker"
ALIVE = "hwnas.alive"
HEADER = "hwnas.header"


class StudyMismatchError(ValueError):
    """The study in the storage belongs to another search."""


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from ``spec``: an RDB URL (``postgresql://``, ``sqlite:///``,
    ``mysql://``; anything with ``://``) or a path to a journal file (created with its
    folder; safe for processes on one machine or on a shared file system)."""
    spec = str(spec)
    if "://" in spec:
        import sqlalchemy.exc

        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(spec)
            except ImportError as err:
                raise ValueError(
                    f"search storage {spec.split('://')[0]}:// needs its database driver "
                    f"({err}); install it (e.g. pip install psycopg2-binary for PostgreSQL)"
                ) from err
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # workers creating the schema at once: one wins, the others retry and
                # find it made
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    path = os.path.abspath(spec)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    journal = optuna.storages.journal
    backend = (
        journal.JournalFileBackend(path)
        if hasattr(journal, "JournalFileBackend")
        else optuna.storages.JournalFileStorage(path)  # pragma: no cover - optuna < 4
    )
    return optuna.storages.JournalStorage(backend)


def default_tag(worker: int | None) -> str:
    """``<host>:<worker>`` (a restarted worker with the same index recognises its
    predecessor's trials), or ``<host>:pid<pid>`` without an index."""
    host = socket.gethostname()
    return f"{host}:{worker}" if worker is not None else f"{host}:pid{os.getpid()}"


@dataclass
class SharedStudy:
    """Where and as whom a search joins a shared study.

    ``header`` identifies the search (title, seed, space, weights); a study created by
    another search is refused (:class:`StudyMismatchError`). ``worker`` (an index) seeds
    this worker's sampler and names it; 0 keeps the configured seed. ``parent_pid``:
    a worker started by another process stops when that process is gone.
    """

    storage: str
    study_name: str
    header: Mapping[str, Any] = field(default_factory=dict)
    worker: int | None = 0
    poll_s: float = 0.05
    heartbeat_s: float = 5.0
    stale_s: float = 60.0
    parent_pid: int | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return default_tag(self.worker)

    def sampler_seed(self, seed: int) -> int:
        if not self.worker:
            return seed
        return derive_seed(seed, "search worker", self.worker) % 2**32


class WorkerGone(RuntimeError):
    """The process that started this worker has exited."""


def _check_header(study: optuna.Study, shared: SharedStudy) -> None:
    header = dict(shared.header)
    recorded = study.user_attrs.get(HEADER)
    if recorded is None:
        study.set_user_attr(HEADER, header)
    elif recorded != header:
        raise StudyMismatchError(
            f"study {shared.study_name!r} in {shared.storage} belongs to another search "
            f"({recorded}); use another study name or storage, or delete that study"
        )


def run_shared(
    strategy: Any, problem: SearchProblem, total: int, shared: SharedStudy
) -> SearchResult:
    """Run ``strategy`` as one worker of the shared study (see the module doc)."""
    from hwnas.search.optuna.codec import (
        GeneCodec,
        _unseen_feasible,
        quiet_optuna,
        set_constraints,
        violations,
    )

    seed = problem.seed if strategy.seed is None else strategy.seed
    codec = GeneCodec(problem.space)
    n_params = len(codec.distributions)
    rng = random.Random(derive_seed(seed, "shared search", shared.tag))
    storage = open_storage(shared.storage)
    relative = strategy.metric is None and problem.objective.relative
    ref_size = min(strategy.reference_size or strategy.default_reference_size(), total)
    me = shared.tag
    stats = shared.stats
    stats.update(measured=0, duplicates=0, infeasible=0, over_budget=0, stale_failed=0)
    # measured, not yet told (the reference is incomplete): number -> (trial, arch, metrics)
    held: dict[int, tuple[optuna.trial.Trial | int, Arch, dict[str, float]]] = {}
    told_floor = [0.0]

    def snapshot() -> _Snapshot:
        while True:
            snap = _Snapshot(study.get_trials(deepcopy=False), codec.decode, problem, n_params)
            now = time.time()
            for t in snap.live + snap.unsettled:
                if now - _last_sign(t) > shared.stale_s and _fail(storage, t, "stale"):
                    stats["stale_failed"] += 1
            waiting = [t for t in snap.unsettled if now - _last_sign(t) <= shared.stale_s]
            if not waiting:
                return snap
            time.sleep(shared.poll_s / 5)

    def check_parent() -> None:
        if shared.parent_pid is not None and os.getppid() != shared.parent_pid:
            raise WorkerGone(f"worker {me}: the process that started it has exited")

    def value(arch: Arch, metrics: dict[str, float], reference) -> list[float]:
        record = Evaluated(arch, metrics, problem.cost_model(arch))
        return strategy.values(strategy._value(problem, record, reference), record.costs)

    def tell_held(reference) -> None:
        for number, (trial, arch, metrics) in list(held.items()):
            told = value(arch, metrics, reference)
            told_floor[0] = min(told_floor[0], told[0])
            try:
                study.tell(trial, told)
            except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile
                log.info("trial %d was failed as stale before its value was told", number)
            del held[number]

    with quiet_optuna():
        study = optuna.create_study(
            storage=storage,
            study_name=shared.study_name,
            directions=list(strategy.directions),
            sampler=strategy.sampler(shared.sampler_seed(seed)),
            load_if_exists=True,
        )
        strategy.study = study
        _check_header(study, shared)
        # a predecessor of this worker (killed): its unmeasured trials are failed now,
        # its measured but untold ones are told once the reference is known
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(WORKER) != me:
                continue
            if t.user_attrs.get(METRICS) is None or len(t.params) < n_params:
                _fail(storage, t, "left unfinished by this worker's previous run")
            else:
                metrics = {k: float(v) for k, v in t.user_attrs[METRICS].items()}
                held[t.number] = (t.number, codec.decode(t.params), metrics)
        misses, stopped = 0, False
        with _Heartbeat(storage, shared.heartbeat_s) as heart:
            while True:
                check_parent()
                snap = snapshot()
                reference = snap.reference(ref_size) if relative else []
                if reference is not None and held:
                    tell_held(reference)
                if problem.progress:
                    problem.progress(len(snap.measured(total)), total)
                first = snap.slots[:total]
                if len(first) >= total or stopped:
                    # the budget is claimed (or this worker found nothing new): wait for
                    # the measurements still in flight, then every worker reads the same
                    if all(s.metrics is not None for s in first) and (
                        len(first) >= total or not snap.live
                    ):
                        break
                    time.sleep(shared.poll_s)
                    continue
                trial = study.ask(codec.distributions)
                storage.set_trial_user_attr(trial._trial_id, WORKER, me)
                arch = codec.decode(trial.params)
                costs = problem.cost_model(arch)
                amounts = violations(problem.constraints, costs)
                set_constraints(trial, amounts)
                if any(v > 0 for v in amounts.values()):
                    study.tell(trial, strategy.values(told_floor[0] - 1.0, costs))
                    stats["infeasible"] += 1
                    misses += 1
                else:
                    snap = snapshot()
                    slot = snap.owner.get(arch)
                    if slot is None or slot.trial.number != trial.number:
                        study.tell(trial, state=TrialState.FAIL)  # another trial owns it
                        stats["duplicates"] += 1
                        misses += 1
                    elif snap.slots.index(slot) >= total:
                        study.tell(trial, state=TrialState.FAIL)
                        stats["over_budget"] += 1
                    else:
                        with heart.watching(trial._trial_id):
                            (metrics,) = problem.objective.measure([arch])
                        metrics = {k: float(v) for k, v in metrics.items()}
                        try:
                            trial.set_user_attr(METRICS, metrics)
                        except optuna.exceptions.UpdateFinishedTrialError:
                            log.warning("trial %d was failed as stale meanwhile", trial.number)
                            continue
                        stats["measured"] += 1
                        misses = 0
                        held[trial.number] = (trial, arch, metrics)
                if misses >= strategy.max_tries:
                    fresh = _unseen_feasible(problem, rng, snap.owner, strategy.max_tries * 20)
                    if fresh is None:
                        log.info("%s: no unseen feasible arch left", strategy.name)
                        stopped = True
                    else:
                        study.enqueue_trial(codec.encode(fresh))
                    misses = 0
            if held:  # stopped short of the reference: it is what was measured
                reference = snap.reference(min(ref_size, len(snap.slots[:total])))
                tell_held(reference or [])
    if problem.progress:
        problem.progress(len(snap.measured(total)), total)
    return _result(strategy, problem, snap, total)


def _result(
    strategy: Any, problem: SearchProblem, snap: _Snapshot, total: int
) -> SearchResult:
    """The same result in every worker: the study's records in trial order."""
    slots = [s for s in snap.slots[:total] if s.metrics is not None]
    if not slots:
        raise infeasible_error(problem)
    entries: list[tuple[int, Evaluated]] = []
    for i, s in enumerate(slots):
        costs = problem.cost_model(s.arch)
        record = Evaluated(s.arch, dict(s.metrics or {}), costs, iteration=strategy.iteration(i))
        entries.append((s.trial.number, record))
    numbers = [s.trial.number for s in slots]
    for t, arch in snap.infeasible:
        it = strategy.iteration(sum(1 for n in numbers if n < t.number))
        costs = problem.cost_model(arch)
        entries.append((t.number, Evaluated(arch, {}, costs, math.nan, it, feasible=False)))
    entries.sort(key=lambda e: e[0])
    history = [e for _, e in entries]
    measured = [e for e in history if e.feasible]
    result = strategy.finalize(strategy.name, problem, measured, strategy.top_k)
    result.history = history
    return result
