"""hwnas: hardware-aware AutoML for PyTorch (train-free NAS, elastic supernets,
progressive shrinking, hardware cost models and Pareto search)."""

__version__ = "0.1.0"

from pathlib import Path as _Path


def config_dir() -> str:
    """The absolute path of the ``conf/`` tree ``python -m hwnas`` composes (for Hydra's
    ``initialize_config_dir`` in notebooks and scripts)."""
    return str(_Path(__file__).resolve().parents[2] / "conf")
