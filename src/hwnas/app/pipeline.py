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
from hwnas.core.checks import first_non_finite
from hwnas.core.runtime import resolve_threads, torch_threads
from hwnas.core.seeding import derive_seed
from hwnas.hardware.records import MEASURED_NAME

log = logging.getLogger(__name__)

CONFIG_FILE = "hwnas_config.yaml"
SPACE_FILE = "space.json"

__all__ = ["CONFIG_FILE", "STAGES", "ConfigError", "Context", "run", "validate"]


# the stages that read each group's settings: a key may change when a run is resumed
# (after a divergence, say) only while none of them has finished
READERS = {
    "zero_shot": ("zero_shot",),
    "supernet": ("supernet", "search"),
    "search": ("supernet", "search"),
    "final": ("final",),
    "quantize": ("quantize",),
    "trainer": ("supernet", "final", "quantize"),
}
AMENDMENTS_FILE = "amendments.jsonl"


def check_run_dir(out: Path, cfg: DictConfig) -> dict[str, list[Any]]:
    """Compare ``cfg`` with the config a run folder was made with (writes nothing).

    A setting may change on resume only while every stage that reads it is unfinished
    (:data:`READERS`: lowering ``final.lr`` after the final training diverged); the
    changes are returned as ``{key: [recorded, now]}`` for :func:`record_run` to record.
    Any other difference (the model, the data, the seed, a finished stage's settings)
    is refused: that folder holds another run."""
    path = out / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        recorded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise atomic.corrupt(
            path, err, f"restore {path} (a copy is in {out / '.hydra'}) or start a new folder"
        ) from err
    mine, theirs = _comparable(cfg), _comparable(recorded)
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if not diff:
        return {}
    finished = {s for s in STAGES if (out / s / "DONE.json").exists()}
    fixed = []
    for key in diff:
        readers = READERS.get(key.split(".", 1)[0])
        if readers is None:
            fixed.append(f"{key} (the whole run's)")
        elif finished & set(readers):
            fixed.append(f"{key} (read by {sorted(finished & set(readers))[0]}, finished)")
    if fixed:
        raise ConfigError(
            f"{out} holds a run made with a different config (differs in {fixed[:4]}); "
            "only settings of unfinished stages may change on resume: resume it with its "
            "own config or choose a new folder (hydra.run.dir=...)"
        )
    return {k: [theirs.get(k), mine.get(k)] for k in diff}


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


def record_run(
    out: Path, cfg: DictConfig, ctx: Context, amended: Mapping[str, list[Any]] | None = None
) -> None:
    """Write what reproduces the run: the resolved config, Hydra's ``.hydra/`` record
    (when run under Hydra), the latency model the searches used and, for a model whose
    space is derived (``describe()``), that space as ``space.json``. A resumed run keeps
    the record its first start wrote (:func:`check_run_dir` made sure it matches) and
    only adds what is missing, so a refused or resumed rerun rewrites nothing; a resume
    that changed settings of unfinished stages (``amended``, from :func:`check_run_dir`)
    rewrites the config and appends the change to ``amendments.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / CONFIG_FILE).exists():
        if amended:
            unfinished = [s for s in STAGES if not (out / s / "DONE.json").exists()]
            atomic.append_jsonl(
                out / AMENDMENTS_FILE,
                {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": dict(amended),
                 "unfinished_stages": unfinished},
            )  # fmt: skip
            atomic.write_text(out / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
            log.warning(
                "resumed with changed settings of unfinished stages %s (recorded in %s)",
                {k: f"{a} -> {b}" for k, (a, b) in amended.items()},
                out / AMENDMENTS_FILE,
            )
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
    save_records(out, ctx)
    derived = ctx.model.describe()
    if derived is not None:  # a space derived from a model (model=bootstrap): space.json
        atomic.write_json(out / SPACE_FILE, derived)


def save_records(
    out: Path, ctx: Context, keep: bool = False, only: tuple[str, ...] | None = None
) -> None:
    """The cost model's latency record in ``out``: it writes it into a scratch folder,
    each file is then moved over (with ``keep``, only where missing; with ``only``,
    only files of these names)."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".record.") as scratch:
        ctx.cost_model.save_record(scratch)
        for written in sorted(Path(scratch).iterdir()):
            if not written.is_file() or (only is not None and written.name not in only):
                continue
            if not (keep and (out / written.name).exists()):
                atomic.replace_file(written, out / written.name)


def _record_missing(out: Path, ctx: Context) -> None:
    """The latency model and derived space of a resumed run, where they are missing."""
    save_records(out, ctx, keep=True)
    derived = ctx.model.describe()
    if derived is not None and not (out / SPACE_FILE).exists():
        atomic.write_json(out / SPACE_FILE, derived)


def stage_summary(out: Path, stage: str) -> dict[str, Any] | None:
    """The ``DONE.json`` summary of a finished stage, or None; a truncated or damaged
    one is a :class:`~hwnas.core.atomic.CorruptFileError` naming it."""
    path = out / stage / "DONE.json"
    if not path.exists():
        return None
    fix = f"delete {path} and rerun to redo the {stage} stage"
    summary = atomic.read_json(path, fix)
    bad = first_non_finite(summary)
    if bad is not None:  # a result computed from NaN is never passed on
        raise atomic.CorruptFileError(f"{path}: {bad} is not a finite number; {fix}")
    return summary


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
    amended = check_run_dir(out, cfg)
    threads = resolve_threads(cfg.threads)
    with torch_threads(threads):
        ctx = build_context(cfg)
        if ctx.rank != 0:
            return follow(ctx)
        preflight(ctx)
        for stage in cfg.stages:  # a damaged DONE.json is refused before anything is written
            stage_summary(out, stage)
        record_run(out, cfg, ctx, amended)
        log.info("output folder: %s (%d CPU threads)", out, threads)
        log.info(
            "space %s (%d archs); cost model: %s; constraints: %s",
            ctx.model.space.name,
            ctx.model.space.size(),
            ctx.cost_model.describe(),
            ctx.constraints.describe(),
        )
        metrics: dict[str, float] = {}
        started = time.monotonic()
        for number, stage in enumerate(cfg.stages, start=1):
            done = stage_summary(out, stage)
            if done is not None:
                log.info("stage %s: already done in %s, skipped", stage, out / stage)
                ctx.results[stage] = done
            else:
                log.info(
                    "stage %s: starting (%d of %d; the run so far %.1f min)",
                    stage, number, len(cfg.stages), (time.monotonic() - started) / 60,
                )  # fmt: skip
                begun = time.monotonic()
                seed_stage(ctx.seed, stage)
                ctx.results[stage] = STEPS[stage](ctx)
                log.info("stage %s: done in %.1f min", stage, (time.monotonic() - begun) / 60)
                # measured latencies (latency=measured) grow with every stage: keep them
                save_records(out, ctx, only=(MEASURED_NAME,))
                mark_done(out, stage, ctx.results[stage])
            metrics.update({k: float(v) for k, v in ctx.results[stage].get("metrics", {}).items()})
    atomic.write_json(out / "metrics.json", metrics)
    return metrics
