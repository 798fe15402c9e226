"""Speech recognition: LibriSpeech and the offline spoken corpus, log-mel features and
vocabularies; the elastic RNN-T with its decoders. Importing this package registers its
model and data modules."""

from __future__ import annotations

from typing import Any

from hwnas.data import register_datamodule
from hwnas.domains.asr.data.librispeech import LibriSpeechDataModule
from hwnas.domains.asr.data.spoken_synth import SpokenSynthDataModule
from hwnas.domains.asr.models.rnnt import ElasticRNNT
from hwnas.domains.asr.task import TransducerASR
from hwnas.elastic import register_model
from hwnas.elastic.base import ElasticModel
from hwnas.tasks import register_task


def _build_rnnt(input_shape: tuple[int], num_classes: int, **kw: Any) -> ElasticModel:
    """``input_shape`` is ``(n_mels,)`` and ``num_classes`` the vocabulary size with blank,
    both from the speech data module."""
    (n_mels,) = input_shape
    return ElasticRNNT(n_mels=n_mels, vocab_size=num_classes, **kw)


register_model("elastic_rnnt", _build_rnnt)


for _dm in (LibriSpeechDataModule, SpokenSynthDataModule):
    register_datamodule(_dm)
register_task("transducer_asr", TransducerASR)  # data.task for a user's own data
