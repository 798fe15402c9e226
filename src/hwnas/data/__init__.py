"""Lightning data modules, one per data set, built by name from the Hydra ``data`` group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from hwnas.data.base import HwnasDataModule
from hwnas.data.cifar10 import CIFAR10DataModule
from hwnas.data.fashion_mnist import FashionMNISTDataModule
from hwnas.data.librispeech import LibriSpeechDataModule
from hwnas.data.speech import SpeechDataModule
from hwnas.data.spoken_synth import SpokenSynthDataModule
from hwnas.data.squad import SquadDataModule
from hwnas.data.synthetic import SyntheticDataModule

DATAMODULES: dict[str, type[L.LightningDataModule]] = {
    CIFAR10DataModule.name: CIFAR10DataModule,
    FashionMNISTDataModule.name: FashionMNISTDataModule,
    LibriSpeechDataModule.name: LibriSpeechDataModule,
    SpokenSynthDataModule.name: SpokenSynthDataModule,
    SquadDataModule.name: SquadDataModule,
    SyntheticDataModule.name: SyntheticDataModule,
}


def build_datamodule(
    cfg: Mapping[str, Any],
) -> HwnasDataModule | SquadDataModule | SpeechDataModule:
    """Build the data module ``cfg["name"]`` with the remaining keys as constructor args.

    ``cfg`` is the Hydra ``data`` node (a ``DictConfig``, resolved here) or a plain dict.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    args = dict(cfg)
    name = args.pop("name", None)
    if name not in DATAMODULES:
        raise ValueError(f"unknown data.name {name!r}: choose one of {sorted(DATAMODULES)}")
    return DATAMODULES[name](**args)


__all__ = [
    "DATAMODULES",
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "HwnasDataModule",
    "LibriSpeechDataModule",
    "SpeechDataModule",
    "SpokenSynthDataModule",
    "SquadDataModule",
    "SyntheticDataModule",
    "build_datamodule",
]
