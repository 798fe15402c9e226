"""``python -m hwnas``: the whole pipeline under Hydra (config in ``conf/``);
``python -m hwnas reproduce RUN_DIR ...`` reruns a finished run and compares the two
(:mod:`hwnas.app.reproduce`).

Exit codes: 0 success; 2 a configuration a user must fix (one ``error:`` line on
stderr, Hydra's own composition errors included); 1 a bug (with its traceback).
In a multirun sweep a failing job is reported and the others still run; the sweep
exits 2 at the end, listing the failed jobs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from hwnas.app.config import config_dir
from hwnas.app.errors import precheck
from hwnas.hardware.constraints import InfeasibleError  # noqa: E402

log = logging.getLogger("hwnas")

# Errors a user can fix from the command line; anything else is a bug and keeps its
# traceback. HWNAS_DEBUG=1 shows tracebacks for these too.
USER_ERRORS = (ValueError, FileNotFoundError, InfeasibleError)
USER_ERROR_EXIT = 2

_state: dict[str, object] = {"started": False, "failed": []}


def _objective(metrics: dict[str, float]) -> float:
    """The optimised metric for sweepers: the deployed subnet's test metric when the
    final stage ran (``final/test_<metric>``), else the chosen subnet's validation
    metric, the largest subnet's supernet metric, or the best DE-Score."""
    candidates = (
        (k for k in metrics if k.startswith("final/test_")),
        (k for k in metrics if k.startswith("search/val_")),
        (k for k in metrics if k.startswith("supernet/") and k.endswith("_largest")),
        (k for k in ("zero_shot/best_descore",) if k in metrics),
    )
    for keys in candidates:
        key = next(keys, None)
        if key is not None:
            return metrics[key]
    return float("nan")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hwnas.app.pipeline import run

    _state["started"] = True
    hc = HydraConfig.get()
    try:
        return _objective(run(cfg))
    except USER_ERRORS as err:
        if os.environ.get("HWNAS_DEBUG"):
            raise
        if hc.mode == RunMode.MULTIRUN:
            job = f"job {hc.job.num} ({' '.join(hc.overrides.task) or 'no overrides'})"
            log.error("%s failed: %s", job, err)
            _state["failed"].append(f"{job}: {err}")  # type: ignore[union-attr]
            return float("nan")
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``hwnas`` command: the pipeline with ``argv`` (default: the command line's)
    as Hydra overrides, or ``reproduce ...``; exits with its code."""
    if argv is not None:  # Hydra's entry point reads sys.argv itself
        sys.argv = [sys.argv[0], *argv]
    if sys.argv[1:2] == ["reproduce"]:
        from hwnas.app.reproduce import main as reproduce

        sys.exit(reproduce(sys.argv[2:]))
    # Hydra's own composition errors (unknown option or key, wrong type, bad syntax) as
    # one line, before Hydra creates the run folder
    line = precheck(sys.argv[1:])
    if line is not None:
        print(f"error: {line}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    try:
        _hydra_main()
    except SystemExit as done:
        # Hydra exits 1 for its own errors (unknown key, bad override syntax, missing
        # config): those happen before the job starts and are a user's to fix.
        if done.code == 1 and not _state["started"]:
            sys.exit(USER_ERROR_EXIT)
        raise
    failed = _state["failed"]
    if failed:
        for line in failed:  # type: ignore[union-attr]
            print(f"error: {line}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


if __name__ == "__main__":
    main()
