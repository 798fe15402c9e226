"""Process-wide run settings: CPU threads that degrade gracefully under load."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

__all__ = ["auto_threads", "available_cores", "busy_cores_now", "resolve_threads", "torch_threads"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot (``/proc/stat``), None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores_now(sample_s: float = 0.3) -> float | None:
    """How many cores other processes keep busy right now (this one sleeps while it
    samples ``/proc/stat`` over ``sample_s``); None where that cannot be read."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(sample_s)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def auto_threads() -> int:
    """Cores not already busy: the cores this process may use minus those busy right
    now (a short ``/proc/stat`` sample; where there is none, the one-minute load
    average), rounded, at least 1. The load average lags by minutes: just after an
    install or another run it counts cores that are idle again. Compute threads that
    outnumber the free cores spin against other processes and lose far more than the
    load explains."""
    cores = available_cores()
    busy = busy_cores_now()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average
            busy = 0.0
    return max(1, min(cores, cores - round(busy)))


def resolve_threads(setting: int | str) -> int:
    return auto_threads() if setting == "auto" else int(setting)

def process_rank(num_nodes: int = 1) -> int:
    """This process's global rank in a multi-process training: ``RANK`` (torchrun),
    ``SLURM_PROCID`` (SLURM), else ``NODE_RANK * (WORLD_SIZE / num_nodes) + LOCAL_RANK``
    as Lightning sets them for the processes it starts; 0 for a single process."""
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if env.get(key, "").isdigit():
            return int(env[key])
    local = int(env.get("LOCAL_RANK") or 0)
    node = int(env.get("NODE_RANK") or 0)
    # processes per node; before Lightning starts them (no WORLD_SIZE yet) at least 1,
    # so the first process of a node > 0 is never taken for rank zero
    per_node = int(env.get("WORLD_SIZE") or num_nodes) // max(1, num_nodes)
    return node * max(1, per_node) + local


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set PyTorch's intra-op thread count for the block, then restore it."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
