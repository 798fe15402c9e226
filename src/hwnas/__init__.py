"""hwnas: hardware-aware AutoML for PyTorch (train-free NAS, elastic supernets,
progressive shrinking, hardware cost models and Pareto search)."""

__version__ = "0.1.0"

from pathlib import Path as _Path


def config_dir() -> str:
    """The absolute path of the ``conf/`` tree ``python -m hwnas`` composes (for Hydra's
    ``initialize_config_dir`` in notebooks and scripts)."""
    return str(_Path(__file__).resolve().parents[2] / "conf")


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    """The config ``python -m hwnas`` would run with these command-line ``overrides``
    (``key=value``, ``group=option``), composed outside Hydra's own entry point."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
