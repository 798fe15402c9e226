"""Hugging Face BERT checkpoints as elastic BERT supernets: read a local checkpoint
folder (nothing is downloaded), derive the elastic choices from its sizes and copy its
weights so the largest arch is the checkpoint."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.domains.qa.models.bert import ElasticBert
from hwnas.domains.qa.pretrained import MINILM_FIX, checkpoint_path
from hwnas.elastic.transformer.layernorm import ElasticLayerNorm
from hwnas.elastic.transformer.linear import ElasticLinear

log = logging.getLogger(__name__)

# Hugging Face ``hidden_act`` values that mean our activations exactly.
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}


def bert_from_pretrained(path: str | Path, max_seq_length: int = 384, **space: Any) -> ElasticBert:
    """Convert the Hugging Face BERT checkpoint in folder ``path``.

    ``space`` may set ``embed_choices``, ``depth_choices``, ``head_choices``,
    ``ffn_choices`` (``None``: derived from the checkpoint, see
    :func:`default_choices`), ``uniform_width`` (widths tied across layers),
    ``dropout`` and ``attn_dropout`` (``None``: the checkpoint's). The largest choice
    of each must equal the checkpoint's size, so the largest arch is the checkpoint.
    A checkpoint without a span head (a ``BertModel``) gets a freshly initialised one
    (seeded by the global RNG)."""
    hf, has_head = load_hf_qa_model(path)
    c = hf.config
    sizes = {
        "embed_choices": c.hidden_size,
        "depth_choices": c.num_hidden_layers,
        "head_choices": c.num_attention_heads,
        "ffn_choices": c.intermediate_size,
    }
    choices = {}
    for key, full in sizes.items():
        given = space.pop(key, None)
        values = default_choices(key, full) if given is None else [int(v) for v in given]
        if max(values) != full or min(values) < 1:
            raise ValueError(
                f"model.{key}={values}: the largest must equal the checkpoint's {full} "
                f"(and all >= 1), so the largest subnet is the checkpoint"
            )
        choices[key] = values
    dropout = space.pop("dropout", None)
    attn_dropout = space.pop("attn_dropout", None)
    uniform_width = bool(space.pop("uniform_width", False))
    if space:
        raise TypeError(f"unknown option(s) {sorted(space)} for a pretrained elastic_bert")
    model = ElasticBert(
        vocab_size=c.vocab_size,
        max_seq_length=max_seq_length,
        max_position=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        pad_token_id=c.pad_token_id,
        max_depth=c.num_hidden_layers,
        head_dim=c.hidden_size // c.num_attention_heads,
        dropout=c.hidden_dropout_prob if dropout is None else float(dropout),
        attn_dropout=c.attention_probs_dropout_prob
        if attn_dropout is None
        else float(attn_dropout),
        activation=HF_ACTIVATIONS[c.hidden_act],
        eps=c.layer_norm_eps,
        uniform_width=uniform_width,
        **choices,
    )
    load_hf_weights(model, hf)
    model.pretrained = {
        "path": str(checkpoint_path(path)),
        "span_head": "checkpoint" if has_head else "new",
    }
    return model


@torch.no_grad()
def load_hf_weights(model: ElasticBert, hf: nn.Module) -> None:
    """Copy a Hugging Face ``BertForQuestionAnswering``'s weights (all sizes must
    match the largest arch)."""
    bert = hf.bert
    emb = bert.embeddings
    model.embed.word.weight.copy_(emb.word_embeddings.weight)
    model.embed.position.weight.copy_(emb.position_embeddings.weight)
    model.embed.segment.weight.copy_(emb.token_type_embeddings.weight)
    model.embed.norm.weight.copy_(emb.LayerNorm.weight)
    model.embed.norm.bias.copy_(emb.LayerNorm.bias)
    h, d = model.encoder.max_heads, model.encoder.head_dim
    for layer, src in zip(model.encoder.layers, bert.encoder.layer, strict=True):
        att = src.attention
        q, k, v = att.self.query, att.self.key, att.self.value
        w = torch.stack([m.weight.reshape(h, d, -1) for m in (q, k, v)], dim=1)
        layer.attn.qkv.weight.copy_(w.reshape(3 * h * d, -1))  # (head, [q,k,v], d) rows
        b = torch.stack([m.bias.reshape(h, d) for m in (q, k, v)], dim=1)
        layer.attn.qkv.bias.copy_(b.reshape(-1))
        _copy_linear(layer.attn.proj, att.output.dense)
        _copy_norm(layer.norm1, att.output.LayerNorm)
        _copy_linear(layer.mlp.fc1, src.intermediate.dense)
        _copy_linear(layer.mlp.fc2, src.output.dense)
        _copy_norm(layer.norm2, src.output.LayerNorm)
    _copy_linear(model.head, hf.qa_outputs)


def default_choices(key: str, full: int) -> list[int]:
    """Choices derived from a checkpoint's size ``full``: depth from half to all
    layers; heads and intermediate size at 1/4, 1/2, 3/4 and all (DynaBERT's width
    multipliers); hidden size at 3/4 (a multiple of 8) and all."""
    if key == "depth_choices":
        return list(range(max(1, math.ceil(full / 2)), full + 1))
    if key == "embed_choices":
        return sorted({max(8, round(0.75 * full / 8) * 8), full})
    return sorted({max(1, round(full * r)) for r in (0.25, 0.5, 0.75, 1.0)})


def load_hf_qa_model(path: str | Path) -> tuple[nn.Module, bool]:
    """A Hugging Face ``BertForQuestionAnswering`` from a local folder, and whether
    the checkpoint had a span head. Raises a one-line error naming the fix."""
    folder = checkpoint_path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model.pretrained={path}: no config.json there; point it to a Hugging Face "
            f"checkpoint folder, or use model.pretrained=minilm ({MINILM_FIX})"
        )
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type != "bert":
        raise ValueError(
            f"model.pretrained={path} is a {config.model_type!r} checkpoint; elastic_bert "
            f"converts BERT checkpoints (model_type 'bert', e.g. BERT, MiniLM, TinyBERT)"
        )
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"model.pretrained={path}: only absolute position embeddings convert")
    if config.hidden_act not in HF_ACTIVATIONS or config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"model.pretrained={path}: hidden_act {config.hidden_act!r} or heads not "
            f"dividing the hidden size; supported: {sorted(HF_ACTIVATIONS)}"
        )
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its loading report would flag the new head
    try:
        hf, info = transformers.BertForQuestionAnswering.from_pretrained(
            folder, local_files_only=True, output_loading_info=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = set(info.get("missing_keys", ()))
    has_head = not any(k.startswith("qa_outputs") for k in missing)
    missing_body = [k for k in missing if not k.startswith("qa_outputs")]
    if missing_body:
        raise ValueError(
            f"model.pretrained={path}: checkpoint lacks {sorted(missing_body)[:3]}...; "
            f"it is not a complete BERT"
        )
    if not has_head:
        log.info("%s has no span head (a BertModel): the span head starts random", path)
    return hf.eval(), has_head


def _copy_linear(dst: ElasticLinear, src: nn.Linear) -> None:
    dst.weight.copy_(src.weight)
    if dst.bias is not None:
        dst.bias.copy_(src.bias)


def _copy_norm(dst: ElasticLayerNorm, src: nn.LayerNorm) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)
