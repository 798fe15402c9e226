"""Loss-based importance (``supernet.importance=loss``): the per-unit Taylor scores equal
the loss gradients of masks on heads and hidden units, the measurement leaves the model
as it was, the reorder follows it, and the pipeline runs with it or refuses it."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from hwnas.app.context import ConfigError
from hwnas.app.pipeline import CONFIG_FILE
from hwnas.domains.qa.models.bert import ElasticBert
from hwnas.domains.qa.models.hf import bert_from_pretrained
from hwnas.domains.qa.task import ExtractiveQA
from hwnas.elastic.transformer.attention import ElasticMultiheadAttention
from hwnas.elastic.transformer.mlp import ElasticMLP
from hwnas.training.importance import check_importance, loss_saliency
from hwnas.training.supernet import Phase, SupernetModule
from tests.test_bert import SEQ, VOCAB, batch, tiny_config
from tests.test_hidden_kd import qa_batch
from tests.test_pipeline import _run
from tests.test_squad_pipeline import squad_config
from tests.test_training import tiny_cnn


@pytest.fixture()
def model(tmp_path) -> ElasticBert:
    torch.manual_seed(0)
    cfg = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.BertForQuestionAnswering(cfg).save_pretrained(tmp_path / "bert")
    return bert_from_pretrained(tmp_path / "bert", max_seq_length=SEQ)


def _mask_grad(loss_of, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of(mask), mask)
    return grad


def test_head_saliency_is_the_loss_gradient_of_a_head_mask():
    torch.manual_seed(0)
    attn = ElasticMultiheadAttention(max_embed=12, max_heads=3, head_dim=4)
    x, target = torch.randn(2, 5, 12), torch.randn(2, 5, 12)

    def loss_of(mask):  # each head's output scaled by its mask entry before the projection
        hook = attn.proj.register_forward_pre_hook(lambda m, a: (a[0] * mask.repeat_interleave(4),))
        try:
            return ((attn(x) - target) ** 2).mean()
        finally:
            hook.remove()

    want = _mask_grad(loss_of, torch.ones(3)).abs()
    (g,) = torch.autograd.grad(loss_of(torch.ones(3)), attn.proj.weight)
    torch.testing.assert_close(attn.head_saliency(g), want)
    assert want.min() > 0


def test_neuron_saliency_sums_the_mask_gradients_before_and_after_the_activation():
    torch.manual_seed(0)
    mlp = ElasticMLP(max_embed=6, max_hidden=10)
    x, target = torch.randn(2, 5, 6), torch.randn(2, 5, 6)

    def loss_of(before, after):
        h = mlp.act(mlp.fc1(x) * before) * after
        return ((mlp.fc2(h) - target) ** 2).mean()

    ones = torch.ones(10)
    want = _mask_grad(lambda m: loss_of(m, ones), ones).abs()
    want = want + _mask_grad(lambda m: loss_of(ones, m), ones).abs()
    grads = torch.autograd.grad(loss_of(ones, ones), [mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight])
    torch.testing.assert_close(mlp.neuron_saliency(*grads), want)


def test_loss_saliency_leaves_the_model_as_it_was(model):
    task = ExtractiveQA(SEQ, VOCAB, store=None)
    arch = model.space.min_arch()
    model.set_active(arch)
    model.train()
    weights = copy.deepcopy(model.state_dict())
    data = [qa_batch(seed=1), qa_batch(seed=2)]
    scores = loss_saliency(model, task, data)
    again = loss_saliency(model, task, data)
    assert model.get_active() == arch and model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    layers = model.encoder.layers
    assert len(scores) == 2 * len(layers)
    for layer in layers:
        assert scores[layer.attn].shape == (layer.attn.max_heads,)
        assert scores[layer.mlp].shape == (layer.mlp.max_hidden,)
        torch.testing.assert_close(scores[layer.attn], again[layer.attn])  # deterministic
    one = loss_saliency(model, task, data[:1])  # a sum over batches
    two = loss_saliency(model, task, data[1:])
    torch.testing.assert_close(scores[layers[0].mlp], one[layers[0].mlp] + two[layers[0].mlp])
    with pytest.raises(ValueError, match="got no batches"):
        loss_saliency(model, task, [])


def test_a_dead_head_with_large_weights_goes_last_by_loss_first_by_magnitude(model):
    """A head whose values are zero adds nothing, whatever its weight norms say."""
    attn = model.encoder.layers[0].attn
    h, d = attn.max_heads, attn.head_dim
    with torch.no_grad():  # head 1: large q/k and projection, zero values
        w = attn.qkv.weight.view(h, 3, d, -1)
        w[1, :2] *= 50.0
        w[1, 2] = 0.0
        attn.qkv.bias.view(h, 3, d)[1, 2] = 0.0
        attn.proj.weight.view(-1, h, d)[:, 1] *= 50.0
    assert attn.head_importance().argmax() == 1
    task = ExtractiveQA(SEQ, VOCAB, store=None)
    scores = loss_saliency(model.eval(), task, [qa_batch(seed=1), qa_batch(seed=3)])
    assert scores[attn][1] == 0 and scores[attn].argmin() == 1
    ids, mask, segments = batch()
    with torch.no_grad():
        before = model(ids, mask, segments)
        model.reorganize_by_importance(scores)
        torch.testing.assert_close(model(ids, mask, segments), before, atol=1e-5, rtol=0)
    moved = model.encoder.layers[0].attn.proj.weight.view(-1, h, d)
    assert moved[:, -1].abs().sum() > moved[:, 0].abs().sum()  # the dead head is last
    s = loss_saliency(model, task, [qa_batch(seed=1), qa_batch(seed=3)])
    for layer in model.encoder.layers:  # every layer's units now in descending saliency
        assert torch.all(s[layer.attn][:-1] >= s[layer.attn][1:] - 1e-6)
        assert torch.all(s[layer.mlp][:-1] >= s[layer.mlp][1:] - 1e-6)


def test_the_width_phase_reorders_by_the_loss(model):
    task = ExtractiveQA(SEQ, VOCAB, store=None)
    phases = [Phase("largest", (), 1, 1e-3), Phase("width", ("heads", "mlp"), 1, 1e-3)]
    seen = []
    module = SupernetModule(model, phases, task=task, optimizer="adamw", importance="loss",
                            importance_data=lambda: seen.append(1) or [qa_batch()])  # fmt: skip
    calls = []
    model.reorganize_by_importance = lambda saliency=None: calls.append(saliency)
    module.enter_phase(0)
    assert calls == [] and seen == []
    module.enter_phase(1)
    module.enter_phase(1)
    assert seen == [1] and len(calls) == 1
    assert set(calls[0]) == {m for layer in model.encoder.layers for m in (layer.attn, layer.mlp)}
    with pytest.raises(ValueError, match="needs importance_data"):
        SupernetModule(model, phases, task=task, importance="loss")
    with pytest.raises(ValueError, match="choose one of"):
        SupernetModule(model, phases, task=task, importance="taylor")
    with pytest.raises(ValueError, match="set supernet.importance=magnitude"):
        check_importance("loss", tiny_cnn())


def test_pipeline_ranks_by_the_loss_and_logs_it(tmp_path, caplog):
    from hwnas.app.pipeline import run

    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        run(squad_config(out, "supernet.importance=loss", "supernet.importance_samples=8"))
    assert "heads and feed-forward units ranked by the loss on" in caplog.text
    assert "re-ordered by importance (loss)" in caplog.text
    assert (out / "final" / "DONE.json").is_file()


def test_bad_importance_settings_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="supernet.importance='taylor': choose one of"):
        _run(out, "supernet.importance=taylor")
    with pytest.raises(ConfigError, match="set supernet.importance=magnitude"):
        _run(out, "supernet.importance=loss")  # the CNN has no heads to rank
    with pytest.raises(ConfigError, match="supernet.importance_samples"):
        _run(out, "supernet.importance_samples=0")
    assert not (out / CONFIG_FILE).exists()


def _vit_case():
    from hwnas.domains.image.task import ImageClassification
    from tests.test_vit import images, tiny_vit

    vit = tiny_vit()
    x = images(n=4)
    data = [(x, torch.tensor([0, 1, 2, 3]))]
    return vit, ImageClassification(tuple(x.shape[1:]), 5), data, (x,), lambda out: out


def _rnnt_case():
    from hwnas.domains.asr.task import TransducerASR
    from tests.test_rnnt import VOCAB, batch, tiny_model

    feats, lengths, tokens, token_lengths = batch()
    data = [{"features": feats, "feature_lengths": lengths, "tokens": tokens,
             "token_lengths": token_lengths}]  # fmt: skip
    inputs = (feats, lengths, tokens, token_lengths)
    return tiny_model(), TransducerASR(VOCAB, n_mels=12), data, inputs, lambda out: out["logits"]


@pytest.mark.parametrize("case", [_vit_case, _rnnt_case], ids=["vit", "rnnt"])
def test_every_transformer_domain_ranks_by_its_own_loss(case):
    model, task, data, inputs, logits = case()
    model.eval()
    scores = loss_saliency(model, task, data)
    assert set(scores) == {m for layer in model.encoder.layers for m in (layer.attn, layer.mlp)}
    assert all(torch.isfinite(s).all() and s.sum() > 0 for s in scores.values())
    with torch.no_grad():
        before = logits(model(*inputs))
        model.reorganize_by_importance(scores)
        torch.testing.assert_close(logits(model(*inputs)), before, atol=1e-5, rtol=1e-5)
    again = loss_saliency(model, task, data)
    for layer in model.encoder.layers:
        s = again[layer.mlp]
        assert torch.all(s[:-1] >= s[1:] - 1e-6)
