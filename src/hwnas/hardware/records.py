"""Latency records on disk: machine fingerprints, checked reading, identity checks.

A latency record is what a latency cost model predicts from: a
:class:`~hwnas.hardware.table.LatencyTable` (``latency: table``), a fitted
:class:`~hwnas.hardware.flops.FlopsLine` (``latency: flops``) or the latencies a run
measured (``latency: measured``, :mod:`hwnas.hardware.measured`). All are JSON files
``{"format": ..., "meta": {...}, ...}`` whose ``meta`` holds the search space they
were built for and the fingerprint of the setup they were measured on
(:data:`FINGERPRINT_KEYS`). A cached record whose fingerprint differs from the
current setup is rebuilt; a record given explicitly (``hardware.table``) is used
wherever it was measured, with a warning when its setting differs from the config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import hwnas.hardware.openvino as openvino
from hwnas.elastic.base import ElasticModel
from hwnas.hardware.analytic import model_signature
from hwnas.hardware.latency import device_name
from hwnas.spaces.base import SearchSpace

# what identifies "measured here, like this": a cached record must match all of them
FINGERPRINT_KEYS = (
    "device",
    "device_name",
    "backend",
    "threads",
    "batch_size",
    "torch_version",
    "onnxruntime_version",
    "openvino_version",
)
# keys a record written before they were fingerprinted may lack, with the backend they
# matter for: absent from a record of another backend, they are no change
LATER_KEYS = {"openvino_version": "openvino"}
# the subset that is part of the hardware config (the rest is the machine itself)
SETTING_KEYS = ("device", "backend", "threads", "batch_size")
# file name of the record a run keeps (CostModel.save_record)
RECORD_NAME = "latency_table.json"
# ... and with latency=measured, every arch it timed (hwnas.hardware.measured)
MEASURED_NAME = "measured_latency.json"
TABLE_FORMAT = "hwnas.latency_table/1"
FLOPS_FORMAT = "hwnas.flops_latency/1"
MEASURED_FORMAT = "hwnas.measured_latency/1"
_KINDS = {
    TABLE_FORMAT: ("latency table", "table"),
    FLOPS_FORMAT: ("FLOPs-latency line", "flops"),
    MEASURED_FORMAT: ("measured-latency record", "measured"),
}


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - optional at run time
        return None
    return onnxruntime.__version__


def is_number(value: Any) -> bool:
    """A finite int or float (JSON's NaN and Infinity are no numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolved_threads(threads: int | None) -> int:
    """The thread count a measurement with ``threads`` runs with (``None``: PyTorch's)."""
    return int(threads) if threads is not None else torch.get_num_threads()


def fingerprint(device: str, backend: str, threads: int | None, batch_size: int) -> dict[str, Any]:
    """The fingerprint (:data:`FINGERPRINT_KEYS`) of measuring here with this setting."""
    return {
        "device": device,
        "device_name": device_name(device),
        "backend": backend,
        "threads": resolved_threads(threads),
        "batch_size": int(batch_size),
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime_version(),
        "openvino_version": openvino.openvino_version(),
    }


def fingerprint_changes(
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    keys: tuple[str, ...] = FINGERPRINT_KEYS,
) -> list[str]:
    """``["threads: 4 recorded, 1 now", ...]`` for every key of ``keys`` that differs.

    A key of :data:`LATER_KEYS` that an older record lacks is no change unless the
    record was measured with the backend it belongs to (``openvino_version`` matters
    to a table measured with OpenVINO, not to one measured with torch before it was
    recorded)."""
    return [
        f"{key}: {recorded.get(key, 'not recorded')!r} recorded, {current.get(key)!r} now"
        for key in keys
        if recorded.get(key) != current.get(key)
        and not (
            key in LATER_KEYS
            and key not in recorded
            and str(recorded.get("backend")).split(":")[0] != LATER_KEYS[key]
        )
    ]


def read_record(path: str | Path, fmt: str, fix: str) -> dict[str, Any]:
    """The JSON blob of the record file ``path`` of format ``fmt``, checked to hold the
    top-level keys ``format`` and ``meta`` (a dict with the space id and the setting).

    A missing file raises ``FileNotFoundError``, anything else wrong a one-line
    ``ValueError``; both name the file, the problem and ``fix`` (``{path}`` in it is
    filled in).
    """
    path = Path(path)
    what = _KINDS[fmt][0]
    fix = fix.format(path=path)
    shown = path if path.is_absolute() else f"{path} (= {path.absolute()})"
    if not path.exists():
        raise FileNotFoundError(f"{what} {shown} not found; {fix}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {shown} is not a file; {fix}")
    try:
        blob = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); {fix}"
        ) from None
    except ValueError as exc:  # not UTF-8 text at all
        raise ValueError(f"{what} {path} is not a JSON text file ({exc}); {fix}") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{what} {path} holds a JSON {type(blob).__name__}, not a {what}; {fix}")
    found = blob.get("format")
    if found != fmt:
        if found in _KINDS:
            other, method = _KINDS[found]
            raise ValueError(
                f"{path} holds a {other}, not a {what}: use it with hardware.latency={method}"
            )
        raise ValueError(
            f"{path} is not a {what} (format {found!r}, expected {fmt!r}: an older or "
            f"foreign file); {fix}"
        )
    meta = blob.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{what} {path} has no 'meta' object (truncated or edited?); {fix}")
    lacking = [k for k in ("space_id", *SETTING_KEYS) if k not in meta]
    if lacking:
        raise ValueError(f"{what} {path}: 'meta' lacks {lacking} (truncated or edited?); {fix}")
    return blob


def space_identity(model: ElasticModel) -> dict[str, Any]:
    """The ``meta`` keys :func:`check_identity` compares."""
    return {
        "space_id": model.space.id,
        "space_name": model.space.name,
        "model_signature": model_signature(model),
        "input_shape": list(model.input_shape),
    }


def check_identity(
    meta: Mapping[str, Any], target: ElasticModel | SearchSpace, source: str, fix: str
) -> None:
    """Refuse a record built for another search space or, given a model, for a
    supernet with other layer sizes (same genes, e.g. other stage widths)."""
    space = target.space if isinstance(target, ElasticModel) else target
    if meta.get("space_id") != space.id:
        raise ValueError(
            f"{source} was built for space {meta.get('space_name')!r} "
            f"(id {meta.get('space_id')}) but the model's space is {space.name!r} "
            f"(id {space.id}): {fix}"
        )
    built_for = meta.get("model_signature")
    if isinstance(target, ElasticModel) and built_for not in (None, model_signature(target)):
        raise ValueError(
            f"{source} was built for a {space.name!r} supernet with other layer sizes "
            f"(signature {built_for}, this model {model_signature(target)}): {fix}"
        )
