"""Shared fixtures: small elastic models and composed configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from hwnas.elastic.cnn import ElasticCNN

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def tiny_cnn(**kw) -> ElasticCNN:
    args = dict(in_channels=1, image_size=16, num_classes=10, stem_channels=8,
                stage_channels=(8, 16), stage_strides=(2, 2), max_depth=(2, 2),
                depth_choices=(1, 2), kernel_choices=(3, 5, 7), expand_choices=(2, 3))
    args.update(kw)
    torch.manual_seed(0)
    return ElasticCNN(**args)


@pytest.fixture
def cnn() -> ElasticCNN:
    return tiny_cnn()


def compose_config(overrides: list[str]):
    """The real config tree composed with ``overrides`` (as the CLI would)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
