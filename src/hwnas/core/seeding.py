"""Seeds derived per purpose: one base seed gives every random choice its own stable
stream (splits, loaders, stages, proxies), independent of the order things run in."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "seeded_generator"]


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for one purpose (``parts``) derived from a base seed."""
    text = ":".join(str(p) for p in (int(seed), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def seeded_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *parts)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *parts))
