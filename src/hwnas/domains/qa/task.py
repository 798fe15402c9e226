"""Extractive question answering (SQuAD): token ids in, (B, T, 2) start/end span logits out.

A model sees ``(input_ids, attention_mask, token_type_ids)``, each (B, T) int64, and
returns span logits (B, T, 2): ``[..., 0]`` scores each position as the answer's start,
``[..., 1]`` as its end. Training is cross-entropy over positions; evaluation turns the
logits of every window of a question into one answer string (the best-scoring valid
span over its windows) and scores it against the gold answers with the official SQuAD
exact match and F1 (torchmetrics' implementation), reported as fractions in [0, 1].

The feature ``store`` (:class:`hwnas.domains.qa.data.features.SquadStore`) is used by duck
type: ``offsets`` (F, T, 2) with -1 outside the context, ``example_index`` (F,), and
``examples`` with ``id``, ``context`` and ``answers``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwnas.core.types import ProxyInputs
from hwnas.proxies import gaussian_inputs
from hwnas.tasks.base import Task
from hwnas.tasks.base import distill_loss as _kl_distill

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
TARGET_KEYS = ("start_positions", "end_positions", "feature_id")


def best_span(
    logits: Tensor, offsets: Tensor, n_best: int = 20, max_answer_length: int = 30
) -> tuple[float, int, int] | None:
    """The best answer span of one feature as ``(score, char_start, char_end)``.

    ``logits`` (T, 2) are its start/end logits, ``offsets`` (T, 2) each token's character
    span in the context (negative outside it). Candidates pair the ``n_best`` highest
    start and end logits among context tokens, with end >= start and at most
    ``max_answer_length`` tokens; the score is start logit + end logit. ``None`` when no
    candidate is valid.
    """
    in_context = offsets[:, 0] >= 0  # (T,)
    k = min(int(n_best), int(in_context.sum()))
    if k == 0:
        return None
    logits = logits.float().masked_fill(~in_context[:, None], float("-inf"))
    s_val, s_idx = logits[:, 0].topk(k)  # (k,)
    e_val, e_idx = logits[:, 1].topk(k)
    length = e_idx[None, :] - s_idx[:, None] + 1  # (k, k)
    ok = (length >= 1) & (length <= max_answer_length)
    if not bool(ok.any()):
        return None
    score = (s_val[:, None] + e_val[None, :]).masked_fill(~ok, float("-inf"))
    best = int(score.argmax())
    i, j = divmod(best, k)
    return float(score[i, j]), int(offsets[s_idx[i], 0]), int(offsets[e_idx[j], 1])


def predict_answers(
    store: Any,
    logits: Mapping[int, Tensor],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[int, str]:
    """One answer per example from the span ``logits`` (T, 2) of its features.

    ``logits`` maps feature ids of ``store`` to their logits; every example with at least
    one feature there gets the text of its best span over those features (``""`` when
    none is valid). Returns ``{example index: answer}``.
    """
    by_example: dict[int, list[int]] = defaultdict(list)
    for fid in sorted(logits):
        by_example[int(store.example_index[fid])].append(fid)
    answers = {}
    for ex, fids in by_example.items():
        spans = [best_span(logits[f], store.offsets[f], n_best, max_answer_length) for f in fids]
        spans = [s for s in spans if s is not None]
        if spans:
            _, start, end = max(spans, key=lambda s: s[0])
            answers[ex] = store.examples[ex].context[start:end]
        else:
            answers[ex] = ""
    return answers


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Official SQuAD exact match and F1 (best over each question's gold answers) as
    fractions in [0, 1], averaged over questions; computed by torchmetrics."""
    from torchmetrics.functional.text import squad

    if len(predictions) != len(golds) or not predictions:
        raise ValueError(
            f"squad_scores needs one list of golds per prediction and at least one "
            f"prediction, got {len(predictions)} predictions and {len(golds)} gold lists"
        )
    preds = [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)]
    target = [
        {"answers": {"text": list(g), "answer_start": [0] * len(g)}, "id": str(i)}
        for i, g in enumerate(golds)
    ]
    out = squad(preds, target)
    return {"f1": float(out["f1"]) / 100.0, "exact_match": float(out["exact_match"]) / 100.0}


class ExtractiveQA(Task):
    """Span extraction over ``max_seq_length`` tokens of a ``vocab_size`` vocabulary.

    The loss is the mean of the start and end cross-entropies over positions (with
    ``label_smoothing``); distillation is the mean over start and end of KL(teacher ||
    student) on temperature-softened position distributions, scaled by T². ``store`` holds
    the features the data loaders point into (by ``feature_id``); ``tokenizer`` is only
    recorded in :meth:`spec`.
    """

    name = "extractive_qa"
    metrics = ("f1", "exact_match", "loss")
    primary_metric = "f1"
    higher_is_better = True
    sample_unit = "questions"
    chance_meaning = "answering nothing"

    def __init__(
        self,
        max_seq_length: int,
        vocab_size: int,
        store: Any,
        n_best: int = 20,
        max_answer_length: int = 30,
        label_smoothing: float = 0.0,
        tokenizer: str | None = None,
    ) -> None:
        if int(max_seq_length) < 2 or int(vocab_size) < 2:
            raise ValueError(
                f"ExtractiveQA needs max_seq_length >= 2 and vocab_size >= 2, got "
                f"{max_seq_length} and {vocab_size}"
            )
        if int(n_best) < 1 or int(max_answer_length) < 1:
            raise ValueError(
                f"n_best and max_answer_length must be >= 1, got {n_best} and {max_answer_length}"
            )
        self.max_seq_length, self.vocab_size = int(max_seq_length), int(vocab_size)
        self.store = store
        self.n_best, self.max_answer_length = int(n_best), int(max_answer_length)
        self.label_smoothing = float(label_smoothing)
        self.tokenizer = None if tokenizer is None else str(tokenizer)

    # ------------------------------------------------------------------ inputs
    def example_inputs(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Random ids in [1, vocab_size), a full attention mask, segment 0 then 1 (B, T)."""
        b, t = batch_size, self.max_seq_length
        ids = torch.randint(1, self.vocab_size, (b, t), generator=generator)
        mask = torch.ones(b, t, dtype=torch.long)
        types = (torch.arange(t) >= t // 2).long().expand(b, t).contiguous()
        return ids, mask, types

    def proxy_inputs(
        self,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        shape: tuple[int, ...] | None = None,
    ) -> ProxyInputs:
        """Gaussian inputs of ``shape`` (T, E): what follows the model's embeddings."""
        if shape is None:
            raise ValueError(
                "extractive_qa proxies run after the embeddings: pass shape=(T, E), the "
                "model's embedding output shape (its proxy_shape)"
            )
        return gaussian_inputs(shape, batch_size, self.max_seq_length, seed, device)

    def split_batch(self, batch: Mapping[str, Tensor]) -> tuple[tuple[Tensor, ...], dict]:
        inputs = tuple(batch[k] for k in INPUT_NAMES)
        return inputs, {k: batch[k] for k in TARGET_KEYS}

    def input_names(self) -> list[str]:
        return list(INPUT_NAMES)

    def output_names(self) -> list[str]:
        return ["span_logits"]

    # ------------------------------------------------------------------ losses
    def loss(self, outputs: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
        ls = self.label_smoothing
        start = F.cross_entropy(outputs[..., 0], targets["start_positions"], label_smoothing=ls)
        end = F.cross_entropy(outputs[..., 1], targets["end_positions"], label_smoothing=ls)
        return (start + end) / 2

    def distill_loss(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        start = _kl_distill(student[..., 0], teacher[..., 0], temperature)  # over T
        end = _kl_distill(student[..., 1], teacher[..., 1], temperature)
        return (start + end) / 2

    # ----------------------------------------------------------------- metrics
    def batch_metrics(self, outputs: Tensor, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Token-span estimates for logging: ``f1`` is the token-overlap F1 of the argmax
        start/end span (end clipped to >= start) with the gold token span, ``exact_match``
        the fraction with both positions right, both over the windows that hold their
        answer (all windows when none does); on those the span never starts or ends at
        ``[CLS]``, as the official decoding never answers it. :meth:`evaluate` gives the
        official text scores."""
        gs, ge = targets["start_positions"], targets["end_positions"]
        answerable = bool((gs > 0).any())
        logits = outputs[:, 1:] if answerable else outputs
        ps, pe = (logits[..., k].argmax(1) + int(answerable) for k in (0, 1))  # (B,)
        pe = torch.maximum(pe, ps)
        overlap = (torch.minimum(pe, ge) - torch.maximum(ps, gs) + 1).clamp_min(0).float()
        precision = overlap / (pe - ps + 1).float()
        recall = overlap / (ge - gs + 1).clamp_min(1).float()
        f1 = torch.where(overlap > 0, 2 * precision * recall / (precision + recall), 0.0)
        exact = ((ps == gs) & (pe == ge)).float()
        # windows whose answer lies elsewhere (gold at [CLS]) are easy and would inflate
        # the estimate: average over the answerable ones when the batch has any
        keep = gs > 0 if answerable else torch.ones_like(gs, dtype=torch.bool)
        return {
            "f1": f1[keep].mean(),
            "exact_match": exact[keep].mean(),
            "loss": self.loss(outputs, targets),
        }

    @torch.no_grad()
    def predict(
        self, model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
    ) -> tuple[dict[int, str], float, int]:
        """Run ``model`` over ``loader``: ``({example index: answer}, summed loss, features)``."""
        if self.store is None:
            raise ValueError("ExtractiveQA needs the data's feature store to decode answers")
        model.eval().to(device)
        logits: dict[int, Tensor] = {}
        loss, seen = 0.0, 0
        for batch in loader:
            inputs, targets = self.split_batch(batch)
            out = model(*(x.to(device) for x in inputs)).float()  # (B, T, 2)
            gold = {k: v.to(device) for k, v in targets.items()}
            loss += self.loss(out, gold).item() * out.shape[0]
            seen += out.shape[0]
            for fid, row in zip(targets["feature_id"].tolist(), out.cpu(), strict=True):
                logits[fid] = row
        answers = predict_answers(self.store, logits, self.n_best, self.max_answer_length)
        return answers, loss, seen

    def evaluate(
        self, model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
    ) -> dict[str, float]:
        """Official SQuAD F1 / exact match (fractions) over every question with a feature in
        ``loader``, the mean feature loss, and the number of ``examples`` scored."""
        answers, loss, seen = self.predict(model, loader, device)
        if seen == 0:
            raise ValueError("evaluate: the loader yielded no samples")
        order = sorted(answers)
        golds = [self.store.examples[i].answers for i in order]
        scores = squad_scores([answers[i] for i in order], golds)
        return {**scores, "loss": loss / seen, "examples": len(order)}

    # --------------------------------------------------------------- artifacts
    def chance_level(self, loader: Iterable) -> float | None:
        """F1 of answering nothing (0): what a diverged reader's spans amount to."""
        return 0.0

    def spec(self) -> dict[str, Any]:
        t = self.max_seq_length
        return {
            "task": self.name,
            "max_seq_length": t,
            "vocab_size": self.vocab_size,
            "tokenizer": self.tokenizer,
            "inputs": [{"name": n, "shape": ["batch", t], "dtype": "int64"} for n in INPUT_NAMES],
            "outputs": [
                {
                    "name": "span_logits",
                    "shape": ["batch", t, 2],
                    "dtype": "float32",
                    "layout": "[..., 0] answer-start logits, [..., 1] answer-end logits",
                }
            ],
            "n_best": self.n_best,
            "max_answer_length": self.max_answer_length,
        }
