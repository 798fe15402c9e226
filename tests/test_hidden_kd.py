"""Hidden-state distillation (``supernet.kd_hidden``, ``final.kd_hidden``): the layer
outputs it reads, its loss, the sandwich step and final fine-tuning that add it, and
the pipeline that reports it (or refuses it for a model without encoder layers)."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from hwnas.app.context import ConfigError
from hwnas.app.pipeline import CONFIG_FILE
from hwnas.domains.image.task import ImageClassification
from hwnas.domains.qa.models.bert import ElasticBert
from hwnas.domains.qa.models.hf import bert_from_pretrained
from hwnas.domains.qa.task import ExtractiveQA
from hwnas.training.hidden import captured, hidden_layers, hidden_loss
from hwnas.training.subnet import SubnetModule
from hwnas.training.supernet import Phase, SupernetModule
from tests.test_bert import SEQ, VOCAB, batch, tiny_config
from tests.test_final_kd import _step, _Stub
from tests.test_pipeline import _run
from tests.test_squad_pipeline import squad_config


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> ElasticBert:
    """A tiny converted BERT without dropout (so two forwards agree), widths elastic."""
    torch.manual_seed(0)
    cfg = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    folder = tmp_path_factory.mktemp("bert_nodrop")
    transformers.BertForQuestionAnswering(cfg).save_pretrained(folder)
    return bert_from_pretrained(folder, max_seq_length=SEQ, embed_choices=[16, 32])


def qa_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    ids, mask, segments = batch(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(1, SEQ // 2, (3,), generator=gen)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments,
            "start_positions": start, "end_positions": start + 2,
            "feature_id": torch.arange(3)}  # fmt: skip


def test_captured_reads_the_active_layers_and_lets_go(model):
    ids, mask, segments = batch()
    arch = model.space.min_arch()
    with torch.no_grad(), model.active(arch), captured(model) as states:
        model(ids, mask, segments)
    assert len(states) == arch["depth"] < len(model.encoder.layers)
    assert all(s.shape == (3, SEQ, arch["embed"]) for s in states)
    sub = model.export(arch).eval()
    with torch.no_grad(), captured(sub) as exported:
        sub(ids, mask, segments)
    for a, b in zip(states, exported):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # the hooks are gone after the block; off reads nothing
        sub(ids, mask, segments)
        with captured(sub, on=False) as none:
            sub(ids, mask, segments)
    assert len(exported) == arch["depth"] and none == []


def test_hidden_loss_compares_layer_by_layer_on_the_students_channels():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 5, 8) for _ in range(3)]
    student = [torch.randn(2, 5, 6, requires_grad=True) for _ in range(2)]
    want = sum(F.mse_loss(s, t[..., :6]) for s, t in zip(student, teacher))
    loss = hidden_loss(student, teacher)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert student[0].grad is not None
    assert hidden_loss([t[..., :6] for t in teacher[:2]], teacher) == 0
    with pytest.raises(ValueError, match="ran 3 layers, its teacher only 2"):
        hidden_loss(teacher, teacher[:2])
    with pytest.raises(ValueError, match="has no encoder layers; set final.kd_hidden=0"):
        hidden_layers(nn.Linear(3, 3), "final.kd_hidden")


def test_final_finetuning_adds_the_weighted_hidden_loss(model):
    task = ExtractiveQA(SEQ, VOCAB, store=None)
    student = model.export(model.space.min_arch())
    teacher = model.export(model.space.max_arch())
    frozen = copy.deepcopy(teacher.state_dict())
    data = qa_batch()
    inputs, targets = task.split_batch(data)
    module = SubnetModule(student, 1, task=task, teacher=teacher, kd_hidden=2.0)
    loss = _step(module, data)
    with captured(student) as mine:
        out = student(*inputs)
    with torch.no_grad(), captured(teacher) as theirs:
        teacher(*inputs)
    want = task.loss(out, targets) + 2.0 * hidden_loss(mine, theirs)
    torch.testing.assert_close(loss, want)
    assert hidden_loss(mine, theirs) > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
    with pytest.raises(ValueError, match="needs a teacher"):
        SubnetModule(student, 1, task=task, kd_hidden=1.0)
    with pytest.raises(ValueError, match="final.kd_hidden=-1"):
        SubnetModule(student, 1, task=task, teacher=teacher, kd_hidden=-1.0)
    with pytest.raises(ValueError, match="no encoder layers"):
        SubnetModule(nn.Linear(8, 3), 1, task=ImageClassification((8,), 3),
                     teacher=nn.Linear(8, 3), kd_hidden=1.0)  # fmt: skip


def test_sandwich_step_adds_each_subnets_hidden_loss_against_the_largest(model):
    task = ExtractiveQA(SEQ, VOCAB, store=None)
    phases = [Phase("width", ("depth", "heads", "mlp", "embed"), 1, 1e-3)]
    data = qa_batch(seed=2)
    inputs, _ = task.split_batch(data)
    losses, archs = {}, None
    for weight in (0.0, 3.0):
        module = SupernetModule(model, phases, num_random=1, seed=5, task=task,
                                optimizer="adamw", kd_hidden=weight)  # fmt: skip
        archs = module.subnets_for_step(0)
        module.rng = random.Random(5)  # the step draws the same subnets again
        module._trainer = _Stub()  # noqa: SLF001 (a bare module outside a Trainer)
        module.log_dict = lambda *a, **k: None
        losses[weight] = module._sandwich_step(data, 0).detach()
    largest, *others = archs
    assert len(others) == 2
    with torch.no_grad():
        with model.active(largest), captured(model) as teacher:
            model(*inputs)
        extra = 0.0
        for arch in others:
            with model.active(arch), captured(model) as mine:
                model(*inputs)
            extra = extra + hidden_loss(mine, teacher)
    assert extra > 0
    torch.testing.assert_close(losses[3.0] - losses[0.0], 3.0 * extra, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="supernet.kd_hidden"):
        SupernetModule(model, phases, task=task, kd_hidden=-0.5)


def test_pipeline_distils_hidden_states_and_reports_it(tmp_path):
    from hwnas.app.pipeline import run

    out = tmp_path / "run"
    # seconds of training: F1 may stay 0 (a plumbing check of the distillation)
    run(squad_config(out, "supernet.kd_hidden=1.0", "final.kd_hidden=0.5",
                     "final.require_learned=false"))  # fmt: skip
    report = (out / "final" / "report.md").read_text()
    assert "(the chosen subnet also distilled from the largest: hidden states weighted 0.5)" in (
        report
    )
    logs = (out / "final" / "logs_subnet").rglob("metrics.csv")
    assert any("train/kd_hidden" in p.read_text().splitlines()[0] for p in logs)


def test_a_model_without_encoder_layers_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="supernet.kd_hidden > 0 needs a transformer model"):
        _run(out, "supernet.kd_hidden=1.0")
    assert not (out / CONFIG_FILE).exists()
