"""Elastic (weight-sharing) networks and the registry that builds them from config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hwnas.elastic.base import ElasticModel
from hwnas.elastic.bert import ElasticBert, StaticBert
from hwnas.elastic.cnn import ElasticCNN, StaticCNN
from hwnas.elastic.rnnt import ElasticRNNT, StaticRNNT
from hwnas.elastic.vit import ElasticViT, StaticViT

ModelBuilder = Callable[..., ElasticModel]

_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str, builder: ModelBuilder) -> None:
    _MODELS[name] = builder


def _build_cnn(input_shape: tuple[int, int, int], num_classes: int, **kw: Any) -> ElasticModel:
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"elastic_cnn needs square images, got {h}x{w}")
    return ElasticCNN(in_channels=c, image_size=h, num_classes=num_classes, **kw)


register_model("elastic_cnn", _build_cnn)


def _build_vit(input_shape: tuple[int, int, int], num_classes: int, **kw: Any) -> ElasticModel:
    c, h, w = input_shape  # ElasticViT raises a ValueError unless patch_size divides h and w
    return ElasticViT(in_channels=c, image_size=(h, w), num_classes=num_classes, **kw)


register_model("elastic_vit", _build_vit)


def _build_bert(
    input_shape: tuple[int], num_classes: int, pretrained: str | None = None, **kw: Any
) -> ElasticModel:
    """``input_shape`` is ``(max_seq_length,)`` from the data; ``pretrained`` a Hugging
    Face BERT checkpoint folder (``None``: random init from ``kw``, which then needs
    ``vocab_size``)."""
    (seq_len,) = input_shape
    if num_classes != 2:
        raise ValueError(f"elastic_bert predicts answer spans (2 logits), data gave {num_classes}")
    if pretrained:
        return ElasticBert.from_pretrained(pretrained, max_seq_length=seq_len, **kw)
    kw = {k: v for k, v in kw.items() if v is not None}
    if "vocab_size" not in kw:
        raise ValueError("model=elastic_bert needs model.pretrained=PATH (or model.vocab_size)")
    return ElasticBert(max_seq_length=seq_len, **kw)


register_model("elastic_bert", _build_bert)


def _build_rnnt(input_shape: tuple[int], num_classes: int, **kw: Any) -> ElasticModel:
    """``input_shape`` is ``(n_mels,)`` and ``num_classes`` the vocabulary size with blank,
    both from the speech data module."""
    (n_mels,) = input_shape
    return ElasticRNNT(n_mels=n_mels, vocab_size=num_classes, **kw)


register_model("elastic_rnnt", _build_rnnt)


def _build_bootstrap(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> ElasticModel:
    """A supernet converted from ``kw["source"]`` (conf/model/bootstrap.yaml); imported
    here, not at the top, as hwnas.bootstrap itself builds on hwnas.elastic."""
    from hwnas.bootstrap.api import build_bootstrap

    return build_bootstrap(input_shape, num_classes, **kw)


register_model("bootstrap", _build_bootstrap)


def _plain(v: Any) -> Any:
    """Config values as constructor arguments: lists (OmegaConf ListConfig) as tuples,
    mappings as dicts, recursively."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return tuple(_plain(x) for x in v)


def build_model(
    model_cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> ElasticModel:
    """Build the elastic model named by ``model_cfg.name`` for the data's shape."""
    cfg = dict(model_cfg)
    name = cfg.pop("name", None)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose model= one of {sorted(_MODELS)}")
    # OmegaConf lists arrive as ListConfig; the constructors take tuples.
    kwargs = {k: _plain(v) for k, v in cfg.items()}
    try:
        return _MODELS[name](tuple(input_shape), num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r}: {err}") from err


__all__ = [
    "ElasticBert",
    "ElasticModel",
    "ElasticCNN",
    "ElasticRNNT",
    "ElasticViT",
    "StaticBert",
    "StaticCNN",
    "StaticRNNT",
    "StaticViT",
    "build_model",
    "register_model",
]
