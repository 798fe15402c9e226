"""Elastic (weight-sharing) networks: the generic super-ops and transformer encoder, the
:class:`~hwnas.elastic.base.ElasticModel` contract, and the registry that builds a
model by name from config (each domain registers its own models)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hwnas.core.registry import Registry
from hwnas.elastic.base import ElasticModel

ModelBuilder = Callable[..., ElasticModel]

# built-ins: every domain's models and the bootstrap converter (model=bootstrap)
MODELS: Registry[ModelBuilder] = Registry("model", builtins=("hwnas.domains", "hwnas.bootstrap"))


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(input_shape, num_classes, **model_cfg)`` buildable as ``model=name``."""
    MODELS.register(name, builder)


def _as_args(v: Any) -> Any:
    """Config values as constructor arguments: lists (OmegaConf ListConfig) as tuples,
    mappings as dicts, recursively."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _as_args(x) for k, x in v.items()}
    return tuple(_as_args(x) for x in v)


def build_model(
    model_cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> ElasticModel:
    """Build the elastic model named by ``model_cfg.name`` for the data's shape."""
    cfg = dict(model_cfg)
    name = cfg.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose model= one of {MODELS.names()}")
    # OmegaConf lists arrive as ListConfig; the constructors take tuples.
    kwargs = {k: _as_args(v) for k, v in cfg.items()}
    try:
        return MODELS.get(name)(tuple(input_shape), num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r}: {err}") from err
    except ValueError as err:  # name the group: the model's constructor checks its keys
        message = str(err)
        if not message.startswith("model"):
            raise ValueError(f"model={name}: {message}") from None
        raise


__all__ = ["MODELS", "ElasticModel", "ModelBuilder", "build_model", "register_model"]
