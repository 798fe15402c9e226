"""Process-wide run settings: CPU threads that degrade gracefully under load."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

__all__ = ["auto_threads", "available_cores", "resolve_threads", "torch_threads"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def auto_threads() -> int:
    """Cores not already busy: the cores this process may use minus the one-minute load
    average (rounded), at least 1. Compute threads that outnumber the free cores spin
    against other processes and lose far more than the load explains."""
    cores = available_cores()
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # pragma: no cover - no load average
        busy = 0
    return max(1, min(cores, cores - busy))


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
