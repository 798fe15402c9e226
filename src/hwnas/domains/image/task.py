"""Image classification: (B, C, H, W) floats in, (B, classes) logits out, top-1 accuracy."""

from __future__ import annotations

from hwnas.tasks.classification import Classification


class ImageClassification(Classification):
    """:class:`~hwnas.tasks.classification.Classification` of images (normalised with
    the data's ``mean`` and ``std``, recorded in :meth:`spec`)."""

    name = "image_classification"
    sample_unit = "images"


def image_task(
    input_shape: tuple[int, ...],
    num_classes: int,
    mean: tuple[float, ...] = (),
    std: tuple[float, ...] = (),
    label_smoothing: float = 0.0,
) -> ImageClassification:
    """``data.task=image_classification`` for a user's own data: samples must be images
    ``(C, H, W)``; ``mean`` / ``std`` (recorded in the subnet's spec) come from the data
    module's attributes of those names when it has them."""
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"image_classification needs image batches [B, C, H, W]; the data's samples are "
            f"shaped {list(input_shape)}: use data.task=classification for other tensors"
        )
    return ImageClassification(input_shape, num_classes, tuple(mean), tuple(std), label_smoothing)
