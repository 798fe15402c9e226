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
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.elastic.base import ElasticModel, Saliency
from hwnas.elastic.transformer import (
    ElasticLinear,
    ElasticTransformerEncoder,
    StaticTransformerEncoder,
)
from hwnas.elastic.transformer.genes import encoder_dims, encoder_genes, layer_keys
from hwnas.elastic.transformer.mlp import ACTIVATIONS
from hwnas.spaces.base import Arch, SearchSpace

BLANK = 0
FRAMES_PER_SECOND = 100  # 10 ms hop (hwnas.data.speech)
DECODINGS = ("greedy", "beam")

LabelSeq = tuple[int, ...]
LSTMState = tuple[torch.Tensor, torch.Tensor]


def check_decoding(decoding: str, beam_size: int) -> None:
    """One-line ``ValueError`` unless ``decoding`` is one of :data:`DECODINGS` and
    ``beam_size`` an integer >= 1."""
    if decoding not in DECODINGS:
        raise ValueError(f"model.decoding={decoding!r}: choose one of {list(DECODINGS)}")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"model.beam_size={beam_size!r}: give an integer >= 1")


def _logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` of two finite log-probabilities."""
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the front end: two stride-2 convolutions with padding 1 and kernel 3,
    so ``ceil(ceil(T / 2) / 2)``."""
    return torch.div(torch.div(lengths + 1, 2, rounding_mode="floor") + 1, 2, rounding_mode="floor")


def length_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) bool, True at padding frames (``t >= lengths[b]``)."""
    return torch.arange(frames, device=lengths.device)[None, :] >= lengths[:, None]


def sinusoid(frames: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(frames, dim) sinusoidal positions (Vaswani et al.): sin on even, cos on odd
    channels, wavelengths from 2π to 10000·2π."""
    pos = torch.arange(frames, device=device, dtype=torch.float32)[:, None]
    idx = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    angle = pos * torch.exp(idx * (-math.log(10000.0) / dim))[None, :]  # (frames, ceil(dim/2))
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(frames, -1)
    return pe[:, :dim]


class _FrontEnd(nn.Module):
    """Shared forward of the elastic and static front ends (needs ``conv1``, ``conv2``,
    ``proj``, ``drop``, ``pe_channels`` (the supernet's max embed dim, which sets the
    sinusoid's wavelengths) and the buffer ``pe_index``: the sinusoid channels in use,
    in order)."""

    pe_channels: int

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (B, T, F), (B,) -> (B, T', E), (B,)
        x = features.masked_fill(length_mask(lengths, features.shape[1])[:, :, None], 0.0)
        x = x.transpose(1, 2)  # (B, F, T)
        len1 = torch.div(lengths + 1, 2, rounding_mode="floor")
        x = F.gelu(self.conv1(x))
        x = x.masked_fill(length_mask(len1, x.shape[-1])[:, None, :], 0.0)
        len2 = torch.div(len1 + 1, 2, rounding_mode="floor")
        x = F.gelu(self.conv2(x))
        x = x.masked_fill(length_mask(len2, x.shape[-1])[:, None, :], 0.0)
        x = self.proj(x.transpose(1, 2))  # (B, T', E)
        pe = sinusoid(x.shape[1], self.pe_channels, x.device)
        pe = pe.index_select(1, self.pe_index)[:, : x.shape[-1]]
        return self.drop(x + pe[None]), len2


def _convs(n_mels: int, channels: int) -> tuple[nn.Conv1d, nn.Conv1d]:
    return (
        nn.Conv1d(n_mels, channels, 3, stride=2, padding=1),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
    )


class ElasticFrontEnd(_FrontEnd):
    """Convolutional 4x subsampling (fixed width ``channels``) and an elastic projection
    to the active embed dim; positions are the first ``E`` of ``pe_index``'s sinusoid
    channels (a permutation of ``0..max_embed-1``, reordered with the embed channels)."""

    def __init__(self, n_mels: int, channels: int, max_embed: int, dropout: float):
        super().__init__()
        self.conv1, self.conv2 = _convs(n_mels, channels)
        self.proj = ElasticLinear(channels, max_embed)
        self.drop = nn.Dropout(dropout)
        self.pe_channels = max_embed
        self.register_buffer("pe_index", torch.arange(max_embed))

    def set_active(self, embed: int) -> None:
        self.proj.active_out = embed

    def params(self) -> int:
        convs = sum(p.numel() for m in (self.conv1, self.conv2) for p in m.parameters())
        return convs + self.proj.params()

    def flops(self, frames: int, batch: int = 1) -> int:
        """Both convolutions and the projection for ``frames`` input frames."""
        t1 = (frames + 1) // 2
        t2 = (t1 + 1) // 2
        c, f = self.conv1.out_channels, self.conv1.in_channels
        conv = 2 * batch * 3 * c * (f * t1 + c * t2)
        return conv + self.proj.flops(t2, batch)

    def permute_(self, perm: torch.Tensor) -> None:
        with torch.no_grad():
            self.proj.weight.copy_(self.proj.weight[perm])
            self.proj.bias.copy_(self.proj.bias[perm])
            self.pe_index.copy_(self.pe_index[perm])

    def to_static(self) -> StaticFrontEnd:
        e = self.proj.active_out
        return StaticFrontEnd(
            copy.deepcopy(self.conv1), copy.deepcopy(self.conv2), self.proj.to_static(),
            self.pe_index[:e].clone(), self.pe_channels, self.drop.p,
        )  # fmt: skip


class StaticFrontEnd(_FrontEnd):
    """Plain front end produced by :meth:`ElasticFrontEnd.to_static`."""

    def __init__(
        self, conv1: nn.Conv1d, conv2: nn.Conv1d, proj: nn.Linear, pe_index: torch.Tensor,
        pe_channels: int, dropout: float,
    ):  # fmt: skip
        super().__init__()
        self.conv1, self.conv2, self.proj = conv1, conv2, proj
        self.drop = nn.Dropout(dropout)
        self.pe_channels = int(pe_channels)
        self.register_buffer("pe_index", pe_index.clone())


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


class _Transducer:
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

    def decode(self, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Label ids per utterance of the configured search (``decoding``): greedy or a
        beam of ``beam_size``."""
        check_decoding(self.decoding, self.beam_size)  # the attributes may be set later
        if self.decoding == "beam":
            return self.beam_decode(enc, lengths, self.beam_size)
        return self.greedy_decode(enc, lengths)

    @torch.no_grad()
    def greedy_decode(self, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Greedy transducer search over a batch: at each frame emit the argmax label
        while it is not blank (at most ``max_symbols`` per frame), feeding each emitted
        label to the predictor. Returns one list of label ids per utterance."""
        b, frames, _ = enc.shape
        e = self.joiner.enc_proj(enc)  # (B, T', J)
        label = torch.full((b, 1), BLANK, dtype=torch.long, device=enc.device)
        out, state = self.predictor(label)
        p = self.joiner.pred_proj(out[:, 0])  # (B, J)
        hyps: list[list[int]] = [[] for _ in range(b)]
        for t in range(frames):
            active = t < lengths
            for _ in range(self.max_symbols):
                if not bool(active.any()):
                    break
                k = self.joiner.joint(e[:, t], p).argmax(-1)  # (B,)
                emit = active & (k != BLANK)
                if not bool(emit.any()):
                    break
                out, new_state = self.predictor(k[:, None], state)
                p = torch.where(emit[:, None], self.joiner.pred_proj(out[:, 0]), p)
                keep = emit[None, :, None]
                state = tuple(torch.where(keep, n, s) for n, s in zip(new_state, state))
                for i in emit.nonzero().flatten().tolist():
                    hyps[i].append(int(k[i]))
                active = emit
        return hyps

    @torch.no_grad()
    def beam_decode(
        self, enc: torch.Tensor, lengths: torch.Tensor, beam_size: int
    ) -> list[list[int]]:
        """The best label sequence per utterance of :meth:`beam_search` (blank never
        emitted; ``beam_size=1`` gives the greedy result)."""
        return [nbest[0][0] for nbest in self.beam_search(enc, lengths, beam_size)]

    @torch.no_grad()
    def beam_search(
        self, enc: torch.Tensor, lengths: torch.Tensor, beam_size: int
    ) -> list[list[tuple[list[int], float]]]:
        """Transducer beam search, one utterance at a time: per utterance the n-best list
        (at most ``beam_size`` distinct label sequences with their log-probabilities, best
        first).

        The algorithm is the time-synchronous "modified beam search" of k2/icefall
        (Kang et al., "Fast and parallel decoding for transducer", ICASSP 2023,
        arXiv:2211.00484), generalised from one to ``max_symbols`` labels per frame; our
        own implementation. At each frame the beam's hypotheses are expanded in up to
        ``max_symbols`` steps: a hypothesis either takes blank (it is done with the frame)
        or one more label (it stays in the frame). Each step ranks all blank and label
        extensions of the hypotheses still in the frame together and keeps the best for
        the beam slots the hypotheses already done with the frame leave free, so at most
        ``beam_size`` hypotheses live at once; after ``max_symbols`` labels in a frame a
        hypothesis takes blank. Scores are summed log-probabilities (``log_softmax`` of
        the joiner); hypotheses that reach the next frame with the same label sequence
        are merged (log-sum-exp of their scores). The predictor runs once per distinct
        label prefix (its output and LSTM state are cached). Without pruning (a beam
        wider than every candidate) the score of a sequence of at most ``max_symbols``
        labels is its exact log-likelihood log P(y | x)."""
        check_decoding("beam", beam_size)
        e = self.joiner.enc_proj(enc)  # (B, T', J)
        return [self._beam_one(e[i, : int(n)], beam_size) for i, n in enumerate(lengths.tolist())]

    def _predict(
        self, cache: dict[LabelSeq, tuple[torch.Tensor, LSTMState]], seqs: list[LabelSeq]
    ) -> torch.Tensor:
        """Projected predictor outputs (len(seqs), J) of label sequences, running the LSTM
        (one batched step) only for sequences not in ``cache``, whose parent (all but
        the last label) must be there; new entries are added."""
        new = [s for s in seqs if s not in cache]
        if new:
            labels = torch.tensor([[s[-1]] for s in new], device=self.joiner.out.weight.device)
            h = torch.stack([cache[s[:-1]][1][0] for s in new], dim=1)  # (1, N, P)
            c = torch.stack([cache[s[:-1]][1][1] for s in new], dim=1)
            out, (h, c) = self.predictor(labels, (h, c))
            proj = self.joiner.pred_proj(out[:, 0])  # (N, J)
            for i, s in enumerate(new):
                cache[s] = (proj[i], (h[:, i], c[:, i]))
        return torch.stack([cache[s][0] for s in seqs])

    def _beam_one(self, e: torch.Tensor, beam: int) -> list[tuple[list[int], float]]:
        """:meth:`beam_search` of one utterance's projected encoder frames ``e`` (T', J)."""
        start = torch.full((1, 1), BLANK, dtype=torch.long, device=e.device)
        out, (h, c) = self.predictor(start)
        cache = {(): (self.joiner.pred_proj(out[0, 0]), (h[:, 0], c[:, 0]))}
        hyps: dict[LabelSeq, float] = {(): 0.0}  # label sequence -> log-probability
        for t in range(e.shape[0]):
            done: dict[LabelSeq, float] = {}  # hypotheses that took blank at frame t
            front = hyps  # hypotheses still in frame t
            for step in range(self.max_symbols + 1):
                if not front:
                    break
                seqs = list(front)
                p = self._predict(cache, seqs)  # (H, J)
                logp = F.log_softmax(self.joiner.joint(e[t].expand_as(p), p), dim=-1)
                prior = torch.tensor([front[s] for s in seqs], dtype=torch.float64)
                scores = logp.double() + prior.to(p.device)[:, None]  # (H, V)
                blank = scores[:, BLANK].tolist()
                if step == self.max_symbols:  # max_symbols labels in this frame: blank
                    for s, v in zip(seqs, blank):
                        done[s] = _logaddexp(done[s], v) if s in done else v
                    break
                for i, s in enumerate(seqs):  # merges into a done hypothesis take no slot
                    if s in done:
                        done[s] = _logaddexp(done[s], blank[i])
                        scores[i, BLANK] = -math.inf
                # |done| + |front| <= beam, so the hypotheses in the frame have >= 1 slot
                top = scores.flatten().topk(min(beam - len(done), scores.numel()))
                front, vocab = {}, scores.shape[1]
                for v, idx in zip(top.values.tolist(), top.indices.tolist()):
                    if v == -math.inf:
                        break
                    i, label = divmod(idx, vocab)
                    if label == BLANK:
                        done[seqs[i]] = v
                    else:
                        front[seqs[i] + (label,)] = v
            hyps = done
            cache = {s: cache[s] for s in hyps}
        return [(list(s), v) for s, v in sorted(hyps.items(), key=lambda kv: -kv[1])]

    def transcribe(self, features: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Label ids of a batch of features by the configured search (``decoding``:
        greedy or beam; eval mode is the caller's)."""
        enc, enc_lengths = self.encode(features, lengths)
        return self.decode(enc, enc_lengths)


class StaticRNNT(_Transducer, nn.Module):
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


class TransducerProxyView(nn.Module):
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


class ElasticRNNT(_Transducer, ElasticModel):
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
