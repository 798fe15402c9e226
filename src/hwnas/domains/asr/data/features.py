"""TODO docstring"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms
WIN_LENGTH = 400  # 25 ms
# SpecAugment's defaults (see :func:`spec_augment`); read-only, copied where used
SPEC_AUGMENT = MappingProxyType(
    {"freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 0.05}
)


SAMPLE_RATE = 16000


HOP_LENGTH = 160  # 10 ms


WIN_LENGTH = 400  # 25 ms


# SpecAugment's defaults (see :func:`spec_augment`); read-only, copied where used
SPEC_AUGMENT = MappingProxyType(
    {"freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 0.05}
)


@lru_cache(maxsize=4)
def _mel(n_mels: int) -> torch.nn.Module:
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=WIN_LENGTH, win_length=WIN_LENGTH,
        hop_length=HOP_LENGTH, n_mels=n_mels, power=2.0,
    )  # fmt: skip


def log_mel(waveform: Tensor, n_mels: int = 80) -> Tensor:
    """(N,) 16 kHz samples -> (1 + N // 160, n_mels) normalised log-mel features."""
    with torch.no_grad():
        spec = _mel(int(n_mels))(waveform.float())  # (n_mels, T)
    feats = torch.log(spec + 1e-6).T  # (T, n_mels)
    mean, std = feats.mean(0, keepdim=True), feats.std(0, keepdim=True, unbiased=False)
    return ((feats - mean) / std.clamp_min(1e-5)).contiguous()


def spec_augment(
    feats: Tensor,
    seed: int,
    freq_masks: int = 2,
    freq_width: int = 15,
    time_masks: int = 2,
    time_width: float = 0.05,
) -> Tensor:
    """A copy of ``feats`` (T, F) with SpecAugment's frequency and time masks (set to 0,
    the normalised mean) drawn from ``random.Random(seed)``: each frequency mask spans
    up to ``freq_width`` bins, each time mask up to ``time_width`` of the frames."""
    rng = random.Random(seed)
    out = feats.clone()
    t, f = out.shape
    for _ in range(int(freq_masks)):
        width = rng.randint(0, min(int(freq_width), f))
        start = rng.randint(0, f - width)
        out[:, start : start + width] = 0.0
    most = max(1, int(time_width * t)) if time_width > 0 and t > 1 else 0
    for _ in range(int(time_masks)):
        width = rng.randint(0, most)
        start = rng.randint(0, t - width)
        out[start : start + width] = 0.0
    return out


def check_spec_augment(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` over :data:`SPEC_AUGMENT`'s defaults, checked (ValueError naming the key)."""
    bad = set(options) - set(SPEC_AUGMENT)
    if bad:
        raise ValueError(
            f"data.spec_augment: unknown key(s) {sorted(bad)}; use {sorted(SPEC_AUGMENT)} "
            "(or null for none)"
        )
    out = {**SPEC_AUGMENT, **options}
    for key in ("freq_masks", "freq_width", "time_masks"):
        if int(out[key]) < 0:
            raise ValueError(f"data.spec_augment.{key} must be >= 0, got {out[key]}")
        out[key] = int(out[key])
    if not 0.0 <= float(out["time_width"]) <= 1.0:
        raise ValueError(
            f"data.spec_augment.time_width is a fraction of the frames, in [0, 1]: "
            f"got {out['time_width']}"
        )
    out["time_width"] = float(out["time_width"])
    return out
