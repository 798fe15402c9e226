"""Compare two run folders: the search results byte for byte, the final weights tensor
by tensor (``hwnas reproduce`` ends with it).

Compared: every stage's ``result.json`` and ``history.csv`` (the between-phase searches
included), ``search/pareto.csv``, ``search/chosen.json`` and ``final/subnet.pt``. A file
whose bytes differ is read on both sides and each value that differs becomes one
:class:`Difference` (file, key, recorded, now): a JSON key path, a CSV ``#row.column``,
a tensor name.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["COMPARED", "Difference", "compare_runs", "compared_files", "format_differences"]

# what a reproduction must give again: the searches' results and the final weights
COMPARED = ("**/result.json", "**/history.csv", "search/pareto.csv", "search/chosen.json",
            "final/subnet.pt")  # fmt: skip
_SKIP_PARTS = {"checkpoints", "logs", "logs_largest", "logs_subnet"}
_WIDTH = 40  # longest value shown in the table


@dataclass(frozen=True)
class Difference:
    """One value that differs: in ``file`` (relative to the run), at ``key``."""

    file: str
    key: str
    recorded: str
    now: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def compared_files(recorded: Path, now: Path) -> list[str]:
    """The files of :data:`COMPARED` in either run folder, relative and sorted."""
    names: set[str] = set()
    for root in (recorded, now):
        for pattern in COMPARED:
            for path in root.glob(pattern):
                rel = path.relative_to(root)
                hidden = any(p.startswith(".") for p in rel.parts)
                if path.is_file() and not hidden and not _SKIP_PARTS & set(rel.parts):
                    names.add(rel.as_posix())
    return sorted(names)


def compare_runs(recorded: Path, now: Path) -> tuple[list[str], list[Difference]]:
    """The files compared and every difference between run folders ``recorded`` and
    ``now`` (none: the reproduction is equal)."""
    files = compared_files(recorded, now)
    out: list[Difference] = []
    for name in files:
        a, b = recorded / name, now / name
        if not a.is_file() or not b.is_file():
            out.append(Difference(name, "(file)", _presence(a), _presence(b)))
        elif a.read_bytes() != b.read_bytes():
            out.extend(_file_differences(name, a, b))
    return files, out


def _presence(path: Path) -> str:
    return "present" if path.is_file() else "missing"


def _file_differences(name: str, a: Path, b: Path) -> list[Difference]:
    """The values that differ in two files of different bytes; one ``(bytes)`` row when
    they hold the same values written differently."""
    try:
        if name.endswith(".pt"):
            found = list(_tensor_differences(name, a, b))
        else:
            read = _json_values if name.endswith(".json") else _csv_values
            va, vb = read(a), read(b)
            found = [
                Difference(
                    name, key, _shown(va.get(key, "<missing>")), _shown(vb.get(key, "<missing>"))
                )  # fmt: skip
                for key in sorted(set(va) | set(vb), key=_natural)
                if va.get(key, "<missing>") != vb.get(key, "<missing>")
            ]
    except Exception as err:  # noqa: BLE001 - an unreadable file is a difference too
        return [Difference(name, "(unreadable)", "", f"{type(err).__name__}: {err}")]
    if not found:
        size = f"{a.stat().st_size} bytes", f"{b.stat().st_size} bytes"
        found = [Difference(name, "(bytes; same values)", *size)]
    return found


def _natural(key: str) -> tuple:
    """Sort ``#10`` after ``#9``: digit runs compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key))


def _flatten(value: Any, prefix: str, flat: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), flat)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", flat)
    else:
        flat[prefix] = value


def _json_values(path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    _flatten(json.loads(path.read_text(encoding="utf-8")), "", flat)
    return flat


def _csv_values(path: Path) -> dict[str, Any]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    flat: dict[str, Any] = {"(columns)": ",".join(header), "(rows)": len(body)}
    for i, row in enumerate(body):
        for column, cell in zip(header, row, strict=False):
            flat[f"#{i}.{column}"] = cell
    return flat


def _tensor_differences(name: str, a: Path, b: Path) -> Iterator[Difference]:
    """Each tensor (or other value) of two saved state dicts that is not identical,
    loaded on the CPU and compared at one thread."""
    import torch

    from hwnas.core.runtime import torch_threads

    with torch_threads(1):
        sa = _leaves(torch.load(a, map_location="cpu", weights_only=True))
        sb = _leaves(torch.load(b, map_location="cpu", weights_only=True))
        for key in sorted(set(sa) | set(sb), key=_natural):
            ta, tb = sa.get(key), sb.get(key)
            if isinstance(ta, torch.Tensor) and isinstance(tb, torch.Tensor):
                if ta.dtype == tb.dtype and ta.shape == tb.shape and torch.equal(ta, tb):
                    continue
                yield Difference(name, key, _describe(ta), _describe(tb, ta))
            elif key not in sa or key not in sb or type(ta) is not type(tb) or ta != tb:
                yield Difference(name, key, _shown(ta if key in sa else "<missing>"),
                                 _shown(tb if key in sb else "<missing>"))  # fmt: skip


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def _describe(t: Any, other: Any = None) -> str:
    """A tensor in a table cell: shape, dtype and sum; beside ``other`` of the same
    shape, also the largest absolute difference."""
    import torch

    text = f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')} sum {t.double().sum():.9g}"
    if isinstance(other, torch.Tensor) and other.shape == t.shape:
        delta = (t.double() - other.double()).abs().max() if t.numel() else 0.0
        text += f" (max |diff| {float(delta):.3g})"
    return text


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 3] + "..."


def format_differences(files: Sequence[str], diffs: Sequence[Difference], limit: int = 40) -> str:
    """``equal: ...`` or ``differs: ...`` and a table of what differs (file, key,
    recorded, now), at most ``limit`` rows."""
    if not diffs:
        weights = sum(f.endswith(".pt") for f in files)
        return (
            f"equal: {len(files) - weights} result files byte for byte"
            f"{' and the final weights tensor for tensor' if weights else ''} ({len(files)} "
            "files compared)"
        )
    n_files = len({d.file for d in diffs})
    rows = [("file", "key", "recorded", "now")]
    rows += [(d.file, d.key, d.recorded, d.now) for d in diffs[:limit]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"differs: {len(diffs)} values in {n_files} of {len(files)} files compared"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]  # fmt: skip
    if len(diffs) > limit:
        lines.append(f"... and {len(diffs) - limit} more")
    return "\n".join(lines)
