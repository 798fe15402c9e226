"""Shared fixtures: small elastic models and composed configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hwnas
from hwnas.app.config import CONFIG_DIR
from hwnas.domains.image.models.cnn import ElasticCNN

CONF_DIR = str(CONFIG_DIR)
CONF = Path(CONF_DIR)
# a tiny elastic CNN's constructor arguments, and quick latency-timing settings
TINY = dict(in_channels=1, image_size=16, stem_channels=8, stage_channels=(8, 16),
            stage_strides=(2, 2), max_depth=(2, 2), depth_choices=(1, 2))  # fmt: skip
FAST = dict(threads=1, warmup=1, repeats=3)


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
    return hwnas.compose_config(overrides)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU OpenMP threads
    can slow them down tenfold; the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The integration tier (`slow`; `make test-fast` leaves it out): whole pipelines,
# subprocesses, several processes (DDP, torchrun, workers, launchers), PostgreSQL, the
# golden outputs. Whole modules, plus any other test whose name says it runs the
# pipeline or a command line.
SLOW_MODULES = {
    "test_asr_pipeline", "test_bootstrap_pipeline", "test_crash_safety", "test_ddp",
    "test_distributed_search", "test_golden", "test_pipeline", "test_quantize_stage",
    "test_scale_out_cli", "test_squad_pipeline", "test_vit_pipeline",
}  # fmt: skip
SLOW_NAMES = ("pipeline", "_cli", "cli_", "finetuned_teacher", "learns_a_transcript")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SLOW_MODULES or any(s in item.name for s in SLOW_NAMES):
            item.add_marker(pytest.mark.slow)
