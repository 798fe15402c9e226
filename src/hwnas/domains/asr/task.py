"""Speech recognition with a transducer (RNN-T): log-mel features in, text out.

A model sees ``(features, feature_lengths, tokens, token_lengths)`` in training: log-mel
frames (B, T, F) float32 with their lengths, and the transcript's label ids (B, U) with
theirs (blank = 0 pads). It returns a dict with the joiner's ``logits`` (B, T', U+1, V),
the encoder's output ``lengths`` (B,) and, in eval mode, ``hypotheses`` of the model's
search (``model.decoding``: greedy or beam). The loss is ``torchaudio.functional.rnnt_loss``
(mean over utterances of each utterance's negative log-likelihood), plus ``ctc_weight``
times the CTC loss of the encoder when the model has an auxiliary CTC head
(``model.ctc_weight``; it speeds up training from scratch).
Given only ``(features, feature_lengths)`` a model runs its acoustic encoder: what
latency, throughput and ONNX export measure, on ``example_seconds`` of audio, so latency
also reads as a real-time factor.

Distillation (progressive shrinking) is on the joiner: KL(teacher || student) of the
temperature-softened distributions over the vocabulary at every valid (frame, label
prefix) pair, scaled by T², averaged over those pairs. Word and character error rates
use torchmetrics (corpus level: edits over reference words / characters).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwnas.core.types import ProxyInputs
from hwnas.domains.asr.models.rnnt import speech_inputs
from hwnas.proxies import gaussian_inputs
from hwnas.tasks.base import Task

INPUT_NAMES = ["features", "feature_lengths"]
OUTPUT_NAMES = ["encoder_out", "encoder_lengths"]


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus word and character error rates (fractions; torchmetrics), over pairs whose
    reference is not empty."""
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    if len(hypotheses) != len(references):
        raise ValueError(
            f"error_rates needs one hypothesis per reference, got {len(hypotheses)} and "
            f"{len(references)}"
        )
    pairs = [(h, r) for h, r in zip(hypotheses, references, strict=True) if r.strip()]
    if not pairs:
        raise ValueError("error_rates: every reference is empty")
    hyp, ref = [h for h, _ in pairs], [r for _, r in pairs]
    return {
        "wer": float(word_error_rate(hyp, ref)),
        "cer": float(char_error_rate(hyp, ref)),
    }


def valid_joint_mask(lengths: Tensor, token_lengths: Tensor, frames: int, labels: int) -> Tensor:
    """(B, T', U+1) bool: True where frame < length and label prefix <= token length."""
    t = torch.arange(frames, device=lengths.device)[None, :, None] < lengths[:, None, None]
    u = torch.arange(labels, device=lengths.device)[None, None, :] <= token_lengths[:, None, None]
    return t & u


class DeployedTransducer(nn.Module):
    """A transducer whose encoder runs elsewhere: ``transcribe`` feeds the features to
    ``encoder`` (``(features, lengths) -> (encoder_out, encoder_lengths)``, the model's
    exported forward) and decodes its output with ``model``'s search."""

    def __init__(self, model: nn.Module, encoder: nn.Module):
        super().__init__()
        self.model, self.encoder = model, encoder

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(features, lengths)

    def transcribe(self, features: Tensor, lengths: Tensor) -> list[list[int]]:
        enc, enc_lengths = self.encoder(features, lengths)
        return self.model.decode(enc.float(), enc_lengths.long())


class TransducerASR(Task):
    """Character (or any label) transducer ASR over ``vocab`` (id 0 = blank).

    ``vocab`` decodes ids to text (``decode(ids) -> str``, ``len(vocab)`` labels with
    blank; ``to_dict()`` for the spec); features are ``n_mels`` log-mel bins at
    ``sample_rate / hop_length`` frames per second."""

    name = "transducer_asr"
    metrics = ("wer", "cer")
    primary_metric = "wer"
    higher_is_better = False
    sample_unit = "utterances"
    chance_meaning = "emitting nothing"

    def __init__(
        self,
        vocab: Any,
        n_mels: int,
        sample_rate: int = 16000,
        hop_length: int = 160,
        example_seconds: float = 4.0,
        label_smoothing: float = 0.0,
    ) -> None:
        if int(n_mels) < 1 or len(vocab) < 2:
            raise ValueError(
                f"TransducerASR needs n_mels >= 1 and a vocabulary with blank, got {n_mels} "
                f"and {len(vocab)} labels"
            )
        self.vocab, self.n_mels = vocab, int(n_mels)
        self.sample_rate, self.hop_length = int(sample_rate), int(hop_length)
        self.example_seconds = float(example_seconds)
        # label smoothing has no standard transducer form; accepted for interface parity
        self.label_smoothing = float(label_smoothing)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def seconds_per_sample(self) -> float:
        """Audio seconds in one example input (real-time factor = latency / this)."""
        return self.example_seconds

    def speed_fields(self, latency_ms: float, batch_size: int) -> dict[str, float]:
        """Processing time per second of audio and the real-time factor."""
        audio = self.example_seconds * int(batch_size)
        return {"ms_per_audio_second": latency_ms / audio,
                "real_time_factor": latency_ms / 1000.0 / audio}  # fmt: skip

    def speed_labels(self) -> list[tuple[str, str, str]]:
        return [
            ("ms per second of audio", "ms_per_audio_second", "{:.3f}"),
            ("real-time factor (latency / audio seconds)", "real_time_factor", "{:.5f}"),
        ]

    # ------------------------------------------------------------------ inputs
    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Gaussian features of ``example_seconds`` (B, T, F) and full lengths (B,)."""
        frames = int(round(self.example_seconds * self.frames_per_second)) + 1
        return speech_inputs(batch_size, frames, self.n_mels, generator)

    def proxy_inputs(
        self,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        shape: tuple[int, ...] | None = None,
    ) -> ProxyInputs:
        """Gaussian inputs of ``shape`` (T', E): what follows the model's front end; labels
        index (frame, symbol) pairs of the joiner's output."""
        if shape is None:
            raise ValueError(
                "transducer_asr proxies run after the front end: pass shape=(T', E), the "
                "model's proxy_shape"
            )
        return gaussian_inputs(shape, batch_size, int(shape[0]) * len(self.vocab), seed, device)

    def split_batch(self, batch: Mapping[str, Tensor]) -> tuple[tuple[Tensor, ...], dict]:
        inputs = (
            batch["features"],
            batch["feature_lengths"],
            batch["tokens"],
            batch["token_lengths"],
        )
        return inputs, {"tokens": batch["tokens"], "token_lengths": batch["token_lengths"]}

    def input_names(self) -> list[str]:
        return list(INPUT_NAMES)

    def output_names(self) -> list[str]:
        return list(OUTPUT_NAMES)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"features": {1: "frames"}, "encoder_out": {1: "encoder_frames"}}

    # ------------------------------------------------------------------ losses
    def loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        import torchaudio.functional as AF

        tokens = targets["tokens"]
        lengths = targets["token_lengths"]
        logits = outputs["logits"][:, :, : int(lengths.max()) + 1]  # drop padded prefixes
        with warnings.catch_warnings():  # torchaudio flags its maintenance mode on each call
            warnings.simplefilter("ignore", UserWarning)
            loss = AF.rnnt_loss(
                logits.float(),
                tokens[:, : int(lengths.max())].int().contiguous(),
                outputs["lengths"].int(),
                lengths.int(),
                blank=0,
                reduction="mean",
            )
        if "ctc_logits" in outputs:  # the model's auxiliary CTC, per utterance like rnnt_loss
            log_probs = F.log_softmax(outputs["ctc_logits"].float(), -1).transpose(0, 1)
            ctc = F.ctc_loss(log_probs, tokens, outputs["lengths"], lengths, blank=0,
                             reduction="sum", zero_infinity=True)  # fmt: skip
            loss = loss + float(outputs["ctc_weight"]) * ctc / tokens.shape[0]
        return loss

    def curvature_loss(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> Tensor:
        """The transducer loss without the auxiliary CTC term: CTC's backward has no
        derivative in PyTorch, and the CTC head is a training aid, not deployed."""
        return self.loss({k: v for k, v in outputs.items() if k != "ctc_logits"}, targets)

    def distill_loss(
        self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor], temperature: float
    ) -> Tensor:
        """Joiner KL at the valid (frame, label prefix) pairs of each utterance (the
        model's outputs carry the encoder and label lengths)."""
        s, t = student["logits"], teacher["logits"].detach()
        tau = float(temperature)
        kl = F.kl_div(
            F.log_softmax(s / tau, -1),
            F.log_softmax(t / tau, -1),
            log_target=True,
            reduction="none",
        ).sum(-1)  # fmt: skip  (B, T', U+1)
        mask = valid_joint_mask(student["lengths"], student["token_lengths"], *kl.shape[1:])
        return (kl * mask).sum() / mask.sum().clamp_min(1) * tau * tau

    # ----------------------------------------------------------------- metrics
    def batch_metrics(
        self, outputs: Mapping[str, Any], targets: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """The transducer loss, and WER / CER of the model's hypotheses when it ran
        in eval mode (training outputs carry no decoding: the rates are left out)."""
        out: dict[str, Tensor] = {"loss": self.loss(outputs, targets).detach()}
        hyps = outputs.get("hypotheses")
        if hyps is not None:
            refs = self.references(targets)
            rates = error_rates([self.vocab.decode(h) for h in hyps], refs)
            out.update({k: torch.tensor(v) for k, v in rates.items()})
        return out

    def references(self, targets: Mapping[str, Tensor]) -> list[str]:
        tokens, lengths = targets["tokens"], targets["token_lengths"]
        return [self.vocab.decode(row[:n].tolist()) for row, n in zip(tokens, lengths.tolist())]

    @torch.no_grad()
    def transcribe(
        self, model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
    ) -> tuple[list[str], list[str], float]:
        """Transcripts (``model.transcribe``: the model's greedy or beam search) of every
        utterance in ``loader``, their references, and the seconds of audio."""
        model.eval().to(device)
        hyps: list[str] = []
        refs: list[str] = []
        frames = 0
        for batch in loader:
            inputs, targets = self.split_batch(batch)
            feats, lengths = inputs[0].to(device), inputs[1].to(device)
            ids = model.transcribe(feats, lengths)
            hyps += [self.vocab.decode(h) for h in ids]
            refs += self.references(targets)
            frames += int(inputs[1].sum())
        return hyps, refs, frames / self.frames_per_second

    def deployed(self, model: nn.Module, exported: nn.Module) -> nn.Module:
        """The exported encoder (``forward(features, lengths)``, e.g. quantized) with
        ``model``'s own decoding (predictor and joiner in PyTorch)."""
        return DeployedTransducer(model, exported)

    def evaluate(
        self, model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
    ) -> dict[str, float]:
        """Corpus WER and CER (fractions) of the model's decoding over ``loader``, with the
        number of ``utterances`` and ``audio_seconds``."""
        hyps, refs, seconds = self.transcribe(model, loader, device)
        if not refs:
            raise ValueError("evaluate: the loader yielded no samples")
        return {**error_rates(hyps, refs), "utterances": len(refs), "audio_seconds": seconds}

    # --------------------------------------------------------------- artifacts
    def chance_level(self, loader: Iterable) -> float | None:
        """WER of emitting nothing (1: every reference word deleted)."""
        return 1.0

    def spec(self) -> dict[str, Any]:
        vocab = self.vocab.to_dict() if hasattr(self.vocab, "to_dict") else None
        return {
            "task": self.name,
            "features": {
                "type": "log-mel, per-utterance normalised "
                "(hwnas.domains.asr.data.features.log_mel)",
                "n_mels": self.n_mels,
                "sample_rate": self.sample_rate,
                "hop_length": self.hop_length,
            },
            "vocabulary": vocab,
            "blank": 0,
            "inputs": [
                {"name": "features", "shape": ["batch", "frames", self.n_mels], "dtype": "float32"},
                {"name": "feature_lengths", "shape": ["batch"], "dtype": "int64"},
            ],  # fmt: skip
            "outputs": [
                {
                    "name": "encoder_out",
                    "shape": ["batch", "frames/4", "embed"],
                    "dtype": "float32",
                },
                {"name": "encoder_lengths", "shape": ["batch"], "dtype": "int64"},
            ],  # fmt: skip
            "decoding": (
                "transducer search of model.transcribe: greedy or beam, see the model's config"
            ),
            "example_seconds": self.example_seconds,
        }
