"""Transducer decoding: greedy search and a time-synchronous beam search over a model's
predictor and joiner (:class:`TransducerDecoding`, mixed into the RNN-T models)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLANK = 0
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


class TransducerDecoding:
    """Greedy and beam search for a transducer with ``predictor`` (an LSTM over labels)
    and ``joiner`` (``enc_proj``, ``pred_proj``, ``joint``, ``out``); ``max_symbols``,
    ``decoding`` and ``beam_size`` configure them."""

    max_symbols: int = 5
    decoding: str = "greedy"
    beam_size: int = 4

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
