"""Elastic BERT for extractive question answering, converted from a checkpoint.

Token ids (B, T) + attention mask + segment ids -> token, segment and learned
position embeddings, summed, LayerNorm -> the post-norm
:class:`~hwnas.elastic.transformer.ElasticTransformerEncoder` (``LN(x + f(x))``, exact
GELU, no final norm) -> a span head, one linear layer to (B, T, 2) logits (``[..., 0]``
start, ``[..., 1]`` end).

Genes (as DynaBERT / HAT): ``depth`` (the first ``depth`` layers run, group
``depth``), ``embed`` (the hidden size, shared by every layer, group ``embed``), and per
layer ``heads{i}`` (attention heads of a fixed head dim, group ``heads``) and ``ffn{i}``
(intermediate size, group ``mlp``), active only when ``depth > i``; or, with
``uniform_width``, one ``heads`` and one ``ffn`` gene every layer takes (DynaBERT's width
multipliers: far fewer subnets, so a short weight-sharing budget trains each width often).

:func:`hwnas.domains.qa.models.hf.bert_from_pretrained` converts a Hugging Face BERT
checkpoint folder
(``BertModel`` or ``BertForQuestionAnswering``, safetensors or bin): with the largest
arch active, the outputs equal the Hugging Face model's (``tests/test_bert.py``). Each
layer's separate query, key and value projections are interleaved head by head into the
fused q/k/v weight the elastic attention slices by whole heads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hwnas.core.types import Network
from hwnas.elastic.base import ElasticModel, Saliency
from hwnas.elastic.transformer.embedding import ElasticEmbedding
from hwnas.elastic.transformer.encoder import (
    ElasticTransformerEncoder,
    EncoderHooks,
    StaticTransformerEncoder,
)
from hwnas.elastic.transformer.genes import encoder_dims, encoder_genes, layer_keys
from hwnas.elastic.transformer.layernorm import ElasticLayerNorm
from hwnas.elastic.transformer.linear import ElasticLinear
from hwnas.elastic.transformer.mlp import ACTIVATIONS
from hwnas.spaces.base import Arch, SearchSpace

log = logging.getLogger(__name__)


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Hugging Face's attention mask (1 = token, 0 = padding) -> True at padding."""
    return None if attention_mask is None else attention_mask == 0


def segment_ids(input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids


class ElasticBertEmbeddings(nn.Module):
    """Word + segment + learned absolute position embeddings, LayerNorm, dropout, at
    the active hidden size: (B, T) ids -> (B, T, E)."""

    def __init__(
        self,
        vocab_size: int,
        max_position: int,
        type_vocab_size: int,
        max_dim: int,
        pad_token_id: int | None,
        dropout: float,
        eps: float,
    ):
        super().__init__()
        self.word = ElasticEmbedding(vocab_size, max_dim, pad_token_id)
        self.position = ElasticEmbedding(max_position, max_dim)
        self.segment = ElasticEmbedding(type_vocab_size, max_dim)
        self.norm = ElasticLayerNorm(max_dim, eps)
        self.drop = nn.Dropout(dropout)
        self.max_position = max_position

    def set_active(self, dim: int) -> None:
        self.word.active_dim = self.position.active_dim = self.segment.active_dim = dim
        self.norm.active_dim = dim

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _embed(self, input_ids, token_type_ids)

    def params(self) -> int:
        return (
            self.word.params()
            + self.position.params()
            + self.segment.params()
            + (self.norm.params())
        )

    def permute_(self, perm: torch.Tensor) -> None:
        for table in (self.word, self.position, self.segment, self.norm):
            table.permute_(perm)

    def to_static(self) -> StaticBertEmbeddings:
        return StaticBertEmbeddings(
            self.word.to_static(), self.position.to_static(), self.segment.to_static(),
            self.norm.to_static(), self.drop.p,
        )  # fmt: skip


class StaticBertEmbeddings(nn.Module):
    """Plain embeddings produced by :meth:`ElasticBertEmbeddings.to_static`."""

    def __init__(
        self,
        word: nn.Embedding,
        position: nn.Embedding,
        segment: nn.Embedding,
        norm: nn.LayerNorm,
        dropout: float,
    ):
        super().__init__()
        self.word, self.position, self.segment, self.norm = word, position, segment, norm
        self.drop = nn.Dropout(dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _embed(self, input_ids, token_type_ids)


def _embed(emb: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None):
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    x = (
        emb.word(input_ids)
        + emb.position(positions)[None]
        + emb.segment(segment_ids(input_ids, token_type_ids))
    )
    return emb.drop(emb.norm(x))


class _SpanForward:
    """The forward pass shared by the elastic and the static model (needs ``embed``,
    ``encoder`` and ``head``): ``forward(input_ids, attention_mask=None,
    token_type_ids=None)`` -> (B, T, 2) span logits."""

    def forward_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:  # (B, T) -> (B, T, E)
        return self.encoder(self.embed(input_ids, token_type_ids), padding_mask(attention_mask))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:  # (B, T) -> (B, T, 2)
        return self.head(self.forward_features(input_ids, attention_mask, token_type_ids))


class StaticBert(EncoderHooks, _SpanForward, Network):
    """A standalone BERT span model: embeddings, encoder, head. Plain layers only."""

    def __init__(
        self, embed: StaticBertEmbeddings, encoder: StaticTransformerEncoder, head: nn.Linear
    ):
        super().__init__()
        self.embed, self.encoder, self.head = embed, encoder, head


class BertProxyView(Network):
    """What train-free proxies score of a BERT subnet: everything after the embeddings.

    Input: continuous (B, T, E_max) stand-ins for embedding outputs, of which the
    subnet reads the first E channels (as its embedding tables are the first E columns
    of the supernet's). Output: start and end logits side by side, (B, 2T), so the
    proxies see a classification over positions; ``forward_features`` gives the
    encoder's (B, T, E) output."""

    def __init__(self, sub: StaticBert):
        super().__init__()
        self.encoder, self.head = sub.encoder, sub.head
        self.dim = sub.head.in_features

    def proxy_blocks(self) -> list[nn.Module]:
        """The encoder layers, in order (the blocks AZ-NAS's proxies read)."""
        return list(self.encoder.layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x[..., : self.dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        span = self.head(self.forward_features(x))  # (B, T, 2)
        return torch.cat([span[..., 0], span[..., 1]], dim=1)


class ElasticBert(EncoderHooks, _SpanForward, ElasticModel):
    """The elastic BERT supernet and its space (see the module docstring).

    ``input_shape`` is ``(max_seq_length,)``: the token ids of one sequence. Build it
    from a checkpoint with :func:`~hwnas.domains.qa.models.hf.bert_from_pretrained`, or
    randomly initialised from the
    sizes given here (``vocab_size`` is then required)."""

    reorder_groups = frozenset({"heads", "mlp", "embed"})

    def __init__(
        self,
        vocab_size: int,
        max_seq_length: int = 384,
        max_position: int = 512,
        type_vocab_size: int = 2,
        pad_token_id: int | None = 0,
        embed_choices: Sequence[int] = (256, 384),
        depth_choices: Sequence[int] = (3, 4, 5, 6),
        max_depth: int = 6,
        head_choices: Sequence[int] = (3, 6, 9, 12),
        head_dim: int = 32,
        ffn_choices: Sequence[int] = (384, 768, 1152, 1536),
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation: str = "gelu",
        eps: float = 1e-12,
        uniform_width: bool = False,
    ):
        super().__init__()
        if not 1 <= max_seq_length <= max_position:
            raise ValueError(
                f"elastic_bert: max_seq_length {max_seq_length} must be in 1..{max_position} "
                f"(the checkpoint's position embeddings); lower data.max_seq_length"
            )
        if not depth_choices or min(depth_choices) < 1 or max(depth_choices) != max_depth:
            raise ValueError(
                f"elastic_bert: depth_choices {list(depth_choices)} must lie in 1..{max_depth} "
                f"and include {max_depth} (the checkpoint's layers)"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if min(embed_choices) < 1 or min(head_choices) < 1 or min(ffn_choices) < 1:
            raise ValueError("elastic_bert: embed, head and ffn choices must be positive")
        self.pretrained: dict[str, str] | None = None  # set by bert_from_pretrained
        self.input_shape = (int(max_seq_length),)
        self.vocab_size, self.type_vocab_size = int(vocab_size), int(type_vocab_size)
        self.max_seq_length = int(max_seq_length)
        self.max_embed = max(embed_choices)
        self.proxy_shape = (self.max_seq_length, self.max_embed)
        self.embed = ElasticBertEmbeddings(
            vocab_size, max_position, type_vocab_size, self.max_embed, pad_token_id, dropout, eps
        )
        self.encoder = ElasticTransformerEncoder(
            self.max_embed, max_depth, max(head_choices), head_dim, max(ffn_choices),
            norm_first=False, activation=activation, dropout=dropout, attn_dropout=attn_dropout,
            eps=eps, mlp_dropout=0.0,  # BERT drops out after each block, not inside its MLP
        )  # fmt: skip
        self.head = ElasticLinear(self.max_embed, 2)
        genes = encoder_genes(
            depth_choices, embed_choices, head_choices, ffn_choices, bool(uniform_width)
        )
        self.space = SearchSpace(
            "elastic_bert",
            genes,
            {  # everything that shapes the network, so the space id tells supernets apart
                "vocab_size": self.vocab_size,
                "max_seq_length": self.max_seq_length,
                "max_position": max_position,
                "type_vocab_size": type_vocab_size,
                "head_dim": head_dim,
                "activation": activation,
            },
        )
        self._active = self.space.max_arch()
        self.set_active(self._active)

    # ------------------------------------------------------------------ activation
    def set_active(self, arch: Mapping[str, Any]) -> None:
        arch = self.space.validate(arch)
        depth, e, heads, hidden = encoder_dims(arch)
        self.embed.set_active(e)
        self.encoder.set_active(depth, e, heads, hidden)
        self.head.active_in = e
        self._active = arch

    def get_active(self) -> Arch:
        return self._active

    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple:
        """Random token ids in ``[1, vocab)``, a full attention mask, and segment ids 0
        for the first half of the sequence (the question) and 1 after (the context)."""
        return bert_inputs(batch_size, self.max_seq_length, self.vocab_size, generator)

    def proxy_module(self, sub: nn.Module) -> nn.Module:
        return BertProxyView(sub)

    # ----------------------------------------------------------------------- costs
    def active_params(self) -> int:
        return self.embed.params() + self.encoder.params() + self.head.params()

    def active_flops(self, batch_size: int = 1) -> int:
        t = self.max_seq_length
        return self.encoder.flops(t, batch_size) + self.head.flops(t, batch_size)

    def latency_unit_keys(self, arch: Mapping[str, Any]) -> list[str]:
        arch = self.space.canonical(arch)
        t, e = self.max_seq_length, arch["embed"]
        layers = layer_keys(arch, t)
        return [f"embed:t{t}e{e}v{self.vocab_size}", *layers, f"head:t{t}e{e}"]

    def latency_units(self, arch: Mapping[str, Any]) -> list[tuple[str, nn.Module, Any]]:
        """Embeddings (token ids in), one unit per layer keyed by (tokens, hidden,
        heads, intermediate) wherever it sits, and the span head."""
        arch = self.space.canonical(arch)
        sub = self.export(arch)
        t, e = self.max_seq_length, arch["embed"]
        keys = self.latency_unit_keys(arch)

        def ids(batch: int, gen: torch.Generator) -> tuple:
            ids, _, segments = bert_inputs(batch, t, self.vocab_size, gen)
            return ids, segments

        units: list[tuple[str, nn.Module, Any]] = [(keys[0], sub.embed, ids)]
        units += [(key, layer, (t, e)) for key, layer in zip(keys[1:-1], sub.encoder.layers)]
        units.append((keys[-1], sub.head, (t, e)))
        return units

    # ---------------------------------------------------------------------- export
    def export(self, arch: Mapping[str, Any]) -> StaticBert:
        with self.active(arch):
            embed, encoder = self.embed.to_static(), self.encoder.to_static()
            head = self.head.to_static()
        return StaticBert(embed, encoder, head).train(self.training)

    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Heads and FFN units per layer (by ``saliency``, the loss-based scores of
        :mod:`hwnas.training.importance`, when given; else by weight magnitude), then
        hidden channels (by the L1 norm of every weight reading them: q/k/v, fc1, the
        span head), permuted in every tensor that touches the hidden dim; the largest
        network computes the same function."""
        self.encoder.reorganize_by_importance(saliency)
        importance = self.encoder.embed_importance() + self.head.weight.detach().abs().sum(0)
        perm = importance.argsort(descending=True)
        self.embed.permute_(perm)
        self.encoder.permute_embed_(perm)
        with torch.no_grad():
            self.head.weight.copy_(self.head.weight[:, perm])


def bert_inputs(
    batch_size: int, seq_len: int, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, token_type_ids) of a random full-length batch."""
    ids = torch.randint(1, max(2, vocab_size), (batch_size, seq_len), generator=generator)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    segments = torch.zeros(batch_size, seq_len, dtype=torch.long)
    segments[:, seq_len // 2 :] = 1
    return ids, mask, segments
