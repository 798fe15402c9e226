"""``python -m hwnas.export``: export points of a finished run's front, each with a model
card, without searching again.

    python -m hwnas.export run_dir=outputs/runs/<run> [pick=all] [output_dir=PATH]
                           [finetune=false] [KEY=VALUE ...]

``pick``: ``all`` (default), ``<k>`` (the k-th point by cost, 0 = fastest), ``fastest``,
``most_accurate``, or ``<cost><=<x>`` (the most accurate point within a budget, e.g.
``latency_ms<=2.5``, ``params_m<=1``). The subnets get the trained supernet's weights
with recalibrated batch norms; ``finetune=true`` fine-tunes each as the run's final stage
did (``final.*``). Results go to ``<run>/export/<pick>`` unless ``output_dir=`` says
elsewhere; an existing export is never overwritten. Other ``KEY=VALUE`` pairs override
the run's config (``threads=2``, ``final.epochs=1``, ``hardware.threads=1``). Exit 2 with
one ``error:`` line for input to fix.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from hwnas.app.config import load_run_config
from hwnas.app.errors import key_value_main

log = logging.getLogger("hwnas.export")
USAGE = "usage: python -m hwnas.export run_dir=PATH [pick=all] [output_dir=PATH] [finetune=false]"
_OWN = ("run_dir", "pick", "output_dir", "finetune")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return key_value_main(argv, __doc__, USAGE, _OWN, export_run)


def export_run(args: dict[str, str], rest: list[str]) -> int:
    import lightning.pytorch  # noqa: F401  (it sets its loggers' level when imported)

    from hwnas.app.checks import validate
    from hwnas.app.context import build_context
    from hwnas.app.device import stage_device
    from hwnas.app.export import export_points, pick_points, read_front
    from hwnas.app.stages.common import load_supernet
    from hwnas.app.stages.final import _finetune
    from hwnas.core.runtime import resolve_threads, torch_threads

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if "run_dir" not in args:
        raise ValueError(f"run_dir= is missing ({USAGE})")
    run = Path(args["run_dir"])
    # settings newer than the run (final.export, ...) get today's defaults
    cfg = load_run_config(run, rest, groups=("final", "quantize"))
    if not (run / "search" / "DONE.json").is_file():
        raise FileNotFoundError(
            f"{run / 'search' / 'DONE.json'} is missing: the run's search has not finished "
            "(resume the run with search in stages)"
        )
    finetune = args.get("finetune", "false").lower()
    if finetune not in ("true", "false"):
        raise ValueError(f"finetune={args['finetune']!r}: use true or false")
    pick = args.get("pick", "all")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", pick)
    out = Path(args.get("output_dir", run / "export" / name))
    if (out / "index.md").exists():
        raise FileExistsError(f"{out} already holds an export: remove it or pass output_dir=")
    cfg.paths.output_dir = str(run)
    validate(cfg)
    with torch_threads(resolve_threads(cfg.threads)):
        ctx = build_context(cfg)
        points = pick_points(read_front(run, ctx), pick)  # checked before anything is built
        load_supernet(ctx)
        stage_device(ctx, "export")
        cards = export_points(ctx, points, out, finetune=_finetune if finetune == "true" else None)
    print(f"exported {len(cards)} subnet(s) with model cards: {out / 'index.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
