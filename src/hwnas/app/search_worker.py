"""``python -m hwnas.app.search_worker run_dir=PATH stage=zero_shot|search [worker=I]``:
join the shared search of a run's stage (see :mod:`hwnas.search.optuna.workers`).

Reads the run's resolved config (``<run_dir>/hwnas_config.yaml``), builds its data,
supernet and cost model (for ``stage=search`` the trained ``supernet/supernet.pt``) and
measures candidates of the stage's study until its budget is measured; writes nothing
but the study. Optional: ``threads=N`` (default: the run's), ``parent=PID`` (stop when
that process exits; set by the pipeline for the workers it starts). Exit codes as
``python -m hwnas``: 2 with one ``error:`` line for a mistake a user can fix.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

USAGE = "usage: python -m hwnas.app.search_worker run_dir=PATH stage=zero_shot|search [worker=I]"
KEYS = ("run_dir", "stage", "worker", "threads", "parent")


def parse(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"unknown argument {item!r}; {USAGE}")
        args[key] = value
    missing = [k for k in ("run_dir", "stage") if k not in args]
    if missing:
        raise ValueError(f"missing {missing}; {USAGE}")
    if args["stage"] not in ("zero_shot", "search"):
        raise ValueError(f"stage={args['stage']!r}: workers join zero_shot or search")
    for key in ("worker", "threads", "parent"):
        if key in args and not args[key].isdigit():
            raise ValueError(f"{key}={args[key]!r} must be a non-negative integer")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    from pathlib import Path

    from omegaconf import OmegaConf

    from hwnas.app.checks import validate
    from hwnas.app.context import build_context
    from hwnas.app.pipeline import CONFIG_FILE
    from hwnas.app.stages.workers import work
    from hwnas.core.runtime import resolve_threads, torch_threads
    from hwnas.search.optuna.distributed import WorkerGone

    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        run_dir = Path(args["run_dir"])
        path = run_dir / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: start the run first (python -m hwnas ...), then point "
                f"run_dir at its output folder"
            )
        cfg = OmegaConf.load(path)
        cfg.paths.output_dir = str(run_dir)
        validate(cfg)
        threads = int(args["threads"]) if "threads" in args else resolve_threads(cfg.threads)
        worker = int(args["worker"]) if "worker" in args else None
        parent = int(args["parent"]) if "parent" in args else None
        with torch_threads(threads):
            ctx = build_context(cfg)
            stats = work(ctx, args["stage"], worker, parent)
    except WorkerGone as err:
        logging.getLogger("hwnas").warning("%s; stopping", err)
        return 0
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.getLogger("hwnas").info("worker done: %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
