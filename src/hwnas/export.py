"""``python -m hwnas.export``: export points of a finished run's front with model cards
(see :mod:`hwnas.app.export_cli`)."""

import sys

from hwnas.app.export_cli import main

if __name__ == "__main__":
    sys.exit(main())
