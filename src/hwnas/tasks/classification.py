"""Classification: the task of any model that maps a tensor batch to class logits (the
default of the trainings, and the base of the image domain's task)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core.types import ProxyInputs
from hwnas.proxies import gaussian_inputs
from hwnas.tasks.base import Task, distill_loss


class Classification(Task):
    """Classification of tensor inputs (B, *input_shape) into (B, classes) logits:
    cross-entropy with optional label smoothing; distillation is KL(teacher || student)
    on temperature-softened logits, scaled by T²; metric ``acc`` (top-1). Domains
    specialise it (image classification names its samples ``images``)."""

    name = "classification"
    metrics = ("acc", "loss")
    primary_metric = "acc"
    higher_is_better = True
    sample_unit = "samples"
    chance_meaning = "always answering the most frequent label"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        label_smoothing: float = 0.0,
    ):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.mean, self.std = tuple(mean), tuple(std)
        self.label_smoothing = float(label_smoothing)

    def example_inputs(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor]:
        return (torch.randn((batch_size, *self.input_shape), generator=generator),)

    def proxy_inputs(
        self,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        shape: tuple[int, ...] | None = None,
    ) -> ProxyInputs:
        """Gaussian inputs (``shape`` overrides the data's input shape)."""
        shape = self.input_shape if shape is None else shape
        return gaussian_inputs(shape, batch_size, self.num_classes, seed, device)

    def split_batch(self, batch: Any) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        x, y = batch
        return (x,), y

    def output_names(self) -> list[str]:
        return ["logits"]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)

    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        return distill_loss(student, teacher, temperature)

    def batch_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {
            "acc": (outputs.argmax(1) == targets).float().mean(),
            "loss": F.cross_entropy(outputs, targets),
        }

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
    ) -> dict[str, float]:
        model.eval().to(device)
        correct = total = 0
        loss = 0.0
        for batch in loader:
            (x,), y = self.split_batch(batch)
            x, y = x.to(device), y.to(device)
            out = model(x)
            correct += (out.argmax(dim=1) == y).sum().item()
            loss += F.cross_entropy(out, y, reduction="sum").item()
            total += y.numel()
        if total == 0:
            raise ValueError("evaluate: the loader yielded no samples")
        return {"acc": correct / total, "loss": loss / total}

    def chance_level(self, loader: Iterable) -> float | None:
        """The share of the most frequent label in ``loader`` (the majority-class rate)."""
        counts: dict[int, int] = {}
        for batch in loader:
            _, y = self.split_batch(batch)
            for label, n in zip(*torch.unique(y, return_counts=True), strict=True):
                counts[int(label)] = counts.get(int(label), 0) + int(n)
        total = sum(counts.values())
        return max(counts.values()) / total if total else None

    def spec(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
        }
