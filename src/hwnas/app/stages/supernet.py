"""Stage 2, supernet: progressive-shrinking training (Lightning), with a zero-shot search
between phases for the pool the next phase samples from."""

from __future__ import annotations

import logging
from typing import Any

from hwnas.app.checks import search_constraints
from hwnas.app.context import Context
from hwnas.app.device import training_note
from hwnas.app.stages.common import _zero_shot_search
from hwnas.core import atomic
from hwnas.hardware.constraints import InfeasibleError
from hwnas.search.journal import JOURNAL_NAME, weights_digest
from hwnas.search.result import SearchResult
from hwnas.spaces.base import SearchSpace
from hwnas.training.callbacks import ZeroShotSearchCallback
from hwnas.training.supernet import Phase, SupernetModule
from hwnas.training.trainer import CHECKPOINT, build_trainer, fit, logged_metrics

log = logging.getLogger(__name__)


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.settings.supernet
    folder = ctx.stage_dir("supernet")
    log.info("stage supernet: phase searches' proxies on %s (zero_shot.device)%s",
             ctx.device, training_note(ctx))  # fmt: skip
    phases = [Phase(p.name, tuple(p.elastic), int(p.epochs), float(p.lr)) for p in cfg.phases]
    calib = list(ctx.dm.calibration_loader(int(cfg.calib_samples)))
    module = SupernetModule(
        ctx.model,
        phases,
        num_random=cfg.num_random,
        kd_temperature=cfg.kd_temperature,
        kd_alpha=cfg.kd_alpha,
        label_smoothing=cfg.label_smoothing,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        seed=ctx.seed,
        calibration=lambda: calib,
        calib_samples=int(cfg.calib_samples),
        task=ctx.dm.task(label_smoothing=float(cfg.label_smoothing)),
        optimizer=str(cfg.optimizer),
        teacher=str(cfg.teacher),
        teacher_path=folder / "teacher.pt",
        sync_batchnorm=bool(ctx.settings.trainer.sync_batchnorm),
        warmup_fraction=float(cfg.warmup_fraction),
        smallest=bool(cfg.smallest),
        kd_hidden=float(cfg.kd_hidden),
        importance=str(cfg.importance),
        importance_data=lambda: ctx.dm.calibration_loader(int(cfg.importance_samples)),
    )
    # the pool may keep to stage search's latency cap: each step then trains subnets of
    # the region the final choice comes from
    pool_constraints = search_constraints(ctx)[0] if cfg.pool_within_cap else ctx.constraints

    def search(space: SearchSpace, i: int) -> SearchResult | None:
        journal = folder / f"phase{i}_{phases[i].name}" / JOURNAL_NAME
        try:
            return _zero_shot_search(
                ctx,
                space,
                ctx.seed + i,
                f"phase {i} zero-shot search",
                journal,
                int(cfg.search_budget),
                constraints=pool_constraints,
            )
        except InfeasibleError as err:
            log.warning("phase %d: %s; the phase samples its space uniformly", i, err)
            return None

    trainer = build_trainer(
        ctx.settings.trainer,
        folder,
        max_epochs=module.total_epochs,
        title="supernet",
        limit_train_batches=cfg.limit_train_batches,
        callbacks=[ZeroShotSearchCallback(search, int(cfg.pool_size), folder)],
        checkpoint=folder / "checkpoints" / CHECKPOINT,
        checkpoint_key=f"supernet:{weights_digest(ctx.model)}",  # the initial weights
        **ctx.progress,
    )
    fit(trainer, module, ctx.dm)
    if not trainer.is_global_zero:  # the other processes of a DDP training stop here
        return {}
    atomic.torch_save(ctx.model.state_dict(), folder / "supernet.pt")
    metrics = {k: v for k, v in logged_metrics(trainer).items() if k.startswith("val/")}
    last = module.pools.get(len(phases) - 1, [])
    return {
        "epochs": module.total_epochs,
        "pools": {str(i): len(p) for i, p in module.pools.items()},
        # the subnets the last phase trained (stage search measures them with
        # pool_within_cap: they are the best-trained ones under its cap)
        "last_pool": [a.to_dict() for a in last],
        "metrics": {f"supernet/{k[4:]}": v for k, v in metrics.items()},
    }
