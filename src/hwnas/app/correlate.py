"""Rank-correlation harness: how well do train-free proxies order architectures?

Reads a table of architectures with trained accuracies (e.g. NAS-Bench-201), builds
each network through the arch-parser registry, scores it with every requested proxy
and the DE-Score, and reports Spearman / Kendall correlations with bootstrap CIs::

    python -m hwnas.correlate csv_path=archs.csv accuracy_column=val_accuracy \
        filter.dataset=cifar10 proxies=all

Scores are journalled per arch to ``scores.jsonl`` in the output dir; a rerun over
the same dir (or ``resume_from=<dir|jsonl>``) skips what is already scored.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from hwnas.app.config import config_dir
from hwnas.app.correlate_hwnas import SPACE as HWNAS_SPACE
from hwnas.app.correlate_hwnas import register_hwnas_space
from hwnas.app.correlate_io import (
    JOURNAL_NAME,
    Journal,
    load_table,
    make_device,
    make_inputs,
    nan_last,
    rank_correlation,
    scatter_plot,
    to_markdown,
    with_ci_columns,
)
from hwnas.core.types import to_plain
from hwnas.proxies.base import NotApplicable
from hwnas.spaces.parsing import ArchParser, get_arch_parser

log = logging.getLogger(__name__)

DESCORE = "descore"  # column of the primary DE-Score; variants are ``descore_<name>``


def run_correlation(cfg: DictConfig | Mapping[str, Any]) -> dict[str, float]:
    """Score the table's archs and write the correlation report; returns
    ``{"spearman/<proxy>": rho, ...}`` (oriented so higher is better)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    import hwnas.proxies as proxy_lib  # registers the built-in proxies

    out_dir = Path(cfg.get("output_dir") or ".").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    hwnas_build = register_hwnas_space(cfg) if cfg.space == HWNAS_SPACE else {}
    parser = get_arch_parser(cfg.space)
    table = load_table(
        cfg.get("csv_path"),
        cfg.arch_column,
        cfg.accuracy_column,
        to_plain(cfg.get("filter")) or {},
        cfg.get("n"),
        int(cfg.seed),
        parser.from_record,
    )
    names = _proxy_names(cfg, proxy_lib.list_proxies())
    scorers = _descores(cfg, proxy_lib)
    for scorer in scorers.values():  # DE-Score terms come from the proxies' own scores
        terms = descore_terms(scorer, cfg.get("latency_proxy"))
        names += [p for p in terms.values() if p not in names]
    build_kwargs = {} if hwnas_build else to_plain(cfg.get(cfg.space)) or {}
    device = make_device(str(cfg.get("device", "cpu")))
    shape = tuple(int(v) for v in cfg.get("input_shape") or parser.input_shape)
    inputs, source = make_inputs(cfg, shape, device, parser.data_free_input)
    settings = {
        "space": cfg.space,
        "build": hwnas_build or build_kwargs,
        "num_classes": int(cfg.num_classes),
        "batch_size": int(cfg.batch_size),
        "input_shape": list(shape),
        "inputs": str(cfg.inputs),
        "source": source,
        "seed": int(cfg.seed),
        "device": device.type,
    }
    journal = _open_journal(out_dir, settings, cfg.get("resume_from"))

    archs = [str(a) for a in table[cfg.arch_column]]
    todo = [a for a in archs if any(n not in journal.done(a) for n in names)]
    log.info("%d archs, %d to score with %s on %s", len(archs), len(todo), names, device)
    threads, before = cfg.get("num_threads"), torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        start = time.perf_counter()
        every = max(1, int(cfg.get("log_every", 10)))
        for k, arch in enumerate(todo, start=1):
            todo_names = [n for n in names if n not in journal.done(arch)]
            journal.append(score_arch(arch, parser, build_kwargs, todo_names, inputs, cfg))
            if k % every == 0 or k == len(todo):
                rate = k / (time.perf_counter() - start)
                eta = (len(todo) - k) / rate
                log.info("scored %d/%d archs (%.2f archs/s, ETA %.0f s)", k, len(todo), rate, eta)
    finally:
        torch.set_num_threads(before)

    scores = _score_table(table, cfg, journal, names, scorers)
    return _report(scores, table, cfg, names, scorers, proxy_lib, journal, out_dir)


def _open_journal(out_dir: Path, settings: Mapping[str, Any], resume_from: Any) -> Journal:
    """This run's journal, holding whatever was scored before in ``out_dir`` and in
    ``resume_from`` (copied over, so the new journal alone is complete)."""
    journal = Journal(out_dir / JOURNAL_NAME, settings)
    if journal.path.is_file():
        log.info("resuming: %d journal lines in %s", journal.load(journal.path), journal.path)
    if resume_from:
        other = Journal(out_dir / "_unused", settings)
        count = other.load(resume_from)
        if other.path.resolve() != journal.path.resolve():
            for arch, rec in other.records.items():
                if journal.done(arch) != other.done(arch):
                    journal.append(rec)
        log.info("resuming: %d journal lines from %s", count, resume_from)
    return journal


# ------------------------------------------------------------------------ scoring
def score_arch(
    arch: str,
    parser: ArchParser,
    build_kwargs: Mapping[str, Any],
    names: Sequence[str],
    inputs: Any,
    cfg: DictConfig,
) -> dict[str, Any]:
    """Journal record of one arch scored with ``names``; failures are recorded, not raised."""
    import hwnas.proxies as proxy_lib

    rec: dict[str, Any] = {"arch": arch, "scores": {}, "failures": {}, "seconds": {}}
    seed = int(cfg.seed)
    try:
        # Builders draw their initial weights from a generator seeded with ``seed``.
        model = parser.build_from_str(arch, int(cfg.num_classes), seed=seed, **build_kwargs)
        model = model.to(inputs.x.device)
    except Exception as exc:  # noqa: BLE001 - any build error is recorded per arch
        rec["failures"] = {n: f"build: {_err(exc)}" for n in names}
        return rec
    report = proxy_lib.score_proxies_report(names, model, inputs, seed)
    rec.update(scores=report.scores, failures=report.failures, seconds=report.seconds)
    return rec


def descore_terms(scorer: Any, latency_proxy: str | None = None) -> dict[str, str]:
    """Raw-dict key -> registered proxy that supplies it, for every weighted term of a
    DE-Score (latency from ``latency_proxy``, if any). The harness scores those proxies
    once, with the same model, batch and seed ``DEScore.components`` would use, and
    assembles the raws from them instead of scoring the network twice."""
    out = {}
    for key in scorer.terms:
        if key == "latency":
            if latency_proxy:
                out[key] = str(latency_proxy)
            continue
        out[key] = scorer.proxy_for(key)
    return out


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


def _proxy_names(cfg: DictConfig, registered: Sequence[str]) -> list[str]:
    want = cfg.get("proxies", "all")
    names = list(registered) if want in (None, "all") else [str(p) for p in to_plain(want)]
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise KeyError(f"unknown proxies {unknown}; registered proxies: {sorted(registered)}")
    skip = set(to_plain(cfg.get("exclude_proxies")) or [])
    return [n for n in names if n not in skip]


def _descores(cfg: DictConfig, proxy_lib: Any) -> dict[str, Any]:
    """DE-Score objects by column name: the primary ``proxy`` config, then ``variants``.

    The harness has no cost model. With ``latency_proxy=null`` the latency term is
    switched off (weight 0, no limit) whatever the config says; with e.g.
    ``latency_proxy=flops`` that proxy's score stands in for ``latency_ms`` in the
    penalty (after normalisation only its order matters) and the ms limit is dropped.
    """
    if not cfg.get("descore", True) or cfg.get("proxy") is None:
        return {}
    confs = {DESCORE: cfg.proxy}
    for name, conf in (cfg.get("variants") or {}).items():
        confs[f"{DESCORE}_{name}"] = conf
    stand_in = cfg.get("latency_proxy")
    if stand_in:
        proxy_lib.get_proxy(str(stand_in))  # KeyError listing the registered proxies
    out = {}
    for col, conf in confs.items():
        conf = OmegaConf.to_container(conf, resolve=True)
        conf["latency_limit_ms"] = None
        if not stand_in:
            weights = dict(conf.get("weights") or {})
            if weights.get("latency"):
                log.info("%s: no latency model in the harness; latency weight -> 0", col)
                weights["latency"] = 0.0
            conf["weights"], conf["latency_penalty"] = weights, False
        out[col] = proxy_lib.DEScore.from_config(conf)
    return out


# ------------------------------------------------------------------------ reports
def _score_table(
    table: pd.DataFrame, cfg: DictConfig, journal: Journal, names: Sequence[str], scorers
) -> pd.DataFrame:
    """arch, accuracy, one column per proxy, one per DE-Score. A DE-Score term that
    failed for an arch ranks that arch worst on the term (``DEScore.combine``); an arch
    whose every term failed gets NaN."""
    rows = []
    for arch, accuracy in zip(
        table[cfg.arch_column].astype(str), table[cfg.accuracy_column], strict=True
    ):
        found = journal.records.get(arch, {}).get("scores", {})
        row = {"arch": arch, "accuracy": float(accuracy)}
        row.update({n: float(found.get(n, np.nan)) for n in names})
        rows.append(row)
    df = pd.DataFrame(rows, columns=["arch", "accuracy", *names])
    for col, scorer in scorers.items():
        terms = descore_terms(scorer, cfg.get("latency_proxy"))
        ok = np.flatnonzero(np.isfinite(df[list(terms.values())].to_numpy(float)).any(axis=1))
        raws = [{key: _raw(df, journal, i, proxy) for key, proxy in terms.items()} for i in ok]
        values = np.full(len(df), np.nan)
        if len(ok):
            values[ok] = np.asarray(scorer.combine(raws), dtype=float)
        df[col] = values
    return df


def _raw(df: pd.DataFrame, journal: Journal, i: int, proxy: str) -> float | None:
    """A DE-Score term's raw value: the score, NaN where the proxy failed (ranked last),
    None where it does not apply to the network (left out of that network's sum)."""
    failed = journal.records.get(df.at[i, "arch"], {}).get("failures", {}).get(proxy, "")
    return None if failed.startswith(NotApplicable.__name__) else df.at[i, proxy]


def _report(scores, table, cfg, names, scorers, proxy_lib, journal, out_dir) -> dict[str, float]:
    scores.to_csv(out_dir / "scores.csv", index=False)
    in_table = set(scores["arch"])
    failures = [
        {"arch": arch, "proxy": p, "error": msg}
        for arch, rec in journal.records.items()
        if arch in in_table
        for p, msg in rec["failures"].items()
        if p in names
    ]
    fail_df = pd.DataFrame(failures, columns=["arch", "proxy", "error"])
    fail_df.to_csv(out_dir / "failures.csv", index=False)
    n_fail = fail_df["proxy"].value_counts().to_dict()
    seconds = _mean_seconds(journal, scores["arch"])
    boot, seed = int(cfg.get("bootstrap", 1000)), int(cfg.seed)
    acc = scores["accuracy"].to_numpy(float)
    rows, metrics = [], {}
    for col in [*names, *scorers]:
        if col in names:
            higher = proxy_lib.get_proxy(col).higher_is_better
            fails, secs = n_fail.get(col, 0), seconds.get(col, np.nan)
        else:  # a DE-Score: fails where any term failed, costs the sum of its terms
            higher = True
            terms = list(descore_terms(scorers[col], cfg.get("latency_proxy")).values())
            fails = int(scores[col].isna().sum())
            secs = sum(seconds.get(t, np.nan) for t in terms)
        sign = 1.0 if higher else -1.0
        oriented = sign * scores[col].to_numpy(float)
        stat = rank_correlation(oriented, acc, boot, seed)
        every = rank_correlation(nan_last(oriented), acc, 0)["spearman"]
        rows.append({"proxy": col, "sign": "+" if higher else "-", **stat, "failures": fails,
                     "spearman_all": every, "ms_per_arch": 1e3 * secs})  # fmt: skip
        metrics[f"spearman/{col}"] = stat["spearman"]
        if cfg.get("plots", True) and stat["n"] >= 3:
            path = out_dir / f"scatter_{col}.png"
            raw = scores[col].to_numpy(float)
            scatter_plot(raw, acc, col, stat["spearman"], path, lower_is_better=not higher)
    corr = pd.DataFrame(rows)
    corr.to_csv(out_dir / "correlations.csv", index=False)
    cols = ["proxy", "sign", "n", "failures", "spearman", "kendall", "spearman_all", "ms_per_arch"]
    md = with_ci_columns(corr)[cols]
    head = (
        f"Rank correlation with `{cfg.accuracy_column}` ({len(scores)} archs; 95% CIs from "
        f"{boot} bootstrap resamples; sign '-': score negated, lower is better; "
        "spearman/kendall over the archs the proxy scored, spearman_all over every arch "
        "with failures ranked last)\n\n"
    )
    (out_dir / "correlations.md").write_text(head + to_markdown(md))
    _agreement(scores, table, cfg, names, boot, seed, out_dir)
    log.info("correlations:\n%s", to_markdown(md))
    return metrics


def _agreement(scores, table, cfg, names, boot, seed, out_dir) -> None:
    """Spearman of our proxies against reference score columns present in the CSV."""
    mapping = to_plain(cfg.get("reference_columns")) or {}
    pairs = [(ours, ref) for ours, ref in mapping.items() if ours in names and ref in table.columns]
    if not pairs:
        return
    acc = scores["accuracy"].to_numpy(float)
    rows = []
    for ours, ref in pairs:
        x, r = scores[ours].to_numpy(float), table[ref].to_numpy(float)
        agree = rank_correlation(x, r, boot, seed)
        rows.append({
            "proxy": ours,
            "reference": ref,
            "n": agree["n"],
            "spearman_vs_reference": agree["spearman"],
            "spearman_vs_reference_lo": agree["spearman_lo"],
            "spearman_vs_reference_hi": agree["spearman_hi"],
            "ours_vs_accuracy": rank_correlation(x, acc, 0)["spearman"],
            "reference_vs_accuracy": rank_correlation(r, acc, 0)["spearman"],
        })  # fmt: skip
    df = pd.DataFrame(rows)
    df.to_csv(out_dir / "agreement.csv", index=False)
    head = (
        "Spearman of each proxy with its reference column of the input CSV (raw scores, "
        "95% bootstrap CI), and of each with accuracy\n\n"
    )
    (out_dir / "agreement.md").write_text(head + to_markdown(df))


def _mean_seconds(journal: Journal, archs: pd.Series) -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for arch in archs:
        for name, sec in journal.records.get(arch, {}).get("seconds", {}).items():
            acc.setdefault(name, []).append(sec)
    return {k: float(np.mean(v)) for k, v in acc.items()}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="correlate")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the primary DE-Score's Spearman (for sweepers)."""
    if not cfg.get("output_dir"):
        from hydra.core.hydra_config import HydraConfig

        OmegaConf.set_struct(cfg, False)
        cfg.output_dir = HydraConfig.get().runtime.output_dir
    try:
        metrics = run_correlation(cfg)
    except (ValueError, FileNotFoundError, KeyError) as err:  # input to fix: one line
        if os.environ.get("HWNAS_DEBUG"):
            raise
        print(f"error: {str(err).strip(chr(39))}", file=sys.stderr)
        raise SystemExit(2) from None
    return float(metrics.get(f"spearman/{DESCORE}", float("nan")))


if __name__ == "__main__":
    main()
