"""``python -m hwnas``: the whole pipeline under Hydra (config in ``conf/``)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from hwnas.hardware.constraints import InfeasibleError

log = logging.getLogger("hwnas")

# Errors a user can fix from the command line; anything else is a bug and keeps its
# traceback. HWNAS_DEBUG=1 shows tracebacks for these too.
USER_ERRORS = (ValueError, FileNotFoundError, InfeasibleError)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from hwnas.pipeline import run

    try:
        metrics = run(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HWNAS_DEBUG"):
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    # The optimised metric for sweepers: final test accuracy when the final stage ran,
    # else the best search/zero-shot figure available.
    for key in (
        "final/test_acc",
        "search/val_acc",
        "supernet/acc_largest",
        "zero_shot/best_descore",
    ):
        if key in metrics:
            return metrics[key]
    return float("nan")


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
