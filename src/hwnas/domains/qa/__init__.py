"""Extractive question answering: SQuAD v1.1 and the elastic BERT (with its Hugging Face
checkpoint conversion). Importing this package registers its model and data module."""

from __future__ import annotations

from typing import Any

from hwnas.data import register_datamodule
from hwnas.domains.qa.data.squad import SquadDataModule
from hwnas.domains.qa.models.bert import ElasticBert
from hwnas.domains.qa.models.hf import bert_from_pretrained
from hwnas.domains.qa.task import ExtractiveQA
from hwnas.elastic import register_model
from hwnas.elastic.base import ElasticModel
from hwnas.tasks import register_task


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
        return bert_from_pretrained(pretrained, max_seq_length=seq_len, **kw)
    kw = {k: v for k, v in kw.items() if v is not None}
    if "vocab_size" not in kw:
        raise ValueError("model=elastic_bert needs model.pretrained=PATH (or model.vocab_size)")
    return ElasticBert(max_seq_length=seq_len, **kw)


register_model("elastic_bert", _build_bert)


register_datamodule(SquadDataModule)
register_task("extractive_qa", ExtractiveQA)  # data.task for a user's own data
