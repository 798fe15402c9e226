"""The hwnas pipeline as a pure function of the composed Hydra config.

``run(cfg)`` validates the config, builds the run :class:`~hwnas.app.context.Context`,
checks every stage's constraints (:func:`~hwnas.app.checks.preflight`) and only then writes:
the resolved config, Hydra's record of the run, the latency model used, and the
stages (zero_shot, supernet, search, final) in order, each under
``cfg.paths.output_dir/<stage>/`` and finishing with a ``DONE.json`` marker; rerunning
in the same folder skips finished stages (resume).

Crash safety: every file is written through :mod:`hwnas.core.atomic` (a kill leaves the old
file or the new one), the searches journal their evaluations and replay them on resume
(:mod:`hwnas.search.journal`), and the trainings keep checkpoints they resume from
(:func:`hwnas.training.trainer.fit`). Each stage starts from global RNG states seeded
from (seed, stage), so a stage resumed in a new process draws what it would have drawn
after the earlier stages in the same process.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hwnas.app.checks import STAGES, preflight, validate
from hwnas.app.context import ConfigError, Context, build_context
from hwnas.app.stages import STEPS
from hwnas.core import atomic
from hwnas.core.runtime import resolve_threads, torch_threads
from hwnas.core.seeding import derive_seed

log = logging.getLogger(__name__)

CONFIG_FILE = "hwnas_config.yaml"
SPACE_FILE = "space.json"

__all__ = ["CONFIG_FILE", "STAGES", "ConfigError", "Context", "run", "validate"]


def check_run_dir(out: Path, cfg: DictConfig) -> None:
    """Refuse a folder that holds a run made with another config (writes nothing)."""
    path = out / CONFIG_FILE
    if not path.exists():
        return
    try:
        recorded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise atomic.corrupt(
            path, err, f"restore {path} (a copy is in {out / '.hydra'}) or start a new folder"
        ) from err
    mine, theirs = _comparable(cfg), _comparable(recorded)
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ConfigError(
            f"{out} holds a run made with a different config (differs in {diff[:5]}); "
            f"resume it with its own config or choose a new folder (hydra.run.dir=...)"
        )


def _comparable(cfg: DictConfig) -> dict[str, Any]:
    """Flattened resolved config without keys that may differ between resumes."""
    data = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(data, "")
    # how often a training checkpoints does not change its results
    volatile = (
        "stages",
        "threads",
        "progress",
        "progress_interval_s",
        "trainer.checkpoint_every_n_steps",
        "zero_shot.workers",  # how many processes share a search (its study is kept)
        "search.workers",
    )
    return {k: v for k, v in flat.items() if k not in volatile and not k.startswith("paths.")}


def record_run(out: Path, cfg: DictConfig, ctx: Context) -> None:
    """Write what reproduces the run: the resolved config, Hydra's ``.hydra/`` record
    (when run under Hydra), the latency model the searches used and, for a model whose
    space is derived (``describe()``), that space as ``space.json``. A resumed run keeps
    the record its first start wrote (:func:`check_run_dir` made sure it matches) and
    only adds what is missing, so a refused or resumed rerun rewrites nothing."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / CONFIG_FILE).exists():
        _record_missing(out, ctx)
        return
    atomic.write_text(out / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        folder = out / ".hydra"
        atomic.write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
        hydra_yaml = OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg}))
        atomic.write_text(folder / "hydra.yaml", hydra_yaml)
        atomic.write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
    # the cost model writes its record itself: into a scratch folder, then moved over
    with tempfile.TemporaryDirectory(dir=out, prefix=".record.") as scratch:
        ctx.cost_model.save_record(scratch)
        for written in sorted(Path(scratch).iterdir()):
            if written.is_file():
                atomic.replace_file(written, out / written.name)
    derived = ctx.model.describe()
    if derived is not None:  # a space derived from a model (model=bootstrap): space.json
        atomic.write_json(out / SPACE_FILE, derived)


def _record_missing(out: Path, ctx: Context) -> None:
    """The latency model and derived space of a resumed run, where they are missing."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".record.") as scratch:
        ctx.cost_model.save_record(scratch)
        for written in sorted(Path(scratch).iterdir()):
            if written.is_file() and not (out / written.name).exists():
                atomic.replace_file(written, out / written.name)
    derived = ctx.model.describe()
    if derived is not None and not (out / SPACE_FILE).exists():
        atomic.write_json(out / SPACE_FILE, derived)


def stage_summary(out: Path, stage: str) -> dict[str, Any] | None:
    """The ``DONE.json`` summary of a finished stage, or None; a truncated or damaged
    one is a :class:`~hwnas.core.atomic.CorruptFileError` naming it."""
    path = out / stage / "DONE.json"
    if not path.exists():
        return None
    return atomic.read_json(path, f"delete {path} and rerun to redo the {stage} stage")


def mark_done(out: Path, stage: str, summary: Mapping[str, Any]) -> None:
    atomic.write_json(out / stage / "DONE.json", dict(summary))


def seed_stage(seed: int, stage: str) -> None:
    """Seed every global RNG from (``seed``, ``stage``) before a stage runs, so what the
    stage draws does not depend on which stages ran before it in this process."""
    L.seed_everything(derive_seed(seed, "stage", stage) % 2**32, workers=True, verbose=False)


# stages whose trainings every process of a multi-process (DDP) run takes part in
TRAINING_STAGES = ("supernet", "final")


def follow(ctx: Context, poll_s: float = 1.0) -> dict[str, float]:
    """The pipeline in a process of rank > 0 of a multi-process (DDP) training: it takes
    part in the trainings of the supernet and final stages and writes nothing; for the
    other stages it waits for rank zero's ``DONE.json``. Stops when the process that
    started it (Lightning's rank zero) has exited."""
    parent = os.getppid()
    log.info("rank %d: joins the trainings of %s", ctx.rank, list(TRAINING_STAGES))
    for stage in ctx.cfg.stages:
        if stage in TRAINING_STAGES:
            if stage_summary(ctx.out, stage) is None:
                seed_stage(ctx.seed, stage)
                STEPS[stage](ctx)
            continue
        while (done := stage_summary(ctx.out, stage)) is None:
            if os.getppid() != parent:
                raise RuntimeError(f"rank {ctx.rank}: rank zero exited before stage {stage}")
            time.sleep(poll_s)
        ctx.results[stage] = done
    return {}


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the configured stages; returns the run's headline metrics."""
    validate(cfg)
    for name in ("lightning.pytorch", "lightning.fabric"):  # keep the run log readable
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(cfg.paths.output_dir)
    check_run_dir(out, cfg)
    threads = resolve_threads(cfg.threads)
    with torch_threads(threads):
        ctx = build_context(cfg)
        if ctx.rank != 0:
            return follow(ctx)
        preflight(ctx)
        for stage in cfg.stages:  # a damaged DONE.json is refused before anything is written
            stage_summary(out, stage)
        record_run(out, cfg, ctx)
        log.info("output folder: %s (%d CPU threads)", out, threads)
        log.info(
            "space %s (%d archs); cost model: %s; constraints: %s",
            ctx.model.space.name,
            ctx.model.space.size(),
            ctx.cost_model.describe(),
            ctx.constraints.describe(),
        )
        metrics: dict[str, float] = {}
        for stage in cfg.stages:
            done = stage_summary(out, stage)
            if done is not None:
                log.info("stage %s: already done in %s, skipped", stage, out / stage)
                ctx.results[stage] = done
            else:
                log.info("stage %s: starting", stage)
                seed_stage(ctx.seed, stage)
                ctx.results[stage] = STEPS[stage](ctx)
                mark_done(out, stage, ctx.results[stage])
            metrics.update({k: float(v) for k, v in ctx.results[stage].get("metrics", {}).items()})
    atomic.write_json(out / "metrics.json", metrics)
    return metrics
