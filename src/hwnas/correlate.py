"""``python -m hwnas.correlate``: proxy-accuracy rank correlation
(see :mod:`hwnas.app.correlate`)."""

from hwnas.app.correlate import main

if __name__ == "__main__":
    main()
