"""Worker processes for the pipeline's searches (stages ``zero_shot`` and ``search``).

``<stage>.workers: N`` runs a stage's search as N processes sharing one Optuna study
(:mod:`hwnas.search.optuna.distributed`): the stage's own process is worker 0 and starts
workers 1..N-1 on this machine, each ``python -m hwnas.app.search_worker`` on the run
folder; its log is ``<stage>/worker<i>.log``. ``<stage>.storage`` names the study's
storage: a journal file (default ``<stage>/study.journal``) or an RDB URL
(``postgresql://user@host/db``). Workers on other machines join the same study with::

    python -m hwnas.app.search_worker run_dir=/shared/run stage=zero_shot worker=7

(the run folder on a shared file system, the storage reachable from there, a worker
index unique per study). Only worker 0, the pipeline, writes the stage's artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.search.base import Strategy
from hwnas.search.optuna.base import OptunaStrategy
from hwnas.search.optuna.distributed import SharedStudy

log = logging.getLogger(__name__)

SEARCH_STAGES = ("zero_shot", "search")


@dataclass(frozen=True)
class Sharing:
    """How a stage's search is shared: ``workers`` processes on this machine, an Optuna
    ``storage`` (default: a journal file in the stage folder) and a ``study_name``
    (default: derived from the search's identity)."""

    workers: int = 1
    storage: str | None = None
    study_name: str | None = None

    @property
    def shared(self) -> bool:
        return self.workers > 1 or self.storage is not None


def wants_sharing(node: Sharing) -> bool:
    """Whether a stage's search is shared (several workers or a storage)."""
    return node.shared


def check_sharing(node: Sharing, key: str, strategy: Strategy) -> None:
    """One-line ``ValueError`` for a shared search with a strategy that cannot share."""
    workers = node.workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"{key}.workers={workers!r} must be an integer >= 1")
    if wants_sharing(node) and not isinstance(strategy, OptunaStrategy):
        raise ValueError(
            f"{key}.workers / {key}.storage share the search through an Optuna study: "
            f"use {key}/strategy=tpe or nsga2 ({strategy.name} runs in one process)"
        )


def storage_of(node: Sharing, folder: Path) -> str:
    return str(node.storage) if node.storage is not None else str(folder / "study.journal")


def shared_study(
    node: Sharing,
    folder: Path,
    header: dict[str, Any],
    worker: int | None,
    parent_pid: int | None = None,
) -> SharedStudy:
    """The study a stage's workers share; its name is the configured ``study_name`` or
    one derived from ``header`` (the search's identity), so a resumed run rejoins it."""
    name = node.study_name
    if name is None:
        digest = hashlib.blake2b(json.dumps(header, sort_keys=True).encode(), digest_size=6)
        name = f"hwnas-{header.get('search', 'search')}-{digest.hexdigest()}".replace(" ", "_")
    return SharedStudy(storage_of(node, folder), str(name), header, worker, parent_pid=parent_pid)


def start_workers(run_dir: Path, stage: str, folder: Path, n: int, threads: int) -> list:
    """Start workers 1..n-1 of ``stage`` on this machine (logs ``worker<i>.log``)."""
    procs = []
    for i in range(1, n):
        logfile = open(folder / f"worker{i}.log", "ab")  # noqa: SIM115  (the child owns it)
        cmd = [
            sys.executable, "-m", "hwnas.app.search_worker", f"run_dir={run_dir}",
            f"stage={stage}", f"worker={i}", f"threads={threads}", f"parent={os.getpid()}",
        ]  # fmt: skip
        procs.append((i, subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)))
        logfile.close()
    log.info("%s: started %d more search workers (logs %s/worker<i>.log)", stage, n - 1, folder)
    return procs


def finish_workers(procs: list, folder: Path, timeout_s: float = 600.0) -> None:
    """Wait for the started workers (they stop once the budget is measured); a worker
    that failed is reported with its log (the search is complete without it)."""
    for i, proc in procs:
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            where = folder / f"worker{i}.log"
            log.warning("search worker %d exited with %s: see %s", i, code, where)
