"""Final fine-tuning with distillation from the supernet's largest subnet
(``final.kd_alpha``): the loss mixes the task's distillation and task losses, the
teacher stays frozen and out of the module, and the pipeline reports it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hwnas.domains.image.task import ImageClassification
from hwnas.training.subnet import SubnetModule
from tests.test_pipeline import _run


class _Stub:
    """The two trainer attributes ``training_step`` reads."""

    num_training_batches = 4
    current_epoch = 0
    optimizers: list = []


def _step(module: SubnetModule, batch) -> torch.Tensor:
    module._trainer = _Stub()  # noqa: SLF001 (a bare module outside a Trainer)
    module.log_dict = module.log = lambda *a, **k: None
    return module.training_step(batch, 0)


def test_loss_mixes_distillation_and_task_loss_and_the_teacher_stays_frozen():
    torch.manual_seed(0)
    task = ImageClassification((8,), 3)
    student, teacher = nn.Linear(8, 3), nn.Linear(8, 3)
    frozen = copy.deepcopy(teacher.state_dict())
    batch = (torch.randn(6, 8), torch.randint(0, 3, (6,)))
    alpha, temp = 0.3, 2.0
    module = SubnetModule(student, 1, task=task, teacher=teacher, kd_alpha=alpha,
                          kd_temperature=temp)  # fmt: skip
    loss = _step(module, batch)
    out = student(batch[0])
    want = alpha * task.distill_loss(out, teacher(batch[0]).detach(), temp) + (
        1 - alpha
    ) * task.loss(out, batch[1])
    assert torch.allclose(loss, want)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.weight.grad is not None
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
    assert not any(k.startswith("_teacher") for k in module.state_dict())
    plain = SubnetModule(copy.deepcopy(student), 1, task=task)
    assert torch.allclose(_step(plain, batch), task.loss(out, batch[1]))
    with pytest.raises(ValueError, match="final.kd_alpha"):
        SubnetModule(student, 1, task=task, kd_alpha=1.5)


def test_pipeline_distils_the_chosen_subnet_and_says_so(tmp_path):
    _run(tmp_path / "run", "final.kd_alpha=0.5")
    report = (tmp_path / "run" / "final" / "report.md").read_text()
    assert "(the chosen subnet also distilled from the largest: kd_alpha 0.5)" in report
    logs = (tmp_path / "run" / "final" / "logs_subnet").rglob("metrics.csv")
    assert any("train/kd" in p.read_text().splitlines()[0] for p in logs)


def test_finetuned_teacher_is_the_largest_after_its_own_finetuning(tmp_path, monkeypatch):
    from hwnas.app.stages import final as stages

    calls = []
    real = stages._finetune

    def recording(ctx, net, folder, tag, arch, teacher=None):
        result = real(ctx, net, folder, tag, arch, teacher)
        calls.append((tag, teacher, {k: v.clone() for k, v in net.state_dict().items()}))
        return result

    monkeypatch.setattr(stages, "_finetune", recording)
    _run(tmp_path / "run", "final.kd_alpha=0.5", "final.kd_teacher=finetuned")
    assert [c[0] for c in calls] == ["largest", "subnet"]
    (_, _, tuned), (_, teacher, _) = calls
    got = teacher.state_dict()
    assert all(torch.equal(got[k], v) for k, v in tuned.items())
    report = (tmp_path / "run" / "final" / "report.md").read_text()
    assert "(the chosen subnet also distilled from the fine-tuned largest: kd_alpha 0.5)" in report
