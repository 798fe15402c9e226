"""Crash-safe file writes and reads that name the file they could not read.

Every artifact of a run is written through :func:`atomic_open` (or a helper built on it):
the bytes go to a temporary file in the same folder, are flushed and fsynced, and only
then renamed over the target with ``os.replace``, which is atomic on POSIX. A process
killed at any moment (``kill -9``, power loss after the fsync) therefore leaves either
the old file or the new one, never a truncated one; at worst a stale
``.<name>.<host>-<pid>.tmp`` is left beside it, which the next process to write in that
folder on that host (a resumed run) removes. The temporary name carries the process, so
processes writing the same file at once (the ranks of a ``torchrun`` job filling one
cache) never rename each other's half-written file; the last rename wins.

Append-only logs (the search journals) use :func:`append_jsonl`: one JSON object per
line, flushed and fsynced line by line, so a crash can cut off at most the last line,
which :func:`read_jsonl` drops with a warning.

A file that still cannot be read (written by an older version, damaged by a disk or a
user) raises :class:`CorruptFileError`: one line naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

log = logging.getLogger(__name__)

__all__ = [
    "CorruptFileError",
    "append_jsonl",
    "atomic_open",
    "read_json",
    "read_jsonl",
    "replace_file",
    "torch_load",
    "torch_save",
    "write_bytes",
    "write_json",
    "write_text",
]


class CorruptFileError(ValueError):
    """A file of a run is truncated or unreadable; the message names it and the fix.

    A ``ValueError``, so ``python -m hwnas`` reports it as one ``error:`` line and exits
    2 (a user's to fix), like a configuration error."""


def redo_hint(path: str | Path) -> str:
    """The default fix: remove the file (or its stage folder) so the stage runs again."""
    path = Path(path)
    return f"delete {path} (or the stage folder {path.parent}) and rerun to redo that stage"


def corrupt(path: str | Path, reason: object, fix: str | None = None) -> CorruptFileError:
    """The error for an unreadable ``path``: what is wrong and ``fix`` (default:
    :func:`redo_hint`), on one line."""
    reason = " ".join(str(reason).split()) or type(reason).__name__
    return CorruptFileError(
        f"{path} is truncated or corrupt ({reason[:200]}): {fix or redo_hint(path)}"
    )


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _writer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def temporary_path(path: str | Path) -> Path:
    """Where this process stages ``path``: ``.<name>.<host>-<pid>.tmp`` in the same folder
    (so the final rename never crosses file systems, and two processes writing the same
    file never share a temporary file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_writer()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


# (folder, pid): the folders this process has swept (a forked child sweeps anew)
_swept: set[tuple[str, int]] = set()


def remove_stale(folder: str | Path) -> None:
    """Remove the temporary files in ``folder`` left by processes of this host that died
    while writing (another host's, or a live process's, are left alone). Done once per
    folder per process, at its first write there: a resumed run clears what the killed
    run left, and a folder of many files is listed once, not at every write."""
    folder = Path(folder)
    key = (str(folder.resolve()), os.getpid())
    if key in _swept:
        return
    _swept.add(key)
    tag = f".{socket.gethostname()}-"
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp") and tag in name):
                continue
            pid = name[name.rindex(tag) + len(tag) : -len(".tmp")]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open ``path`` for writing so that it is replaced all at once: the writes go to
    :func:`temporary_path`, which is flushed, fsynced and renamed over ``path`` when the
    block ends without an exception (on an exception it is removed and ``path`` is left
    as it was). ``mode`` is ``"w"`` or ``"wb"``; ``kwargs`` go to :func:`open`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    remove_stale(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """``obj`` as JSON (serialised first, so an unserialisable value leaves the old file)."""
    return write_text(path, json.dumps(obj, indent=indent))


def torch_save(obj: Any, path: str | Path) -> Path:
    """:func:`torch.save` through :func:`atomic_open`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def replace_file(src: str | Path, dst: str | Path) -> Path:
    """Move ``src`` over ``dst`` (same file system) durably: fsync, rename, fsync folder."""
    src, dst = Path(src), Path(dst)
    with open(src, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(src, dst)
    _fsync_dir(dst.parent)
    return dst


def read_json(path: str | Path, fix: str | None = None) -> Any:
    """The JSON in ``path``; :class:`CorruptFileError` (naming ``path`` and ``fix``) when
    it is empty, truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise corrupt(path, err, fix) from err


def check_finite_weights(path: str | Path, state: Any, fix: str | None = None) -> Any:
    """``state`` (a state dict read from ``path``) unchanged, or :class:`CorruptFileError`
    naming the first floating-point tensor that holds NaN or inf."""
    for key, value in state.items():
        if (
            torch.is_tensor(value)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            raise corrupt(path, f"weight {key} holds NaN or inf", fix)
    return state


# what torch.load raises on a truncated or damaged file
_TORCH_LOAD_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
                      ValueError, KeyError, IndexError)  # fmt: skip


def torch_load(path: str | Path, fix: str | None = None, **kwargs: Any) -> Any:
    """:func:`torch.load` (``weights_only=True`` unless given, ``map_location="cpu"``
    unless given); a truncated or damaged file raises :class:`CorruptFileError`
    naming ``path`` and ``fix``."""
    path = Path(path)
    kwargs.setdefault("weights_only", True)
    kwargs.setdefault("map_location", "cpu")
    if path.is_file() and path.stat().st_size == 0:
        raise corrupt(path, "empty file", fix)
    try:
        return torch.load(path, **kwargs)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (*_TORCH_LOAD_ERRORS, OSError) as err:  # OSError: a seek past a cut-off end
        raise corrupt(path, err, fix) from err


# ------------------------------------------------------------------ JSON lines
def append_jsonl(path: str | Path, record: Any) -> None:
    """Append ``record`` as one JSON line, flushed and fsynced before returning (the
    line is written with a single ``write``, so a crash cuts off at most this line)."""
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path, fix: str | None = None, repair: bool = True) -> list[Any]:
    """The records of a JSON-lines file (``[]`` when it does not exist).

    A last line without its newline was cut off by a crash: it is dropped with a warning
    and, with ``repair``, cut from the file so the next append starts a fresh line. Any
    other unreadable line raises :class:`CorruptFileError` naming ``path`` and ``fix``."""
    path = Path(path)
    if not path.exists():
        return []
    *complete, tail = path.read_bytes().split(b"\n")
    records: list[Any] = []
    for number, raw in enumerate(complete, start=1):
        try:
            records.append(json.loads(raw.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as err:
            raise corrupt(path, f"line {number}: {err}", fix) from err
    if tail:
        log.warning(
            "%s: its last line was cut off by a crash (%d bytes): ignored, that entry is redone",
            path,
            len(tail),
        )
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(sum(len(raw) + 1 for raw in complete))
                fh.flush()
                os.fsync(fh.fileno())
    return records
