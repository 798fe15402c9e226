"""Typed schemas of the config groups (Hydra structured configs): one small dataclass per
group is the only home of each default.

``conf/<group>/<option>.yaml`` starts with ``defaults: [_schema, _self_]`` and keeps only
what makes that option differ from the schema; ``conf/config.yaml`` starts with
``schema: run`` (the top-level keys; ``conf/profile.yaml``, which extends it, swaps in
``schema: profile``). :func:`register` stores the schemas in Hydra's ConfigStore under
those names; importing this package calls it. Composition then rejects a misspelled key
or a value of the wrong type (in an experiment file or on the command line); each
schema's ``validate()`` rejects values out of range that a type cannot express, and
:func:`validate_config` runs them all on a composed config.

``python -m hwnas --cfg job`` prints the composed config.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hwnas.app.schema.base import KNOWN_METRICS, check_window
from hwnas.app.schema.final import FinalConfig
from hwnas.app.schema.paths import PathsConfig
from hwnas.app.schema.profile import ProfileConfig
from hwnas.app.schema.quantize import QatConfig, QuantizeConfig, QuantizeConstraints
from hwnas.app.schema.run import ConstraintsConfig, ConstraintWindow, RunConfig
from hwnas.app.schema.search import SearchConfig
from hwnas.app.schema.supernet import PhaseConfig, SupernetConfig
from hwnas.app.schema.trainer import TrainerConfig
from hwnas.app.schema.zero_shot import ZeroShotConfig
from hwnas.core.types import to_plain

__all__ = [
    "settings",
    "GROUP_SCHEMAS",
    "ROOT_GROUP",
    "ROOT_SCHEMAS",
    "SCHEMA",
    "ConstraintWindow",
    "ConstraintsConfig",
    "FinalConfig",
    "PathsConfig",
    "PhaseConfig",
    "ProfileConfig",
    "QatConfig",
    "QuantizeConfig",
    "QuantizeConstraints",
    "RunConfig",
    "SearchConfig",
    "SupernetConfig",
    "TrainerConfig",
    "ZeroShotConfig",
    "register",
    "validate_config",
]

SCHEMA = "_schema"  # the name of each group's schema: defaults: [_schema, _self_]
# the root's schemas: a group at package _global_, first in conf/config.yaml's defaults
# (schema: run); a group (not a bare config) so that conf/profile.yaml can swap in its own
ROOT_GROUP = "schema"
ROOT_SCHEMAS: dict[str, type] = {"run": RunConfig, "profile": ProfileConfig}

# group -> its schema
GROUP_SCHEMAS: dict[str, type] = {
    "zero_shot": ZeroShotConfig,
    "supernet": SupernetConfig,
    "search": SearchConfig,
    "final": FinalConfig,
    "quantize": QuantizeConfig,
    "trainer": TrainerConfig,
    "paths": PathsConfig,
}

_registered = False


def register() -> None:
    """Store every schema in Hydra's ConfigStore: ``group=<group>, name="_schema"`` for
    the groups; ``group="schema", name="run" | "profile"`` (package ``_global_``) for the
    root. Idempotent."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=SCHEMA, node=schema)
    for name, schema in ROOT_SCHEMAS.items():
        cs.store(group=ROOT_GROUP, name=name, node=schema, package="_global_")
    _registered = True


def validate_config(cfg: DictConfig) -> RunConfig:
    """Every schema's ``validate()`` on the composed ``cfg`` (a run's top-level keys, then
    each group's node, then the checks across groups); ValueError on the first value out
    of range. A node composed without its schema (a run's saved config) is typed first.
    ``paths`` is skipped while ``paths.output_dir`` needs a Hydra run to resolve."""
    top = {k: to_plain(cfg[k]) for k in _TOP_KEYS if k in cfg}
    windows = to_plain(cfg.get("constraints")) or {}
    if not isinstance(windows, dict):
        raise ValueError(f"constraints={windows!r}: use {{<metric>: {{min: x, max: y}}}}")
    declared = {f.name for f in fields(ConstraintsConfig)}
    for metric, window in windows.items():
        if metric not in KNOWN_METRICS:
            raise ValueError(
                f"constraints.{metric}: unknown metric; use one of {list(KNOWN_METRICS)}"
            )
        if metric not in declared:  # added on the command line (+constraints.size_mb...)
            check_window(f"constraints.{metric}", window)
    known = {k: v for k, v in windows.items() if k in declared}
    run = RunConfig(**top, constraints=ConstraintsConfig(**known))
    for group, schema in GROUP_SCHEMAS.items():
        if group not in cfg or (group == "paths" and not _resolves(cfg.paths)):
            continue
        node = cfg[group]
        if not (OmegaConf.is_config(node) and OmegaConf.get_type(node) is schema):
            node = _typed(group, schema, node)
        setattr(run, group, OmegaConf.to_object(node))
    run.validate()
    return run


def settings(cfg: DictConfig) -> RunConfig:
    """The typed settings of a composed config (checked): the run's top-level keys and,
    for every group with a schema, its dataclass. What the stages read."""
    return validate_config(cfg)


def _typed(group: str, schema: type, node: Any) -> DictConfig:
    """``node`` (a run's saved config, composed before the schemas) checked against
    ``schema``: a key it lacks gets the default; an unknown key or a wrong type is a
    one-line ValueError."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as err:
        key, where = getattr(err, "full_key", None), getattr(err, "object_type", None)
        if not key:
            key = group
        elif where in (schema, None) or "." in key:
            key = f"{group}.{key}"
        else:  # inside a nested node (a list's entry: OmegaConf drops the index)
            key = f"{group} ({where.__name__}.{key})"
        msg = str(getattr(err, "msg", err)).splitlines()[0]
        raise ValueError(f"{key}: {msg}; fix or remove the key") from None


_TOP_KEYS = ("seed", "stages", "threads", "progress", "progress_interval_s")


def _resolves(node: DictConfig) -> bool:
    try:
        OmegaConf.to_container(node, resolve=True)
    except Exception:  # ${hydra:...} outside a Hydra run
        return False
    return True


register()
