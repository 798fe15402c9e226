"""What a network shows a proxy while it runs: its token mixers and feed-forward blocks.

Transformer proxies (attention confidence, head importance, W-PCA) need the attention
probabilities, the per-head outputs and the feed-forward activations of a network they
did not build. Fused kernels (``scaled_dot_product_attention``) never materialise the
probabilities, and module classes differ from one model to the next, so a proxy does
not look for them by class name: it opens :func:`record`, runs the model, and reads
what the model's own layers reported through :func:`note`. A layer reports only while
a recording is open (:func:`recording`); otherwise it takes its fast path unchanged.

The contract, for a layer that wants transformer proxies to see it:

- ``note(ATTENTION, self, probs=P, heads=H)``: a softmax attention, ``P`` the
  (B, heads, T, T) probabilities after masking, ``H`` the (B, heads, T, head_dim)
  per-head outputs before they are merged;
- ``note(MIXER, self, heads=H)``: a token mixer without attention probabilities (a
  Fourier or cosine transform, a convolution), ``H`` its (B, heads, T, d) outputs;
- ``note(FFN, self, hidden=A)``: a feed-forward block's (B, T, hidden) activations
  after its non-linearity (the last one of a stack).

``module`` is the layer that reported: the parameters of a token mixer are those of
that module. A network that reports nothing is one the transformer proxies do not
apply to; they say so (a ``NotApplicable`` error) and the harness ranks it last.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ATTENTION", "FFN", "MIXER", "ProbeRecord", "note", "record", "recording"]

ATTENTION = "attention"
MIXER = "mixer"
FFN = "ffn"
KINDS = (ATTENTION, MIXER, FFN)


@dataclass
class ProbeRecord:
    """One report of one layer in one forward pass."""

    kind: str
    module: nn.Module
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


_ACTIVE: ContextVar[list[ProbeRecord] | None] = ContextVar("hwnas_probe", default=None)


def recording() -> bool:
    """True while a :func:`record` block is open in this context."""
    return _ACTIVE.get() is not None


def note(kind: str, module: nn.Module, **tensors: torch.Tensor) -> None:
    """Report ``tensors`` of ``module`` to the open recording (a no-op when none is)."""
    records = _ACTIVE.get()
    if records is None:
        return
    if kind not in KINDS:
        raise ValueError(f"probe.note: kind {kind!r}; use one of {list(KINDS)}")
    records.append(ProbeRecord(kind, module, dict(tensors)))


@contextmanager
def record() -> Iterator[list[ProbeRecord]]:
    """Collect every :func:`note` made inside the block, in the order they ran."""
    records: list[ProbeRecord] = []
    token = _ACTIVE.set(records)
    try:
        yield records
    finally:
        _ACTIVE.reset(token)
