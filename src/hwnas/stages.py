"""The four pipeline stages; each takes the run :class:`Context` and returns a summary
(JSON-serialisable, with a ``metrics`` dict) after writing its artifacts."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from hwnas.hardware.constraints import Constraints, InfeasibleError
from hwnas.pipeline import ConfigError, Context
from hwnas.progress import progress_bar
from hwnas.report import final_report, plot_pareto, save_pareto
from hwnas.search.base import Evaluated, SearchProblem, SearchResult, Strategy, build_strategy
from hwnas.search.objectives import AccuracyObjective, ZeroShotObjective, accuracy
from hwnas.spaces.base import Arch, SearchSpace
from hwnas.subnet_io import save_subnet
from hwnas.training.bn import recalibrate_bn
from hwnas.training.callbacks import ZeroShotSearchCallback, ranked_pool
from hwnas.training.subnet import SubnetModule
from hwnas.training.supernet import Phase, SupernetModule

log = logging.getLogger(__name__)


def _strategy(node: Any) -> Strategy:
    kwargs = OmegaConf.to_container(node, resolve=True)
    name = kwargs.pop("name")
    try:
        return build_strategy(name, **kwargs)
    except TypeError as err:
        raise ConfigError(f"search strategy {name!r}: {err}") from err


def _zero_shot_search(
    ctx: Context, space: SearchSpace, seed: int, title: str, budget: int | None = None
) -> SearchResult:
    objective = ZeroShotObjective(ctx.model, ctx.descore, ctx.inputs, ctx.cost_model, seed)
    with progress_bar(title) as update:
        problem = SearchProblem(space, objective, ctx.cost_model, ctx.constraints, seed, update)
        return _strategy(ctx.cfg.search).run(problem, budget)


# ------------------------------------------------------------------ 1. zero-shot
def zero_shot(ctx: Context) -> dict[str, Any]:
    folder = ctx.stage_dir("zero_shot")
    start = time.perf_counter()
    budget = ctx.cfg.zero_shot.budget
    result = _zero_shot_search(ctx, ctx.model.space, ctx.seed, "zero-shot search", budget)
    seconds = time.perf_counter() - start
    result.save(folder)
    pool = ranked_pool(result, int(ctx.cfg.zero_shot.pool_size))
    (folder / "pool.json").write_text(json.dumps([a.to_dict() for a in pool], indent=1))
    save_pareto(result, folder / "pareto.csv", gain="descore")
    plot_pareto(result, folder / "pareto.png", ctx.constraints, gain_label="DE-Score (rank)")
    n = len(result.unique())
    log.info(
        "zero-shot: %d archs scored in %.1f s (%.1f/s); best %s",
        n,
        seconds,
        n / seconds,
        result.best.arch.to_str(),
    )
    return {
        "best": result.best.arch.to_dict(),
        "pool": [a.to_dict() for a in pool],
        "metrics": {
            "zero_shot/candidates_per_s": n / seconds,
            "zero_shot/best_descore": result.best.fitness,
        },
    }


# ------------------------------------------------------------------- 2. supernet
def _calibration(ctx: Context, samples: int):
    batches = list(ctx.dm.calibration_loader(samples))
    return lambda: batches


def supernet(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg.supernet
    folder = ctx.stage_dir("supernet")
    phases = [Phase(p.name, tuple(p.elastic), int(p.epochs), float(p.lr)) for p in cfg.phases]
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
        calibration=_calibration(ctx, int(cfg.calib_samples)),
        calib_samples=int(cfg.calib_samples),
    )

    def search(space: SearchSpace, i: int) -> SearchResult | None:
        try:
            return _zero_shot_search(
                ctx, space, ctx.seed + i, f"phase {i} zero-shot search", int(cfg.search_budget)
            )
        except InfeasibleError as err:
            log.warning("phase %d: %s; sampling the phase's space uniformly", i, err)
            return None

    ckpt_dir = folder / "checkpoints"
    trainer = L.Trainer(
        max_epochs=module.total_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=cfg.precision,
        limit_train_batches=cfg.limit_train_batches,
        num_sanity_val_steps=0,
        deterministic=True,
        enable_model_summary=False,
        logger=CSVLogger(str(folder), name="logs", version=""),
        default_root_dir=str(folder),
        callbacks=[
            ZeroShotSearchCallback(search, int(cfg.pool_size), folder),
            ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, save_top_k=0),
            RichProgressBar(),
        ],
    )
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.exists() else None
    if resume:
        log.info("supernet: resuming from %s", last)
    trainer.fit(module, datamodule=ctx.dm, ckpt_path=resume)
    torch.save(ctx.model.state_dict(), folder / "supernet.pt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {
        "epochs": module.total_epochs,
        "pools": {str(i): len(p) for i, p in module.pools.items()},
        "metrics": {f"supernet/{k[4:]}": v for k, v in metrics.items()},
    }


def load_supernet(ctx: Context) -> None:
    path = ctx.out / "supernet" / "supernet.pt"
    if not path.exists():
        raise ConfigError(
            f"no trained supernet in {path.parent}: add supernet to stages "
            "or resume the run folder where it finished (hydra.run.dir=...)"
        )
    ctx.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


# --------------------------------------------------------------------- 3. search
class SubnetEvaluator:
    """Validation accuracy of a subnet with inherited weights after exact BN
    re-estimation on fixed calibration images."""

    def __init__(self, ctx: Context, val_samples: int, calib_samples: int):
        self.ctx, self.calib_samples = ctx, calib_samples
        self.calib = list(ctx.dm.calibration_loader(calib_samples))
        self.val: list = []
        seen = 0
        for x, y in ctx.dm.val_dataloader():
            self.val.append((x[: val_samples - seen], y[: val_samples - seen]))
            seen += len(self.val[-1][1])
            if seen >= val_samples:
                break

    def subnet(self, arch: Arch) -> torch.nn.Module:
        net = self.ctx.model.export(arch)
        return recalibrate_bn(net, self.calib, self.calib_samples)

    def __call__(self, arch: Arch) -> float:
        return accuracy(self.subnet(arch), self.val)


def search(ctx: Context) -> dict[str, Any]:
    load_supernet(ctx)
    sel = ctx.cfg.selection
    folder = ctx.stage_dir("search")
    space = ctx.model.space
    largest = space.max_arch()
    largest_latency = ctx.cost_model(largest)["latency_ms"]
    constraints = ctx.constraints
    if sel.max_latency_ratio is not None:
        cap = float(sel.max_latency_ratio) * largest_latency
        constraints = tighten(constraints, "latency_ms", cap)
    evaluator = SubnetEvaluator(ctx, int(sel.val_samples), int(sel.calib_samples))
    objective = AccuracyObjective(evaluator)
    zs = ctx.results.get("zero_shot", {}).get("pool", [])[: int(sel.seed_with_zero_shot)]
    with progress_bar("subnet search (accuracy)") as update:
        problem = SearchProblem(space, objective, ctx.cost_model, constraints, ctx.seed, update)
        result = _strategy(sel.search).run(problem, sel.budget)
    extra = [space.validate(a) for a in zs] + [largest, space.min_arch()]
    history = list(result.history)
    for arch in extra:
        (metrics,) = objective.measure([arch])
        costs = ctx.cost_model(arch)
        history.append(
            Evaluated(arch, metrics, costs, iteration=-1, feasible=constraints.feasible(costs))
        )
    result = Strategy.finalize(result.strategy, problem, history, len(result.top))
    result.save(folder)
    save_pareto(result, folder / "pareto.csv", gain="accuracy")
    plot_pareto(
        result,
        folder / "pareto.png",
        constraints,
        gain_label="val accuracy (inherited)",
        chosen=result.best,
        reference=largest,
    )
    chosen = result.best
    (folder / "chosen.json").write_text(
        json.dumps(
            {
                "arch": chosen.arch.to_dict(),
                "val_accuracy": chosen.fitness,
                "costs": chosen.costs,
                "largest_latency_ms": largest_latency,
                "constraints": constraints.describe(),
            },
            indent=2,
        )
    )
    log.info(
        "search: chose %s (val acc %.4f, %s)",
        chosen.arch.to_str(),
        chosen.fitness,
        {k: round(v, 3) for k, v in chosen.costs.items()},
    )
    return {
        "chosen": chosen.arch.to_dict(),
        "largest_latency_ms": largest_latency,
        "metrics": {
            "search/val_acc": chosen.fitness,
            "search/latency_ms": chosen.costs["latency_ms"],
        },
    }


def tighten(constraints: Constraints, metric: str, cap: float) -> Constraints:
    windows = dict(constraints.windows)
    lo, hi = windows.get(metric, (None, None))
    windows[metric] = (lo, cap if hi is None else min(hi, cap))
    if lo is not None and lo > windows[metric][1]:
        raise InfeasibleError(
            f"{metric} window min {lo} is above the cap {cap:.4f} from "
            "selection.max_latency_ratio: lower the min or raise the ratio"
        )
    return Constraints(windows)


# ---------------------------------------------------------------------- 4. final
def _finetune(ctx: Context, net: torch.nn.Module, folder, tag: str) -> float:
    """Fine-tune ``net`` (final.epochs) and return its test accuracy."""
    f = ctx.cfg.final
    module = SubnetModule(
        net,
        int(f.epochs),
        lr=f.lr,
        momentum=f.momentum,
        weight_decay=f.weight_decay,
        label_smoothing=f.label_smoothing,
    )
    trainer = L.Trainer(
        max_epochs=int(f.epochs),
        accelerator=ctx.cfg.supernet.accelerator,
        devices=ctx.cfg.supernet.devices,
        precision=ctx.cfg.supernet.precision,
        limit_train_batches=f.limit_train_batches,
        num_sanity_val_steps=0,
        deterministic=True,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(str(folder), name=f"logs_{tag}", version=""),
        default_root_dir=str(folder),
        callbacks=[RichProgressBar()],
    )
    if int(f.epochs) > 0:
        trainer.fit(module, datamodule=ctx.dm)
    (res,) = trainer.test(module, datamodule=ctx.dm, verbose=False)
    return float(res["test/acc"])


def final(ctx: Context) -> dict[str, Any]:
    load_supernet(ctx)
    folder = ctx.stage_dir("final")
    chosen_path = ctx.out / "search" / "chosen.json"
    if not chosen_path.exists():
        raise ConfigError(
            f"no chosen subnet in {chosen_path.parent}: add search to stages "
            "or resume the run folder where it finished"
        )
    chosen = ctx.model.space.validate(json.loads(chosen_path.read_text())["arch"])
    sel = ctx.cfg.selection
    evaluator = SubnetEvaluator(ctx, 1, int(sel.calib_samples))
    largest = ctx.model.space.max_arch()
    net = evaluator.subnet(chosen)
    inherited = accuracy(net, ctx.dm.test_dataloader())
    test_acc = _finetune(ctx, net, folder, "subnet")
    big = evaluator.subnet(largest)
    big_inherited = accuracy(big, ctx.dm.test_dataloader())
    big_acc = (
        _finetune(ctx, big, folder, "largest") if ctx.cfg.final.finetune_largest else big_inherited
    )
    save_subnet(folder, net.eval(), chosen, ctx, onnx=bool(ctx.cfg.final.onnx))
    return final_report(
        ctx,
        folder,
        net.eval(),
        big.eval(),
        chosen,
        largest,
        {"test_acc": test_acc, "inherited_test_acc": inherited},
        {"test_acc": big_acc, "inherited_test_acc": big_inherited},
    )
