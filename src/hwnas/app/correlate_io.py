"""Input tables, proxy inputs, the score journal, rank statistics and report files
of the correlation harness (:mod:`hwnas.app.correlate`)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from scipy import stats

from hwnas.core.types import to_plain

log = logging.getLogger(__name__)

JOURNAL_NAME = "scores.jsonl"


# -------------------------------------------------------------------- input table
def load_table(
    csv_path: str | Path | None,
    arch_column: str,
    accuracy_column: str,
    filters: Mapping[str, Any] | None = None,
    n: int | None = None,
    seed: int = 0,
    from_record: Any = None,
) -> pd.DataFrame:
    """Read, filter and (optionally) subsample the arch/accuracy table.

    A ``.csv`` file is read as it is; a ``.jsonl`` file (one JSON object a line, e.g.
    NAS-Bench-BERT) is flattened (``scores.cola``), and when it has no ``arch_column``
    the space's ``from_record(record) -> arch string`` makes that column.
    The ``n``-row sample is the first ``n`` of a seeded permutation, so a larger ``n``
    with the same seed contains every arch of a smaller one (resumable growth).
    """
    if csv_path is None or str(csv_path) in ("", "???"):
        raise ValueError(
            "csv_path is required: python -m hwnas.correlate csv_path=/path/to/archs.csv"
        )
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"csv_path {str(path)!r} does not exist; pass an existing CSV")
    df = _read_jsonl(path, arch_column, from_record) if _is_jsonl(path) else pd.read_csv(path)
    wanted = [arch_column, accuracy_column, *(filters or {})]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise KeyError(
            f"column(s) {missing} not in {path.name}; columns present: {list(df.columns)} "
            "(set arch_column=/accuracy_column=/filter to one of them)"
        )
    for col, value in (filters or {}).items():
        keep = df[col].astype(str) == str(value)
        if not keep.any():
            present = sorted(df[col].astype(str).unique())[:20]
            raise ValueError(f"filter {col}=={value!r} keeps no rows; values present: {present}")
        df = df[keep]
    df = df.dropna(subset=[arch_column, accuracy_column])
    dupes = df[arch_column].duplicated()
    if dupes.any():
        log.warning("dropping %d repeated archs (first occurrence kept)", int(dupes.sum()))
        df = df[~dupes]
    if n is not None and int(n) < len(df):
        order = np.random.default_rng(int(seed)).permutation(len(df))[: int(n)]
        df = df.iloc[np.sort(order)]
    return df.reset_index(drop=True)


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def _read_jsonl(path: Path, arch_column: str, from_record: Any) -> pd.DataFrame:
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            msg = f"{path.name}:{lineno} is not valid JSON ({err.msg}); fix the line"
            raise ValueError(msg) from err
        if not isinstance(rec, dict):
            raise ValueError(f"{path.name}:{lineno} is not a JSON object; one object a line")
        records.append(rec)
    if not records:
        raise ValueError(f"{path.name} holds no records; one JSON object a line")
    df = pd.json_normalize(records)
    if arch_column not in df.columns and from_record is not None:
        archs = []
        for lineno, rec in enumerate(records, start=1):
            try:
                archs.append(from_record(rec))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path.name} record {lineno}: {err}") from err
        df[arch_column] = archs
    return df


# ------------------------------------------------------------------------ journal
class Journal:
    """Append-only JSON-lines record of per-arch scores (one line per scoring pass).

    Lines for the same arch are merged on load (later values win), so an interrupted
    run loses at most the arch in flight.
    """

    def __init__(self, path: str | Path, settings: Mapping[str, Any]):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.records: dict[str, dict[str, Any]] = {}

    def load(self, source: str | Path) -> int:
        """Merge the records of ``source`` (a journal file or a run dir holding one)."""
        src = Path(source)
        if src.is_dir():
            src = src / JOURNAL_NAME
        if not src.is_file():
            raise FileNotFoundError(f"resume_from {str(source)!r}: no {JOURNAL_NAME} found there")
        count = 0
        for lineno, line in enumerate(src.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interrupted write
                log.warning("%s:%d is not valid JSON; ignoring it", src, lineno)
                continue
            if rec.get("settings") != self.settings:
                raise ValueError(
                    f"{src} was scored with settings {rec.get('settings')}, this run uses "
                    f"{self.settings}; use the same settings or a fresh output dir"
                )
            self._merge(rec)
            count += 1
        return count

    def _merge(self, rec: Mapping[str, Any]) -> None:
        cur = self.records.setdefault(
            rec["arch"], {"arch": rec["arch"], "scores": {}, "failures": {}, "seconds": {}}
        )
        for key in ("scores", "failures", "seconds"):
            cur[key].update(rec.get(key, {}))
        for name in rec.get("scores", {}):
            cur["failures"].pop(name, None)
        if "descore_raw" in rec:
            cur["descore_raw"] = rec["descore_raw"]

    def done(self, arch: str) -> set[str]:
        """Names already scored (or failed) for ``arch``."""
        rec = self.records.get(arch)
        return set() if rec is None else set(rec["scores"]) | set(rec["failures"])

    def append(self, rec: Mapping[str, Any]) -> None:
        line = dict(rec, settings=self.settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(line, default=_jsonable) + "\n")
            fh.flush()
        self._merge(line)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# ---------------------------------------------------------------- rank statistics
def rank_correlation(
    x: Sequence[float], y: Sequence[float], bootstrap: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Spearman rho and Kendall tau of ``x`` vs ``y`` with percentile bootstrap 95% CIs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(len(x))}
    if len(x) < 3:
        nan = float("nan")
        return out | {k: nan for k in _STAT_KEYS}
    out["spearman"] = float(stats.spearmanr(x, y).statistic)
    out["kendall"] = float(stats.kendalltau(x, y).statistic)
    rng = np.random.default_rng(int(seed))
    rhos, taus = [], []
    for _ in range(int(bootstrap)):
        idx = rng.integers(0, len(x), len(x))
        rhos.append(stats.spearmanr(x[idx], y[idx]).statistic)
        taus.append(stats.kendalltau(x[idx], y[idx]).statistic)
    for key, vals in (("spearman", rhos), ("kendall", taus)):
        lo, hi = _percentiles(vals)
        out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
    return out


def nan_last(values: Sequence[float]) -> np.ndarray:
    """``values`` with every non-finite entry (a failed score) set below the lowest
    finite one, so rank statistics count a failure as the worst score."""
    v = np.asarray(values, dtype=float).copy()
    bad = ~np.isfinite(v)
    v[bad] = (v[~bad].min() - 1.0) if (~bad).any() else 0.0
    return v


_STAT_KEYS = ("spearman", "kendall", "spearman_lo", "spearman_hi", "kendall_lo", "kendall_hi")


def _percentiles(values: Iterable[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(arr, [2.5, 97.5])
    return float(lo), float(hi)


# ------------------------------------------------------------------- report files
def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) + "\n"


def with_ci_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Collapse ``stat``/``stat_lo``/``stat_hi`` into one ``stat [lo, hi]`` text column."""
    out = table.copy()
    for key in ("spearman", "kendall"):
        if key in out:
            out[key] = [
                f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(v) else ""
                for v, lo, hi in zip(out[key], out[f"{key}_lo"], out[f"{key}_hi"], strict=True)
            ]
            out = out.drop(columns=[f"{key}_lo", f"{key}_hi"])
    return out


def scatter_plot(
    score: np.ndarray,
    accuracy: np.ndarray,
    name: str,
    rho: float,
    path: Path,
    lower_is_better: bool = False,
) -> None:
    """Save a raw-score-vs-accuracy scatter (Agg backend, no display needed); ``rho`` is
    the oriented Spearman shown in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = np.isfinite(score) & np.isfinite(accuracy)
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=100)
    x, label = score[keep], name
    mag, one_sign = np.abs(x), bool(np.all(x >= 0) or np.all(x <= 0))
    nonzero = mag[mag > 0]
    if one_sign and nonzero.size and nonzero.max() / nonzero.min() > 1e3:
        # one-signed scores spanning orders of magnitude (synflow, ntk) on a log10 axis;
        # exact zeros (no path from input to output) sit one decade below the smallest
        sign = -1.0 if np.any(x < 0) else 1.0
        x = sign * np.log10(np.where(mag > 0, mag, nonzero.min() / 10.0))
        label = f"log10({name})" if sign > 0 else f"-log10(-{name})"
    ax.scatter(x, accuracy[keep], s=6, alpha=0.6)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy")
    note = ", lower is better" if lower_is_better else ""
    ax.set_title(f"{name}{note}: Spearman {rho:.3f} (n={int(keep.sum())})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------- image batches
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CIFAR_NORM = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


def image_batch(
    data_dir: str | Path | None,
    input_shape: Sequence[int],
    batch_size: int,
    norm: Mapping[str, Sequence[float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``batch_size`` images of ``data_dir`` (sorted by name) as a normalised
    (B, C, H, W) batch; labels come from a trailing ``_<int>`` in the file names."""
    if not data_dir:
        raise ValueError("inputs=data needs data_dir=/path/to/images (PNG/JPEG files)")
    folder = Path(data_dir).expanduser()
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"data_dir {str(folder)!r} holds no PNG/JPEG images")
    if len(files) < batch_size:
        log.warning("data_dir has %d images < batch_size=%d; using all", len(files), batch_size)
    files = files[:batch_size]
    from PIL import Image

    c, h, w = (int(d) for d in input_shape)
    arrays = []
    for p in files:
        with Image.open(p) as img:
            img = img.convert("RGB" if c == 3 else "L").resize((w, h))
            arrays.append(np.asarray(img, dtype=np.float32).reshape(h, w, c) / 255.0)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
    norm = dict(norm or (_CIFAR_NORM if c == 3 else {"mean": [0.5], "std": [0.5]}))
    mean = torch.tensor(norm["mean"], dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], dtype=x.dtype).view(1, -1, 1, 1)
    x = (x - mean) / std
    found = [re.search(r"_(\d+)$", p.stem) for p in files]
    y = torch.tensor([int(m.group(1)) for m in found]) if all(found) else None
    return x, y


# ------------------------------------------------------------------ proxy inputs
def make_device(name: str) -> torch.device:
    """``torch.device(name)``; a clear error when CUDA is asked for but absent."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but CUDA is not available; use device=cpu")
    return torch.device(name)


def make_inputs(
    cfg: DictConfig,
    input_shape: Sequence[int],
    device: torch.device,
    data_free: Any = None,
) -> tuple[Any, Any]:
    """The one batch every arch is scored on, and a JSON-able description of its source.

    ``inputs=gaussian``: N(0, 1) noise of the space's input shape, labels drawn per proxy
    (or the space's own data-free batch, ``data_free(batch, shape, seed)``, e.g. random
    token ids through an embedding);
    ``inputs=data``: ``proxy_batch(batch_size, seed)`` of the datamodule built from the
    ``data`` node (e.g. ``data=cifar10 data.data_dir=...``), with its labels;
    ``inputs=images``: the first ``batch_size`` image files of ``image_dir``.
    """
    import hwnas.proxies as proxy_lib

    kind = str(cfg.get("inputs", "gaussian"))
    bs, classes, seed = int(cfg.batch_size), int(cfg.num_classes), int(cfg.seed)
    if kind == "gaussian" and data_free is not None:
        x = data_free(bs, tuple(int(d) for d in input_shape), seed)
        inp, source = proxy_lib.ProxyInputs(x=x, y=None, num_classes=classes), "space"
    elif kind == "gaussian":
        inp, source = proxy_lib.gaussian_inputs(input_shape, bs, classes, seed), None
    elif kind == "data":
        data_cfg = to_plain(cfg.get("data"))
        if not data_cfg:
            raise ValueError(
                "inputs=data needs a datamodule config: add data=cifar10 (or another "
                "conf/data entry) with data.data_dir=..., or use inputs=gaussian"
            )
        inp, source = proxy_lib.datamodule_inputs(data_cfg, bs, seed), data_cfg
    elif kind == "images":
        folder = cfg.get("image_dir")
        x, y = image_batch(folder, input_shape, bs, to_plain(cfg.get("image_norm")))
        inp, source = proxy_lib.ProxyInputs(x=x, y=y, num_classes=classes), str(folder)
    else:
        raise ValueError(f"inputs={kind!r} is not supported; use gaussian, data or images")
    if tuple(inp.x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"the {kind} batch has samples shaped {tuple(inp.x.shape[1:])} but space "
            f"{cfg.space!r} takes {tuple(input_shape)}; pick matching data"
        )
    inp.x = inp.x.to(device)
    if inp.y is not None:
        inp.y = inp.y.to(device)
    return inp, source
