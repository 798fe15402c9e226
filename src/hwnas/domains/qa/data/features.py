"""SQuAD v1.1 examples and their tokenised windows ("features"), in one shared store.

A question whose context does not fit ``max_seq_length`` tokens becomes several
features: overlapping windows of the context, each ``[CLS] question [SEP] context
window [SEP]`` padded to ``max_seq_length``. The answer of a feature is the token span
of the first gold answer, or ``(0, 0)`` (the ``[CLS]`` token) when its window does not
contain the whole answer. One :class:`SquadStore` holds the features of every split, so
a feature id (its row) names one feature across train, val and test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# examples per tokenizer call (bounds the memory of its Python lists)
_CHUNK = 1000
_ARRAYS = ("input_ids", "attention_mask", "token_type_ids", "offsets", "start_positions",
           "end_positions", "example_index")  # fmt: skip


@dataclass(frozen=True)
class SquadExample:
    """One question: its context, the gold answers and their character offsets."""

    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def read_squad_json(path: str | Path) -> list[SquadExample]:
    """The questions of a SQuAD-v1.1-format JSON file, in file order."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        articles = doc["data"]
        return [
            SquadExample(
                id=str(qa["id"]),
                title=str(article.get("title", "")),
                context=para["context"],
                question=qa["question"],
                answers=tuple(a["text"] for a in qa["answers"]),
                answer_starts=tuple(int(a["answer_start"]) for a in qa["answers"]),
            )
            for article in articles
            for para in article["paragraphs"]
            for qa in para["qas"]
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path} is not a SQuAD v1.1 JSON file ({type(err).__name__}: {err}): expected "
            "data[].paragraphs[].{context, qas[].{id, question, answers[].{text, answer_start}}}"
        ) from err


def examples_from_records(records: Iterable[dict[str, Any]]) -> list[SquadExample]:
    """Examples from Hugging Face ``datasets`` rows (``answers`` as ``{text, answer_start}``)."""
    return [
        SquadExample(
            id=str(r["id"]),
            title=str(r.get("title", "")),
            context=r["context"],
            question=r["question"],
            answers=tuple(r["answers"]["text"]),
            answer_starts=tuple(int(s) for s in r["answers"]["answer_start"]),
        )
        for r in records
    ]


class SquadStore:
    """Every feature of a data module, addressed by feature id (row index).

    ``input_ids`` (F, T) int32, ``attention_mask`` and ``token_type_ids`` (F, T) int8,
    ``start_positions`` / ``end_positions`` (F,) int64 (0 when the window misses the
    answer), ``example_index`` (F,) int64 into ``examples``, and ``offsets`` (F, T, 2)
    int32: each context token's character span in its example's context, ``-1`` for
    question, special and padding tokens. :meth:`add` appends examples and features.
    """

    def __init__(self, max_seq_length: int) -> None:
        t = self.max_seq_length = int(max_seq_length)
        self.examples: list[SquadExample] = []
        self.input_ids = torch.zeros(0, t, dtype=torch.int32)
        self.attention_mask = torch.zeros(0, t, dtype=torch.int8)
        self.token_type_ids = torch.zeros(0, t, dtype=torch.int8)
        self.offsets = torch.zeros(0, t, 2, dtype=torch.int32)
        self.start_positions = torch.zeros(0, dtype=torch.long)
        self.end_positions = torch.zeros(0, dtype=torch.long)
        self.example_index = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.example_index.numel())

    def batch(self, feature_ids: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """The model batch of ``feature_ids``: every tensor as int64, (B, T) or (B,)."""
        ids = torch.as_tensor(feature_ids, dtype=torch.long)
        return {
            "input_ids": self.input_ids[ids].long(),
            "attention_mask": self.attention_mask[ids].long(),
            "token_type_ids": self.token_type_ids[ids].long(),
            "start_positions": self.start_positions[ids],
            "end_positions": self.end_positions[ids],
            "feature_id": ids.clone(),
        }

    def context_offsets(self, feature_id: int) -> list[tuple[int, int] | None]:
        """Per token of a feature, its character span in the context (``None`` outside it)."""
        return [(int(s), int(e)) if s >= 0 else None for s, e in self.offsets[feature_id].tolist()]

    def features_of(self, example_index: int) -> list[int]:
        """The feature ids of one example, in window order."""
        return torch.nonzero(self.example_index == example_index).flatten().tolist()

    def add(
        self,
        examples: Sequence[SquadExample],
        tokenizer: Any,
        doc_stride: int,
        max_query_length: int,
    ) -> Tensor:
        """Tokenise ``examples``, append them and their features; return the new feature ids."""
        first_feature, first_example = len(self), len(self.examples)
        parts = [
            _tokenize(
                examples[i : i + _CHUNK],
                tokenizer,
                self.max_seq_length,
                doc_stride,
                max_query_length,
            )
            for i in range(0, len(examples), _CHUNK)
        ]
        self.examples.extend(examples)
        for part in parts:
            part["example_index"] += first_example
            first_example += part.pop("num_examples")
        for name in _ARRAYS:
            new = [torch.from_numpy(p[name]) for p in parts]
            setattr(self, name, torch.cat([getattr(self, name), *new]))
        return torch.arange(first_feature, len(self))


def _truncate_questions(questions: list[str], tokenizer: Any, max_query_length: int) -> list[str]:
    """Each question cut after its ``max_query_length``-th token."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [
        q if len(offs) <= max_query_length else q[: offs[max_query_length - 1][1]]
        for q, offs in zip(questions, enc["offset_mapping"], strict=True)
    ]


def _tokenize(
    examples: Sequence[SquadExample],
    tokenizer: Any,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
) -> dict[str, Any]:
    questions = [e.question.strip() for e in examples]
    questions = _truncate_questions(questions, tokenizer, max_query_length)
    enc = tokenizer(
        questions,
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        padding="max_length",
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    n = len(enc["input_ids"])
    sample = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    offsets = np.full((n, max_seq_length, 2), -1, dtype=np.int32)
    starts = np.zeros(n, dtype=np.int64)
    ends = np.zeros(n, dtype=np.int64)
    for f in range(n):
        in_context = np.array([s == 1 for s in enc.sequence_ids(f)], dtype=bool)  # (T,)
        ctx = np.nonzero(in_context)[0]
        offsets[f, ctx] = np.asarray(enc["offset_mapping"][f], dtype=np.int32)[ctx]
        ex = examples[sample[f]]
        if len(ctx) and ex.answers:
            starts[f], ends[f] = _answer_tokens(
                offsets[f, ctx], ctx, ex.answer_starts[0], len(ex.answers[0])
            )
    # tokenizers without segment embeddings return no token type ids: all zeros then
    types = enc.get("token_type_ids") or np.zeros((n, max_seq_length), dtype=np.int8)
    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int8),
        "token_type_ids": np.asarray(types, dtype=np.int8),
        "offsets": offsets,
        "start_positions": starts,
        "end_positions": ends,
        "example_index": sample,
        "num_examples": len(examples),
    }


def _answer_tokens(
    spans: np.ndarray, positions: np.ndarray, char_start: int, length: int
) -> tuple[int, int]:
    """The (start, end) token positions of the characters [char_start, char_start + length)
    among context tokens at ``positions`` with character ``spans`` (n, 2); ``(0, 0)``
    when the window does not hold the whole answer."""
    char_end = char_start + length
    if spans[0, 0] > char_start or spans[-1, 1] < char_end:
        return 0, 0
    start = positions[np.nonzero(spans[:, 0] <= char_start)[0][-1]]
    end = positions[np.nonzero(spans[:, 1] >= char_end)[0][0]]
    return int(start), int(end)
