"""Image classification: FashionMNIST, CIFAR-10 and synthetic images; the elastic CNN
and ViT. Importing this package registers its models and data modules."""

from __future__ import annotations

from typing import Any

from hwnas.data import register_datamodule
from hwnas.domains.image.data.cifar10 import CIFAR10DataModule
from hwnas.domains.image.data.fashion_mnist import FashionMNISTDataModule
from hwnas.domains.image.data.synthetic import SyntheticDataModule
from hwnas.domains.image.models.cnn import ElasticCNN
from hwnas.domains.image.models.vit import ElasticViT
from hwnas.domains.image.task import image_task
from hwnas.elastic import register_model
from hwnas.elastic.base import ElasticModel
from hwnas.tasks import register_task


def _build_cnn(input_shape: tuple[int, int, int], num_classes: int, **kw: Any) -> ElasticModel:
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"elastic_cnn needs square images, got {h}x{w}")
    return ElasticCNN(in_channels=c, image_size=h, num_classes=num_classes, **kw)


register_model("elastic_cnn", _build_cnn)


def _build_vit(input_shape: tuple[int, int, int], num_classes: int, **kw: Any) -> ElasticModel:
    c, h, w = input_shape  # ElasticViT raises a ValueError unless patch_size divides h and w
    return ElasticViT(in_channels=c, image_size=(h, w), num_classes=num_classes, **kw)


register_model("elastic_vit", _build_vit)


for _dm in (CIFAR10DataModule, FashionMNISTDataModule, SyntheticDataModule):
    register_datamodule(_dm)

register_task("image_classification", image_task)
