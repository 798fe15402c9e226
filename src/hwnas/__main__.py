"""``python -m hwnas``: the whole pipeline under Hydra (see :mod:`hwnas.app.cli`)."""

import os

# Idle OpenMP threads sleep instead of spinning (set before torch loads; an explicit
# OMP_WAIT_POLICY wins): see docs/configuration.md.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hwnas.app.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
