"""``python -m hwnas.profile``: build a latency lookup table (see :mod:`hwnas.app.profile`)."""

from hwnas.app.profile import main

if __name__ == "__main__":
    main()
