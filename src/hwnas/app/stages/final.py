"""Stage 4, final: the chosen subnet and the largest fine-tuned side by side, exported,
measured and reported."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from hwnas.app.context import ConfigError, Context
from hwnas.app.report import final_report, finetune_budget
from hwnas.app.stages.common import evaluator, load_supernet
from hwnas.app.subnet_io import save_subnet
from hwnas.core import atomic
from hwnas.elastic import syncbn
from hwnas.search.journal import weights_digest
from hwnas.training.subnet import SubnetModule
from hwnas.training.trainer import build_trainer, fit

log = logging.getLogger(__name__)


def _finetune(
    ctx: Context, net: torch.nn.Module, folder: Path, tag: str, arch, teacher=None
) -> dict[str, float]:
    """Fine-tune ``net`` for final.epochs (distilled from ``teacher`` when given, with
    final.kd_alpha) and return every test metric of the task (``Task.evaluate``, as the
    inherited weights are scored). The training keeps ``checkpoints/last_<tag>.ckpt``
    and resumes from it."""
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
    return ctx.task.evaluate(net, ctx.dm.test_dataloader(), module.device)


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
        inherited = ctx.task.evaluate(net, ctx.dm.test_dataloader())
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
    kd_note = ""
    if kd:
        parts = []
        if kd_alpha > 0:
            parts.append(f"kd_alpha {kd_alpha:g}")
        if kd_hidden > 0:
            parts.append(f"hidden states weighted {kd_hidden:g}")
        whom = "the fine-tuned largest" if after else "the largest"
        kd_note = f" (the chosen subnet also distilled from {whom}: {', '.join(parts)})"
    return final_report(
        ctx,
        folder,
        nets["subnet"],
        nets["largest"],
        chosen,
        largest,
        sides["subnet"],
        sides["largest"],
        finetune_budget(epochs, f.limit_train_batches) + kd_note,
    )
