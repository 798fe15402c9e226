"""The pipeline stages, one module each; every stage's ``run(ctx)`` takes the run
:class:`~hwnas.app.context.Context` and returns a summary (JSON-serialisable, with a
``metrics`` dict) after writing its artifacts under ``<run>/<stage>/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwnas.app.context import Context
from hwnas.app.stages import final, quantize, search, supernet, zero_shot

Stage = Callable[[Context], dict[str, Any]]

STEPS: dict[str, Stage] = {
    "zero_shot": zero_shot.run,
    "supernet": supernet.run,
    "search": search.run,
    "final": final.run,
    "quantize": quantize.quantize,
}

__all__ = ["STEPS", "Stage"]
