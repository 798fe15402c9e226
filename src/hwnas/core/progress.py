"""Progress on long work: rich bars on a terminal, steady log lines elsewhere.

When the output is a file, a CI log or a scheduler's spool, a bar shows nothing for
minutes; ``mode="log"`` (chosen by ``"auto"`` when stdout is not a terminal) logs a line
with count, rate and ETA at most every ``interval_s`` seconds, and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("hwnas.core.progress")

ProgressFn = Callable[[int, int], None]
MODES = ("auto", "bar", "log")


def use_bars(mode: str) -> bool:
    """Whether ``mode`` shows rich bars (``auto``: only when stdout is a terminal)."""
    if mode not in MODES:
        raise ValueError(f"progress={mode!r}: choose one of {list(MODES)}")
    return mode == "bar" or (mode == "auto" and sys.stdout.isatty())


class IntervalLogger:
    """``update(done, total)`` logging ``description: done/total, rate, eta`` at most
    every ``interval_s`` seconds (the first and last updates always)."""

    def __init__(self, description: str, interval_s: float = 30.0, total: int | None = None):
        self.description, self.interval_s, self.total = description, interval_s, total
        self.start = time.monotonic()
        self.last = -float("inf")

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and done > 1 and now - self.last < self.interval_s:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", eta {(total - done) / rate:.0f} s" if total and rate > 0 and not final else ""
        of = f"/{total}" if total else ""
        log.info(
            "%s: %d%s done in %.0f s (%.2f/s%s)", self.description, done, of, elapsed, rate, eta
        )


@contextmanager
def progress_bar(
    description: str, total: int | None = None, mode: str = "auto", interval_s: float = 30.0
) -> Iterator[ProgressFn]:
    """Yield ``update(done, total)``: a bar with count, elapsed and ETA on a terminal,
    else interval log lines (see the module doc)."""
    if not use_bars(mode):
        yield IntervalLogger(description, interval_s, total)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            bar.update(task, completed=done, total=new_total or total)

        yield update
