"""The task interface: what a domain plugs in besides its elastic model.

Every stage talks to a :class:`Task` instead of assuming images: how to build an input
batch for proxies, latency and ONNX export; how a data batch splits into model inputs
and targets; the training loss and the distillation loss from the largest subnet's
outputs; the evaluation metrics with one primary metric and its direction; and what
must be saved beside a subnet to rebuild and run it. Image classification is one task
(:mod:`hwnas.domains.image.task`); extractive QA (token ids + attention masks -> start/end
logits, exact match / F1) and transducer ASR (features + lengths -> joiner logits, WER)
implement the same methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import ProxyInputs


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened logits, scaled by T²."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


class Task(ABC):
    """A domain's contract with the pipeline (see the module doc).

    ``metrics`` names what :meth:`evaluate` returns; ``primary_metric`` is the one
    searches optimise and reports compare, ``higher_is_better`` its direction.
    ``sample_unit`` names one input sample in throughput figures (``images``,
    ``questions``, ``seconds of audio``)."""

    name: str = "task"
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    higher_is_better: bool = True
    sample_unit: str = "samples"
    # audio seconds in one example input (speech): reports add the real-time factor
    seconds_per_sample: float | None = None

    # ------------------------------------------------------------------ reports
    # how a model reaches :meth:`chance_level` without learning, for messages
    chance_meaning = "what a model reaches without learning"

    def chance_level(self, loader: Iterable) -> float | None:
        """The primary metric a model reaches without learning (a classifier always
        answering the most frequent label: its share of ``loader``'s labels; a reader
        answering nothing: F1 0; a recogniser emitting nothing: WER 1); a result not
        better than it (in the metric's direction) is refused as a diverged or unlearned
        training. None: not defined for the task."""
        return None

    def speed_fields(self, latency_ms: float, batch_size: int) -> dict[str, float]:
        """Task-specific speed figures of a measured ``latency_ms`` for a batch of
        ``batch_size`` example inputs, added to the final report's rows (default none)."""
        return {}

    def speed_labels(self) -> list[tuple[str, str, str]]:
        """``(label, key, format)`` of each :meth:`speed_fields` key, for report.md."""
        return []

    # ------------------------------------------------------------------ inputs
    @abstractmethod
    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple[Any, ...]:
        """Model inputs of a random batch (positional arguments of ``model(...)``), for
        latency, throughput and ONNX export."""

    @abstractmethod
    def proxy_inputs(
        self,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        shape: tuple[int, ...] | None = None,
    ) -> ProxyInputs:
        """Data-free inputs for train-free proxies. They must be continuous: images go
        in as they are (a ViT's patch embedding is scored too); for token ids or audio
        a task supplies what follows the embedding or front end, shaped ``shape`` (the
        model's ``proxy_shape``; docs/proxies.md)."""

    @abstractmethod
    def split_batch(self, batch: Any) -> tuple[tuple[Any, ...], Any]:
        """A data-loader batch as ``(model inputs, targets)``."""

    def input_names(self) -> list[str]:
        """ONNX input names, one per element of :meth:`example_inputs`."""
        return ["input"]

    def output_names(self) -> list[str]:
        return ["output"]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX axes besides the batch that vary per input or output name (e.g. time)."""
        return {}

    # ------------------------------------------------------------------ losses
    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The training loss of ``outputs`` against the data's ``targets``."""

    @abstractmethod
    def distill_loss(self, student: Any, teacher: Any, temperature: float) -> torch.Tensor:
        """In-place distillation: ``student`` outputs against the largest subnet's
        (detached) ``teacher`` outputs."""

    # ----------------------------------------------------------------- metrics
    @abstractmethod
    def batch_metrics(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Per-batch metric values for Lightning logging (means over the batch). A task
        may leave out metrics that training outputs cannot give (a transducer's WER
        needs decoding, which its model runs in eval mode only)."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
    ) -> dict[str, float]:
        """Every metric of ``model`` (eval mode, no grad) over ``loader``."""

    def curvature_loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The loss whose Hessian ranks layers for quantization (a second backward runs
        through it): the training loss, unless a term of it has no double backward."""
        return self.loss(outputs, targets)

    def deployed(self, model: nn.Module, exported: nn.Module) -> nn.Module:
        """What :meth:`evaluate` scores when ``exported`` (a runtime running the export
        of ``model``'s ``forward`` on :meth:`example_inputs`, e.g. a quantized ONNX or
        OpenVINO model) stands in for ``model``: ``exported`` itself when ``forward`` is
        the whole model (classification, QA). A task whose metric needs more than the
        exported forward (a transducer decodes the exported encoder's output with its
        predictor and joiner) returns a module combining the two."""
        return exported

    def primary(self, metrics: Mapping[str, float]) -> float:
        return float(metrics[self.primary_metric])

    def fitness(self, metrics: Mapping[str, float]) -> float:
        """The primary metric oriented so higher is better (for searches)."""
        value = self.primary(metrics)
        return value if self.higher_is_better else -value

    # --------------------------------------------------------------- artifacts
    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description saved beside a subnet (``arch.json``): what a
        user needs to feed it (shapes, dtypes, normalisation, vocabulary, ...)."""
