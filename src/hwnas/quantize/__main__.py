"""``python -m hwnas.quantize run_dir=<run>``: the quantize stage on a finished run (the
command lives in the app floor: :mod:`hwnas.app.quantize_cli`)."""

import sys

from hwnas.app.quantize_cli import main

if __name__ == "__main__":
    sys.exit(main())
