"""Image classification: (B, C, H, W) floats in, (B, classes) logits out, top-1 accuracy."""

from __future__ import annotations

from hwnas.tasks.classification import Classification


class ImageClassification(Classification):
    """:class:`~hwnas.tasks.classification.Classification` of images (normalised with
    the data's ``mean`` and ``std``, recorded in :meth:`spec`)."""

    name = "image_classification"
    sample_unit = "images"
