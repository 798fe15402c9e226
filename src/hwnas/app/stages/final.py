"""Stage 4, final: the chosen subnet and the largest fine-tuned side by side, exported,
measured and reported."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from hwnas.app.context import ConfigError, Context
from hwnas.app.device import evaluate, run_device, stage_device, training_note
from hwnas.app.report import final_report, finetune_budget
from hwnas.app.stages.common import evaluator, load_supernet
from hwnas.app.subnet_io import save_subnet
from hwnas.core import atomic
from hwnas.elastic import syncbn
from hwnas.search.journal import weights_digest
from hwnas.training.bn import inherited_label
from hwnas.training.subnet import SubnetModule
from hwnas.training.trainer import build_trainer, fit

log = logging.getLogger(__name__)


def _finetune(
    ctx: Context, net: torch.nn.Module, folder: Path, tag: str, arch, teacher=None
) -> dict[str, float]:
    """Fine-tune ``net`` for final.epochs (distilled from ``teacher`` when given, with
    final.kd_alpha) and return every test metric of the task (``Task.evaluate`` on the
    run's evaluation device, as the inherited weights are scored; ``net`` is on the CPU
    afterwards). The training keeps ``checkpoints/last_<tag>.ckpt`` and resumes from it."""
    f = ctx.settings.final
    module = SubnetModule(
        net,
        int(f.epochs),
        lr=f.lr,
        momentum=f.momentum,
        weight_decay=f.weight_decay,
        warmup_fraction=float(f.warmup_fraction),
        task=ctx.dm.task(label_smoothing=float(f.label_smoothing)),
        optimizer=str(f.optimizer),
        teacher=teacher,
        kd_alpha=float(f.kd_alpha),
        kd_temperature=float(f.kd_temperature),
        kd_hidden=float(f.kd_hidden) if teacher is not None else 0.0,
    )
    trainer = build_trainer(
        ctx.settings.trainer,
        folder,
        max_epochs=int(f.epochs),
        log_name=f"logs_{tag}",
        title=f"final ({tag})",
        limit_train_batches=f.limit_train_batches,
        checkpoint=folder / "checkpoints" / f"last_{tag}.ckpt",
        checkpoint_key=f"{tag}:{arch.to_str()}:{weights_digest(net)}",
        **ctx.progress,
    )
    sync = bool(ctx.settings.trainer.sync_batchnorm)
    with syncbn.plain_batch_norms_synced(net), syncbn.synchronised(sync):
        fit(trainer, module, ctx.dm)
    return evaluate(ctx.task, net, ctx.dm.test_dataloader(), run_device(ctx))


def run(ctx: Context) -> dict[str, Any]:
    load_supernet(ctx)
    folder = ctx.stage_dir("final")
    chosen_path = ctx.out / "search" / "chosen.json"
    if not chosen_path.exists():
        raise ConfigError(
            f"no chosen subnet in {chosen_path.parent}: add search to stages "
            "or resume the run folder where it finished"
        )
    fix = (
        f"delete {chosen_path.parent / 'DONE.json'} and rerun to redo the search stage "
        "(its journal replays what it measured)"
    )
    chosen = ctx.model.space.validate(atomic.read_json(chosen_path, fix)["arch"])
    largest = ctx.model.space.max_arch()
    f = ctx.settings.final
    epochs = int(f.epochs)
    device = stage_device(ctx, "final", note=training_note(ctx))
    ev = evaluator(ctx, 1)
    kd_alpha, kd_hidden = float(f.kd_alpha), float(f.kd_hidden)
    kd = kd_alpha > 0 or kd_hidden > 0
    # final.kd_teacher=finetuned: the largest is fine-tuned first and then teaches
    after = str(f.kd_teacher) == "finetuned"
    sides = {}
    nets = {}
    order = [
        ("subnet", chosen, epochs > 0),
        ("largest", largest, epochs > 0 and bool(f.finetune_largest)),
    ]
    for tag, arch, tune in order[::-1] if after else order:
        net = ev.subnet(arch)
        inherited = evaluate(ctx.task, net, ctx.dm.test_dataloader(), device)
        # final.kd_alpha or kd_hidden > 0: the chosen subnet learns from the supernet's
        # largest too (its logits, its encoder layers' outputs), as inherited or as
        # fine-tuned just before (a copy: the reference itself is not touched)
        teacher = None
        if tag == "subnet" and kd and tune:
            teacher = copy.deepcopy(nets["largest"]) if after else ev.subnet(largest)
        tuned = _finetune(ctx, net, folder, tag, arch, teacher) if tune else None
        sides[tag] = {
            "inherited": ctx.task.primary(inherited),
            "finetuned": None if tuned is None else ctx.task.primary(tuned),
            "all": {"inherited": inherited, "finetuned": tuned},
        }
        nets[tag] = net.eval()
    if ctx.rank != 0:  # the other processes of a DDP training stop after the trainings
        return {}
    save_subnet(folder, nets["subnet"], chosen, ctx, onnx=bool(f.onnx))
    budget = finetune_budget(epochs, f.limit_train_batches)
    kd_note = ""
    if kd:
        parts = []
        if kd_alpha > 0:
            parts.append(f"kd_alpha {kd_alpha:g}")
        if kd_hidden > 0:
            parts.append(f"hidden states weighted {kd_hidden:g}")
        whom = "the fine-tuned largest" if after else "the largest"
        kd_note = f" (the chosen subnet also distilled from {whom}: {', '.join(parts)})"
    summary = final_report(
        ctx,
        folder,
        nets["subnet"],
        nets["largest"],
        chosen,
        largest,
        sides["subnet"],
        sides["largest"],
        budget + kd_note,
    )
    summary["exported"] = deliver(ctx, folder, chosen, nets["subnet"], sides["subnet"], budget)
    return summary


def deliver(ctx: Context, folder: Path, chosen, net, side: dict[str, Any], budget: str) -> list:
    """The chosen subnet's model card (``final/card.md``) and, with
    ``final.export=front``, every point of the search's front in ``final/front/``
    (:mod:`hwnas.app.export`); the exported folders, relative to the run."""
    from hwnas.app.cards import write_card
    from hwnas.app.export import FrontPoint, export_points, read_front

    f = ctx.settings.final
    report = atomic.read_json(folder / "report.json")
    tuned = side["all"]["finetuned"] is not None
    metrics = side["all"]["finetuned" if tuned else "inherited"]
    method = f"fine-tuned {budget} from inherited weights" if tuned else inherited_label(net)
    front = read_front(ctx.out, ctx)
    point = next((p for p in front if p.arch == chosen), None)
    if point is None:  # chosen off the recorded front (a tolerance tie): its own row
        val = atomic.read_json(ctx.out / "search" / "chosen.json")["val_metrics"]
        point = FrontPoint(-1, chosen, float(val[ctx.task.primary_metric]), {})
    speed = {k: v for k, v in report["subnet"].items() if k in SPEED_KEYS}
    write_card(ctx, folder, point, metrics, method, speed, chosen=True)
    if str(f.export) != "front":
        return ["final"]
    cards = export_points(ctx, front, folder / "front", {point.index: (net, metrics, method)},
                          finetune=_finetune if str(f.finetune) == "front" else None,
                          chosen=chosen)  # fmt: skip
    log.info("final: exported %d subnets of the front to %s", len(cards), folder / "front")
    return ["final", *(f"final/front/{c['folder']}" for c in cards)]


SPEED_KEYS = ("latency_ms", "latency_p90_ms", "throughput_per_s")
