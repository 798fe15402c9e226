"""The elastic RNN-T (transducer ASR): loss, decoding, export, reordering, metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hwnas.domains.asr.data.vocab import CharVocabulary
from hwnas.domains.asr.models.frontend import length_mask, subsampled_lengths
from hwnas.domains.asr.models.rnnt import ElasticRNNT
from hwnas.domains.asr.task import TransducerASR, error_rates
from hwnas.elastic import build_model

VOCAB = CharVocabulary()
TINY = dict(
    embed_choices=(16, 24),
    depth_choices=(1, 2),
    head_choices=(1, 2),
    head_dim=8,
    ffn_choices=(16, 32),
    frontend_channels=16,
    predictor_dim=16,
    joint_dim=24,
    dropout=0.0,
    example_seconds=0.5,
)


def tiny_model(seed: int = 0) -> ElasticRNNT:
    torch.manual_seed(seed)
    return ElasticRNNT(n_mels=12, vocab_size=len(VOCAB), **TINY)


def batch(seed: int = 0):
    """Two utterances of different lengths with their transcripts (padded with blank)."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 40, 12, generator=gen)
    lengths = torch.tensor([40, 27])
    texts = ["a cab", "bed"]
    ids = [VOCAB.encode(t) for t in texts]
    tokens = torch.zeros(2, max(map(len, ids)), dtype=torch.long)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = torch.tensor(row)
    token_lengths = torch.tensor([len(r) for r in ids])
    return feats, lengths, tokens, token_lengths


def test_subsampled_lengths_match_the_front_end():
    model = tiny_model().eval()
    for frames in (1, 2, 3, 4, 5, 40, 41):
        x = torch.randn(1, frames, 12)
        enc, lengths = model(x, torch.tensor([frames]))
        assert enc.shape[1] == int(lengths[0]) == int(subsampled_lengths(torch.tensor(frames)))


def train(model: ElasticRNNT, steps: int, lr: float) -> list[float]:
    """Adam steps on :func:`batch`; the losses."""
    task = TransducerASR(VOCAB, n_mels=12)
    feats, lengths, tokens, token_lengths = batch()
    targets = {"tokens": tokens, "token_lengths": token_lengths}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.loss(model(feats, lengths, tokens, token_lengths), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_loss_is_finite_and_decreases():
    losses = train(tiny_model(), 15, 3e-3)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]


def test_greedy_decoding_returns_valid_text_and_learns_a_transcript():
    model = tiny_model()
    train(model, 150, 5e-3)
    task = TransducerASR(VOCAB, n_mels=12)
    feats, lengths, tokens, token_lengths = batch()
    targets = {"tokens": tokens, "token_lengths": token_lengths}
    model.eval()
    hyps = model.transcribe(feats, lengths)
    assert all(1 <= i < len(VOCAB) for h in hyps for i in h)
    assert [VOCAB.decode(h) for h in hyps] == ["a cab", "bed"]  # memorised
    out = model(feats, lengths, tokens, token_lengths)
    metrics = task.batch_metrics(out, targets)
    assert float(metrics["wer"]) == 0.0 and float(metrics["cer"]) == 0.0
    model.train()
    assert "wer" not in task.batch_metrics(model(feats, lengths, tokens, token_lengths), targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_export_equals_the_supernet_for_random_archs(seed):
    model = tiny_model(seed).eval()
    arch = model.space.sample(random.Random(seed))
    feats, lengths, tokens, token_lengths = batch(seed)
    model.set_active(arch)
    sub = model.export(arch).eval()
    enc_a, len_a = model(feats, lengths)
    enc_b, len_b = sub(feats, lengths)
    assert torch.equal(len_a, len_b)
    assert torch.allclose(enc_a, enc_b, atol=1e-6)
    out_a = model(feats, lengths, tokens, token_lengths)
    out_b = sub(feats, lengths, tokens, token_lengths)
    assert torch.allclose(out_a["logits"], out_b["logits"], atol=1e-6)
    assert out_a["hypotheses"] == out_b["hypotheses"]
    assert sub.front.proj.out_features == arch["embed"]
    assert len(sub.encoder.layers) == arch["depth"]


def test_uniform_width_ties_every_layer():
    model = build_model({"name": "elastic_rnnt", **TINY, "uniform_width": True}, (12,),
                        len(VOCAB)).eval()  # fmt: skip
    assert [g.name for g in model.space.genes] == ["depth", "embed", "heads", "ffn"]
    arch = model.space.validate({**model.space.max_arch().to_dict(), "heads": 1, "ffn": 16})
    sub = model.export(arch).eval()
    assert len(sub.encoder.layers) == arch["depth"]
    assert [layer.attn.heads for layer in sub.encoder.layers] == [1] * arch["depth"]
    assert all(layer.mlp.fc1.out_features == 16 for layer in sub.encoder.layers)
    feats, lengths, _, _ = batch()
    model.set_active(arch)
    torch.testing.assert_close(model(feats, lengths)[0], sub(feats, lengths)[0])


def test_padding_does_not_change_an_utterance():
    model = tiny_model().eval()
    feats, lengths, _, _ = batch()
    enc, out_lengths = model(feats, lengths)
    alone, _ = model(feats[1:, : int(lengths[1])], lengths[1:])
    n = int(out_lengths[1])
    assert torch.allclose(enc[1, :n], alone[0, :n], atol=1e-5)
    assert length_mask(out_lengths, enc.shape[1])[1, n:].all()


def test_reorganize_keeps_the_largest_function():
    model = tiny_model().eval()
    feats, lengths, tokens, token_lengths = batch()
    before = model(feats, lengths, tokens, token_lengths)["logits"]
    model.reorganize_by_importance()
    after = model(feats, lengths, tokens, token_lengths)["logits"]
    assert torch.allclose(before, after, atol=1e-5)


def test_distillation_is_zero_against_itself_and_positive_otherwise():
    model = tiny_model()
    task = TransducerASR(VOCAB, n_mels=12)
    feats, lengths, tokens, token_lengths = batch()
    big = model(feats, lengths, tokens, token_lengths)
    assert float(task.distill_loss(big, big, 2.0)) == pytest.approx(0.0, abs=1e-6)
    model.set_active(model.space.min_arch())
    small = model(feats, lengths, tokens, token_lengths)
    assert float(task.distill_loss(small, big, 2.0)) > 0.0


def test_error_rates_on_hand_examples():
    rates = error_rates(["the cat sat", "a b"], ["the cat sit", "a b"])
    assert rates["wer"] == pytest.approx(1 / 5)  # one substitution in five words
    # "sat" vs "sit": one character substitution of 11 + 3 reference characters
    assert rates["cer"] == pytest.approx(1 / 14)
    assert error_rates(["", "x"], ["", "y"])["wer"] == 1.0  # empty references skipped
    with pytest.raises(ValueError, match="empty"):
        error_rates([""], [" "])


def test_costs_latency_units_and_proxy_view():
    model = tiny_model()
    big, small = model.space.max_arch(), model.space.min_arch()
    assert model.cost_of(big)["params_m"] > model.cost_of(small)["params_m"]
    assert model.cost_of(big)["flops_m"] > model.cost_of(small)["flops_m"]
    units = model.latency_units(small)
    assert [k for k, _, _ in units] == model.latency_unit_keys(small)
    assert len(units) == small["depth"] + 2
    sub = model.export(small).eval()
    sum_params = sum(p.numel() for p in sub.parameters())
    model.set_active(small)
    assert model.active_params() == sum_params
    task = TransducerASR(VOCAB, n_mels=12, example_seconds=model.example_seconds)
    inputs = task.proxy_inputs(3, seed=0, shape=model.proxy_shape)
    out = model.proxy_module(sub)(inputs.x)
    assert out.shape == (3, model.proxy_shape[0] * len(VOCAB))
    ex = task.example_inputs(2, torch.Generator().manual_seed(0))
    assert ex[0].shape[1] == model.example_frames


def test_onnx_encoder_matches_at_another_length(tmp_path):
    import onnxruntime as ort

    from hwnas.app.subnet_io import export_onnx

    model = tiny_model().eval()
    task = TransducerASR(VOCAB, n_mels=12, example_seconds=model.example_seconds)
    sub = model.export(model.space.min_arch()).eval()
    path = export_onnx(
        sub, task.example_inputs(1, torch.Generator().manual_seed(0)), tmp_path / "enc.onnx",
        task.input_names(), task.output_names(), task.dynamic_axes(),
    )  # fmt: skip
    feats, lengths, _, _ = batch()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    enc, enc_len = session.run(
        None, {"features": feats.numpy(), "feature_lengths": lengths.numpy()}
    )
    ref, ref_len = sub(feats, lengths)
    np.testing.assert_array_equal(enc_len, ref_len.numpy())
    np.testing.assert_allclose(enc, ref.detach().numpy(), atol=1e-5)


def test_build_from_config_and_clear_errors():
    model = build_model({"name": "elastic_rnnt", **TINY}, (12,), len(VOCAB))
    assert model.space.name == "elastic_rnnt" and model.input_shape == (12,)
    with pytest.raises(ValueError, match="embed_choices"):
        ElasticRNNT(12, len(VOCAB), embed_choices=())
    with pytest.raises(ValueError, match="example_seconds"):
        ElasticRNNT(12, len(VOCAB), example_seconds=0)


def test_auxiliary_ctc_joins_the_loss_and_exports():
    model = ElasticRNNT(n_mels=12, vocab_size=len(VOCAB), **{**TINY, "ctc_weight": 0.5}).eval()
    task = TransducerASR(VOCAB, n_mels=12)
    feats, lengths, tokens, token_lengths = batch()
    targets = {"tokens": tokens, "token_lengths": token_lengths}
    out = model(feats, lengths, tokens, token_lengths)
    assert out["ctc_logits"].shape[:2] == out["logits"].shape[:2]
    plain = {k: v for k, v in out.items() if not k.startswith("ctc")}
    assert float(task.loss(out, targets)) > float(task.loss(plain, targets))
    arch = model.space.min_arch()
    model.set_active(arch)
    sub = model.export(arch).eval()
    ref = model(feats, lengths, tokens, token_lengths)["ctc_logits"]
    assert torch.allclose(sub(feats, lengths, tokens, token_lengths)["ctc_logits"], ref)
    assert model.active_params() == sum(p.numel() for p in sub.parameters())
