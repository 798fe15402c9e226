"""Tasks: what a domain plugs into the pipeline besides its elastic model."""

from hwnas.tasks.asr import TransducerASR
from hwnas.tasks.base import Task
from hwnas.tasks.image import ImageClassification
from hwnas.tasks.qa import ExtractiveQA

__all__ = ["ExtractiveQA", "ImageClassification", "Task", "TransducerASR"]
