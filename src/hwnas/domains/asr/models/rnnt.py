"""Elastic RNN-T (transducer) for speech recognition: the elastic transformer as encoder.

Log-mel features (B, T, F) + their lengths -> a convolutional front end (two stride-2
1-D convolutions over time with GELU: 4x subsampling; padding frames are zeroed on the
input and after each convolution, so an utterance's output does not depend on its batch)
-> a linear projection to the active embed dim + sinusoidal positions -> the pre-norm
:class:`~hwnas.elastic.transformer.ElasticTransformerEncoder` (padding masked, final
LayerNorm) = the acoustic encoder, (B, T', E) with T' = ceil(ceil(T / 2) / 2).

The predictor (an embedding of the previous label, blank = 0 as start symbol, and a
one-layer LSTM) and the joiner (``out(tanh(W_e enc + W_p pred))`` over the vocabulary,
blank included) are fixed; the encoder is elastic with the genes of the elastic BERT:
``depth``, ``embed`` (shared by every layer), and per layer ``heads{i}`` (heads of a
fixed head dim) and ``ffn{i}`` (MLP hidden size), or with ``uniform_width`` one
``heads`` and one ``ffn`` gene every layer takes.

``forward(features, lengths)`` runs the encoder only: ``(encoder_out (B, T', E),
encoder_lengths (B,))``, which is what latency, throughput and ONNX export measure.
``forward(features, lengths, tokens, token_lengths)`` adds the joiner over every
(frame, label prefix) pair for the transducer loss: a dict with ``logits`` (B, T', U+1,
V), ``lengths`` (B,), ``token_lengths`` and, in eval mode, greedy ``hypotheses`` (a list
of id lists: validation while training). ``transcribe`` (test figures, reports) uses the
configured search: ``decoding="greedy"`` (argmax labels) or ``"beam"``
(:meth:`_Transducer.beam_decode` with ``beam_size`` hypotheses); the search with
inherited weights ranks subnets by greedy WER (:meth:`ElasticRNNT.search_module`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hwnas.core.types import Network
from hwnas.domains.asr.models.decoding import BLANK, TransducerDecoding, check_decoding
from hwnas.domains.asr.models.frontend import (
    FRAMES_PER_SECOND,
    ElasticFrontEnd,
    StaticFrontEnd,
    length_mask,
    subsampled_lengths,
)
from hwnas.elastic.base import ElasticModel, Saliency
from hwnas.elastic.transformer.encoder import (
    ElasticTransformerEncoder,
    EncoderHooks,
    StaticTransformerEncoder,
)
from hwnas.elastic.transformer.genes import encoder_dims, encoder_genes, layer_keys
from hwnas.elastic.transformer.linear import ElasticLinear
from hwnas.elastic.transformer.mlp import ACTIVATIONS
from hwnas.spaces.base import Arch, SearchSpace


class Predictor(nn.Module):
    """Label embedding (blank = start symbol) and a one-layer LSTM: (B, U) -> (B, U, P)."""

    def __init__(self, vocab_size: int, dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, labels: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.lstm(self.drop(self.embed(labels)), state)
        return self.drop(out), state


class Joiner(nn.Module):
    """``out(tanh(enc_proj(enc) + pred_proj(pred)))``: the encoder side reads the active
    embed dim (an :class:`ElasticLinear` in the supernet, a plain one when exported)."""

    def __init__(self, enc_proj: nn.Module, pred_proj: nn.Linear, out: nn.Linear):
        super().__init__()
        self.enc_proj, self.pred_proj, self.out = enc_proj, pred_proj, out

    def joint(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Projected encoder (..., J) + projected predictor (..., J) -> logits (..., V)."""
        return self.out(torch.tanh(enc + pred))


class _Transducer(TransducerDecoding):
    """Forward, joint, greedy and beam decoding shared by the elastic and the static model
    (needs ``front``, ``encoder``, ``predictor``, ``joiner``)."""

    # decoding: most labels per encoder frame, the search of transcribe() and of the
    # eval-mode hypotheses ("greedy" | "beam") and the beam's width (model config keys)
    max_symbols: int = 5
    decoding: str = "greedy"
    beam_size: int = 4
    # set by both models: the auxiliary CTC head (or None) and its loss weight
    ctc_weight: float = 0.0

    def encode(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # -> (B, T', E), (B,)
        x, out_lengths = self.front(features, lengths)
        return self.encoder(x, length_mask(out_lengths, x.shape[1])), out_lengths

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        tokens: torch.Tensor | None = None,
        token_lengths: torch.Tensor | None = None,
    ) -> Any:
        enc, enc_lengths = self.encode(features, lengths)
        if tokens is None:
            return enc, enc_lengths
        sos = torch.full_like(tokens[:, :1], BLANK)
        pred, _ = self.predictor(torch.cat([sos, tokens], dim=1))  # (B, U+1, P)
        e = self.joiner.enc_proj(enc)[:, :, None]  # (B, T', 1, J)
        p = self.joiner.pred_proj(pred)[:, None]  # (B, 1, U+1, J)
        out: dict[str, Any] = {
            "logits": self.joiner.joint(e, p),  # (B, T', U+1, V)
            "lengths": enc_lengths,
            "token_lengths": token_lengths,
        }
        if self.ctc is not None:  # auxiliary CTC on the encoder (training aid)
            out["ctc_logits"], out["ctc_weight"] = self.ctc(enc), self.ctc_weight
        if not self.training:  # validation while training: the fast greedy search
            out["hypotheses"] = self.greedy_decode(enc, enc_lengths)
        return out

    def transcribe(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Label ids of a batch of features by the configured search (``decoding``:
        greedy or beam; eval mode is the caller's)."""
        enc, enc_lengths = self.encode(features, lengths)
        return self.decode(enc, enc_lengths)


class StaticRNNT(EncoderHooks, _Transducer, Network):
    """A standalone RNN-T: front end, encoder, predictor, joiner. Plain layers only."""

    def __init__(
        self,
        front: StaticFrontEnd,
        encoder: StaticTransformerEncoder,
        predictor: Predictor,
        joiner: Joiner,
        ctc: nn.Linear | None = None,
        ctc_weight: float = 0.0,
    ):
        super().__init__()
        self.front, self.encoder, self.predictor, self.joiner = front, encoder, predictor, joiner
        self.ctc, self.ctc_weight = ctc, float(ctc_weight)

    def proxy_blocks(self) -> list[nn.Module]:
        return list(self.encoder.layers)


class TransducerProxyView(Network):
    """What train-free proxies score of an RNN-T subnet: everything after the front end.

    Input: continuous (B, T', E_max) stand-ins for the projected front-end output, of
    which the subnet reads the first E channels. Output: the joiner's logits at every
    frame against the predictor's start state, flattened to (B, T'·V); labels index
    (frame, symbol) pairs. ``forward_features`` gives the encoder's (B, T', E) output."""

    def __init__(self, sub: StaticRNNT):
        super().__init__()
        self.encoder, self.joiner, self.predictor = sub.encoder, sub.joiner, sub.predictor
        self.dim = sub.front.proj.out_features

    def proxy_blocks(self) -> list[nn.Module]:
        return list(self.encoder.layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x[..., : self.dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.joiner.enc_proj(self.forward_features(x))  # (B, T', J)
        start = torch.full((x.shape[0], 1), BLANK, dtype=torch.long, device=x.device)
        pred = self.joiner.pred_proj(self.predictor(start)[0])  # (B, 1, J)
        return self.joiner.joint(enc, pred).flatten(1)


class ElasticRNNT(EncoderHooks, _Transducer, ElasticModel):
    """The elastic RNN-T supernet and its space (see the module docstring).

    ``input_shape`` is ``(n_mels,)``: one frame of log-mel features; ``example_seconds``
    of audio make the example inputs (latency, throughput, ONNX export, proxies)."""

    reorder_groups = frozenset({"heads", "mlp", "embed"})

    def __init__(
        self,
        n_mels: int,
        vocab_size: int,
        embed_choices: Sequence[int] = (96, 144),
        depth_choices: Sequence[int] = (2, 3, 4),
        head_choices: Sequence[int] = (2, 4),
        head_dim: int = 36,
        ffn_choices: Sequence[int] = (288, 576),
        frontend_channels: int = 144,
        predictor_dim: int = 128,
        joint_dim: int = 160,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
        example_seconds: float = 4.0,
        max_symbols: int = 5,
        ctc_weight: float = 0.0,
        decoding: str = "greedy",
        beam_size: int = 4,
        uniform_width: bool = False,
    ):
        super().__init__()
        if n_mels < 1 or vocab_size < 2:
            raise ValueError(f"elastic_rnnt needs n_mels >= 1 and a vocabulary with blank, "
                             f"got {n_mels} and {vocab_size}")  # fmt: skip
        choices = {"embed": embed_choices, "depth": depth_choices, "head": head_choices,
                   "ffn": ffn_choices}  # fmt: skip
        for key, values in choices.items():
            if not values or min(int(v) for v in values) < 1:
                raise ValueError(f"model.{key}_choices={list(values)}: give positive sizes")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if example_seconds <= 0 or max_symbols < 1 or ctc_weight < 0:
            raise ValueError(
                "model.example_seconds must be > 0, model.max_symbols >= 1 and "
                "model.ctc_weight >= 0"
            )
        check_decoding(decoding, beam_size)
        self.n_mels, self.vocab_size = int(n_mels), int(vocab_size)
        self.example_seconds, self.max_symbols = float(example_seconds), int(max_symbols)
        self.decoding, self.beam_size = decoding, beam_size
        self.input_shape = (self.n_mels,)
        self.max_embed, max_depth = max(embed_choices), max(depth_choices)
        self.example_frames = int(round(self.example_seconds * FRAMES_PER_SECOND)) + 1
        self.example_tokens = int(subsampled_lengths(torch.tensor(self.example_frames)))
        self.proxy_shape = (self.example_tokens, self.max_embed)
        self.front = ElasticFrontEnd(n_mels, frontend_channels, self.max_embed, dropout)
        self.encoder = ElasticTransformerEncoder(
            self.max_embed, max_depth, max(head_choices), head_dim, max(ffn_choices),
            norm_first=True, activation=activation, dropout=dropout, attn_dropout=attn_dropout,
            eps=1e-5,
        )  # fmt: skip
        self.predictor = Predictor(vocab_size, predictor_dim, dropout)
        self.joiner = Joiner(
            ElasticLinear(self.max_embed, joint_dim),
            nn.Linear(predictor_dim, joint_dim),
            nn.Linear(joint_dim, vocab_size),
        )
        # auxiliary CTC head on the encoder: weight x CTC loss joins the transducer loss
        # (speeds up training from scratch); 0 = none
        self.ctc_weight = float(ctc_weight)
        self.ctc = ElasticLinear(self.max_embed, vocab_size) if ctc_weight > 0 else None
        genes = encoder_genes(
            depth_choices, embed_choices, head_choices, ffn_choices, bool(uniform_width)
        )
        self.space = SearchSpace(
            "elastic_rnnt",
            genes,
            {  # everything that shapes the network, so the space id tells supernets apart
                "n_mels": self.n_mels,
                "vocab_size": self.vocab_size,
                "head_dim": head_dim,
                "frontend_channels": frontend_channels,
                "predictor_dim": predictor_dim,
                "joint_dim": joint_dim,
                "activation": activation,
            },
        )
        self._active = self.space.max_arch()
        self.set_active(self._active)

    # ------------------------------------------------------------------ activation
    def set_active(self, arch: Mapping[str, Any]) -> None:
        arch = self.space.validate(arch)
        depth, e, heads, hidden = encoder_dims(arch)
        self.front.set_active(e)
        self.encoder.set_active(depth, e, heads, hidden)
        self.joiner.enc_proj.active_in = e
        if self.ctc is not None:
            self.ctc.active_in = e
        self._active = arch

    def get_active(self) -> Arch:
        return self._active

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output of full-length features ``x`` (B, T, F)."""
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return self.encode(x, lengths)[0]

    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple:
        """Gaussian log-mel features of ``example_seconds`` of audio and their lengths."""
        return speech_inputs(batch_size, self.example_frames, self.n_mels, generator)

    def proxy_module(self, sub: nn.Module) -> nn.Module:
        return TransducerProxyView(sub)

    def search_module(self, sub: nn.Module) -> nn.Module:
        """The search ranks subnets by greedy WER (many subnets: the fast search); the
        reported test figures and ``transcribe`` use ``decoding``."""
        sub.decoding = "greedy"
        return sub

    # ----------------------------------------------------------------------- costs
    def active_params(self) -> int:
        """Every parameter of the active subnet (front end, encoder, predictor, joiner)."""
        fixed = sum(p.numel() for m in (self.predictor,) for p in m.parameters())
        j = self.joiner
        joiner = j.enc_proj.params() + sum(
            p.numel() for m in (j.pred_proj, j.out) for p in m.parameters()
        )
        ctc = self.ctc.params() if self.ctc is not None else 0
        return self.front.params() + self.encoder.params() + fixed + joiner + ctc

    def active_flops(self, batch_size: int = 1) -> int:
        """The acoustic encoder (front end + transformer) on ``example_seconds`` of audio:
        the part latency measures; decoding's cost grows with the transcript."""
        t = self.example_tokens
        return self.front.flops(self.example_frames, batch_size) + self.encoder.flops(t, batch_size)

    def latency_unit_keys(self, arch: Mapping[str, Any]) -> list[str]:
        arch = self.space.canonical(arch)
        f, t, e = self.example_frames, self.example_tokens, arch["embed"]
        layers = layer_keys(arch, t)
        return [f"front:f{f}m{self.n_mels}e{e}", *layers, f"norm:t{t}e{e}"]

    def latency_units(self, arch: Mapping[str, Any]) -> list[tuple[str, nn.Module, Any]]:
        """The front end (features and lengths in), one unit per encoder layer keyed by
        (frames, embed, heads, hidden) wherever it sits, and the final LayerNorm."""
        arch = self.space.canonical(arch)
        sub = self.export(arch)
        f, t, e = self.example_frames, self.example_tokens, arch["embed"]
        keys = self.latency_unit_keys(arch)

        def feats(batch: int, gen: torch.Generator) -> tuple:
            return speech_inputs(batch, f, self.n_mels, gen)

        units: list[tuple[str, nn.Module, Any]] = [(keys[0], sub.front, feats)]
        units += [(key, layer, (t, e)) for key, layer in zip(keys[1:-1], sub.encoder.layers)]
        units.append((keys[-1], sub.encoder.norm, (t, e)))
        return units

    # ---------------------------------------------------------------------- export
    def export(self, arch: Mapping[str, Any]) -> StaticRNNT:
        with self.active(arch):
            front, encoder = self.front.to_static(), self.encoder.to_static()
            enc_proj = self.joiner.enc_proj.to_static()
            ctc = self.ctc.to_static() if self.ctc is not None else None
        j = self.joiner
        joiner = Joiner(enc_proj, copy.deepcopy(j.pred_proj), copy.deepcopy(j.out))
        net = StaticRNNT(
            front, encoder, copy.deepcopy(self.predictor), joiner, ctc, self.ctc_weight
        )
        net.max_symbols, net.decoding = self.max_symbols, self.decoding
        net.beam_size = self.beam_size
        return net.train(self.training)

    def reorganize_by_importance(self, saliency: Saliency | None = None) -> None:
        """Heads and MLP units per layer (by ``saliency`` when given), then embed
        channels (by the L1 norm of every weight reading them: q/k/v, fc1 and the
        joiner's encoder projection), permuted in every tensor that touches the embed
        dim; the largest network is unchanged."""
        self.encoder.reorganize_by_importance(saliency)
        reads = self.joiner.enc_proj.weight.detach().abs().sum(0)
        perm = (self.encoder.embed_importance() + reads).argsort(descending=True)
        self.front.permute_(perm)
        self.encoder.permute_embed_(perm)
        with torch.no_grad():
            for lin in (self.joiner.enc_proj, self.ctc):
                if lin is not None:
                    lin.weight.copy_(lin.weight[:, perm])


def speech_inputs(
    batch_size: int, frames: int, n_mels: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, frames, n_mels) ~ N(0, 1), lengths (B,) = frames)."""
    x = torch.randn((batch_size, frames, n_mels), generator=generator)
    return x, torch.full((batch_size,), frames, dtype=torch.long)
