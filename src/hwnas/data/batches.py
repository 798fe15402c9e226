"""What a user's data loaders give, checked on their first batches: the batch form, finite
values, the sample shape and the class count (for :mod:`hwnas.data.custom`).

Every check raises a one-line ``ValueError`` that starts with ``where`` (the config key
and value naming the data module, e.g. ``data._target_='my_data.MyData'``) and says the
fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["describe", "first_batch", "labelled_pair", "max_label", "non_finite"]

# how many train batches the class count is read from when the data module has none
LABEL_BATCHES = 8


def describe(batch: Any) -> str:
    """A short description of a batch's form for error lines (``a dict with keys [...]``,
    ``a tuple of 3``, ``a Tensor [32, 1, 16, 16]``)."""
    if isinstance(batch, Tensor):
        return f"a Tensor {list(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(map(str, batch))[:6]}"
    if isinstance(batch, (tuple, list)):
        inner = ", ".join(describe(b) if isinstance(b, Tensor) else type(b).__name__
                          for b in batch[:3])  # fmt: skip
        more = ", ..." if len(batch) > 3 else ""
        return f"a {type(batch).__name__} of {len(batch)} ({inner}{more})"
    return f"a {type(batch).__name__}"


def first_batch(loader: Any, where: str, which: str) -> Any:
    """The first batch of ``loader`` (``which``: ``train_dataloader()``, ...)."""
    if loader is None:
        raise ValueError(f"{where}: {which} returned None; return a DataLoader")
    if not isinstance(loader, Iterable):
        raise ValueError(
            f"{where}: {which} returned a {type(loader).__name__}, not a DataLoader (an iterable "
            "of batches)"
        )
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise ValueError(f"{where}: {which} yielded no batch; give it samples") from None
    except Exception as err:  # the user's dataset or collate function fails
        text = str(err).strip().splitlines()
        raise ValueError(
            f"{where}: loading the first batch of {which} raised {type(err).__name__}: "
            f"{text[0] if text else '(no message)'}; fix the dataset (HWNAS_DEBUG=1 shows its "
            "traceback)"
        ) from err
    return batch


def non_finite(batch: Any, where: str, which: str) -> None:
    """Refuse NaN or infinite values in any floating tensor of ``batch``."""
    for path, t in _tensors(batch, "batch"):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(
                f"{where}: the first batch of {which} holds {bad} non-finite values (NaN or "
                f"inf) in {path}; fix the data or its transforms"
            )


def labelled_pair(batch: Any, where: str, which: str) -> tuple[Tensor, Tensor]:
    """``batch`` as ``(inputs [B, ...] float, labels [B] integer)``, the form a classifier
    trains on and the sample shape and class count are read from."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(
            f"{where}: setup() must give {which} batches of (inputs, labels); got "
            f"{describe(batch)}; return (x, y) pairs from the dataset, or set input_shape and "
            "num_classes on the data module for a task that reads other batches"
        )
    x, y = batch
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError(
            f"{where}: the inputs of {which} batches must be a float Tensor [B, ...] (images "
            f"[B, C, H, W]); got {describe(x)}"
            + ("" if not isinstance(x, Tensor) else f" of {x.dtype}")
        )
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
        got = describe(y) + (f" of {y.dtype}" if isinstance(y, Tensor) else "")
        raise ValueError(
            f"{where}: the labels of {which} batches must be integer class indices [B] "
            f"(torch.long); got {got}"
        )
    if y.numel() != x.shape[0]:
        raise ValueError(
            f"{where}: {which} gives {x.shape[0]} inputs but {y.numel()} labels in one batch"
        )
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{where}: {which} gives the label {int(y.min())}; labels are 0..C-1")
    return x, y


def max_label(batches: Sequence[Any], where: str, which: str) -> int:
    """The largest label in ``batches`` of ``(inputs, labels)``."""
    top = -1
    for batch in batches:
        _, y = labelled_pair(batch, where, which)
        if y.numel():
            top = max(top, int(y.max()))
    return top


def _tensors(batch: Any, path: str) -> Iterable[tuple[str, Tensor]]:
    """Every tensor of a nested batch, with where it sits (``batch[0]``, ``batch['x']``)."""
    if isinstance(batch, Tensor):
        yield path, batch
    elif isinstance(batch, Mapping):
        for k, v in batch.items():
            yield from _tensors(v, f"{path}[{k!r}]")
    elif isinstance(batch, (tuple, list)):
        for i, v in enumerate(batch):
            yield from _tensors(v, f"{path}[{i}]")
