"""Where the Hydra configs live (inside the package, so an installed wheel runs from any
directory) and how to compose them outside Hydra's own entry point."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hwnas.app.schema import register
from hwnas.search.base import Strategy, build_strategy, list_strategies
from hwnas.search.optuna.workers import Sharing

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
register()  # the typed schemas the YAML groups extend (Hydra's ConfigStore)

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "build_configured_strategy",
    "compose_config",
    "config_dir",
    "sharing",
]


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def config_dir() -> str:
    """The absolute path of the ``conf/`` tree ``python -m hwnas`` composes (for Hydra's
    ``initialize_config_dir`` in notebooks and scripts)."""
    return str(CONFIG_DIR)


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The config ``python -m hwnas`` would run with these command-line ``overrides``
    (``key=value``, ``group=option``), composed outside Hydra's own entry point."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def build_configured_strategy(node: Any, key: str) -> Strategy:
    """The strategy of a ``<stage>.strategy`` node; bad names, unknown keys and
    wrongly typed values raise a ConfigError naming ``key``."""
    kwargs = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    name = kwargs.pop("name", None)
    if name not in list_strategies():
        raise ConfigError(f"{key}.name={name!r}: choose one of {list_strategies()}")
    try:
        return build_strategy(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key} ({name}): {err}") from err


def sharing(node: Any) -> Sharing:
    """How the search of stage node ``node`` (``zero_shot`` / ``search``: its schema or
    its config node) is shared."""
    return Sharing(workers=node.workers, storage=node.storage, study_name=node.study_name)


def load_run_config(
    run: Path, rest: Sequence[str] = (), groups: Sequence[str] = ("quantize",)
) -> DictConfig:
    """The config a run folder recorded (``hwnas_config.yaml``) with ``rest`` (dotted
    ``key=value`` overrides) applied; the ``groups`` a run of an older hwnas predates
    get today's defaults for their newer keys. ``FileNotFoundError`` when ``run`` is not
    a run folder (the tools that read finished runs: quantize, export)."""
    saved = Path(run) / "hwnas_config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} is missing: run_dir must be a hwnas run folder")
    cfg = OmegaConf.load(saved)
    today = compose_config([])
    for group in groups:
        cfg[group] = OmegaConf.merge(today[group], cfg[group]) if group in cfg else today[group]
    cfg.merge_with(OmegaConf.from_dotlist(list(rest)))
    return cfg
