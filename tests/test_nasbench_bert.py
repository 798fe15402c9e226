"""NAS-Bench-BERT space: parsing, the layer types, seeding, parameter counts, probes."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core import probe
from hwnas.spaces.nasbench_bert import (
    INPUT_SHAPE,
    ConvAttention,
    LinearTransform,
    NASBenchBERT,
    SelfAttention,
    arch_to_str,
    build_nasbench_bert,
    parameter_count,
    parse,
    token_inputs,
)
from hwnas.spaces.parsing import get_arch_parser

# 8 records of the benchmark (every layer type, 2/4 layers, hidden 128/256; data
# CC-BY-4.0, Serianni & Kalita), copied into tests/ so no test reads outside the repo
DEV = Path(__file__).resolve().parent / "fixtures" / "nasbench_bert_small.jsonl"
MIXERS = [("SA", "SDP"), ("SA", "WMA"), ("DSC", 5), ("DSC", 9), ("LT", "DFT"), ("LT", "DCT")]
B, T, E = 2, 16, 128


def layer(op="SA", param="SDP", heads=2, ffd=512, nff=1):
    return {
        "operation_type": op,
        "operation_parameter": param,
        "num_operation_heads": heads,
        "feed_forward_dimension": ffd,
        "num_feed_forward": nff,
    }


def arch(hidden=128, layers=None):
    return {"hidden_size": hidden, "encoder_layers": layers or [layer(), layer("LT", "DFT", 4)]}


@pytest.fixture(scope="module")
def dev_lines():
    return DEV.read_text().splitlines()


@pytest.fixture(scope="module")
def x():
    return token_inputs(B, T, seed=0)


# ------------------------------------------------------------------------ parsing
def test_every_dev_line_parses_and_round_trips(dev_lines):
    assert len(dev_lines) == 8
    archs = [parse(line) for line in dev_lines]
    for line, a in zip(dev_lines, archs, strict=True):
        record = json.loads(line)
        assert a == {k: record[k] for k in ("hidden_size", "encoder_layers")}
        text = arch_to_str(a)
        assert parse(text) == a and arch_to_str(parse(text)) == text
        assert arch_to_str(record) == text  # a whole record gives the same key
    raw = {json.dumps([r["hidden_size"], r["encoder_layers"]]) for r in map(json.loads, dev_lines)}
    assert len({arch_to_str(a) for a in archs}) == len(raw)


def test_arch_to_str_is_canonical():
    a = arch()
    shuffled = {"encoder_layers": [dict(reversed(list(la.items()))) for la in a["encoder_layers"]],
                "hidden_size": 128}
    assert arch_to_str(shuffled) == arch_to_str(a)
    loose = arch(layers=[layer("sa", "sdp", "2"), layer("dsc", "9", 4, "1024", 3)])
    assert parse(json.dumps(loose)) == arch(layers=[layer(), layer("DSC", 9, 4, 1024, 3)])
    text = arch_to_str(a)
    assert " " not in text and json.loads(text) == a


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a: a["encoder_layers"][0].update(operation_type="XX"), "operation_type"),
        (lambda a: a.update(hidden_size=100), "hidden_size"),
        (lambda a: a["encoder_layers"][1].update(num_operation_heads=3), "num_operation_heads"),
        (lambda a: a["encoder_layers"][0].update(operation_parameter="DFT"), "operation_parameter"),
        (lambda a: a["encoder_layers"][0].update(operation_type="DSC", operation_parameter=7),
         "operation_parameter"),
        (lambda a: a["encoder_layers"][0].update(feed_forward_dimension=768),
         "feed_forward_dimension"),
        (lambda a: a["encoder_layers"][0].update(num_feed_forward=True), "num_feed_forward"),
        (lambda a: a["encoder_layers"].append(layer()), "encoder_layers"),
        (lambda a: a["encoder_layers"][0].pop("num_feed_forward"), "num_feed_forward"),
        (lambda a: a["encoder_layers"][0].update(dropout=0.1), "dropout"),
        (lambda a: a.pop("encoder_layers"), "encoder_layers"),
        (lambda a: a.update(hidden_size=100, encoder_layers=[]), "hidden_size"),  # in key order
    ],
)
def test_bad_archs_name_the_field(change, field):
    a = arch()
    change(a)
    with pytest.raises(ValueError, match=field):
        parse(json.dumps(a))
    with pytest.raises(ValueError, match=field):
        build_nasbench_bert(a)


def test_bad_text_and_kwargs():
    for text in ("not json", "[1, 2]", '"SA"'):
        with pytest.raises(ValueError, match="nasbench_bert"):
            parse(text)
    with pytest.raises(TypeError):
        build_nasbench_bert(arch(), C=16)
    with pytest.raises(ValueError, match="heads"):
        ConvAttention(96, 3, 5)  # 1 attention head of 32: 2*32 != 96
    with pytest.raises(ValueError, match="heads"):
        SelfAttention(128, 3)
    model = build_nasbench_bert(arch(), seed=0)
    with pytest.raises(ValueError, match="embeddings"):
        model(torch.randn(B, T, 64))


# ------------------------------------------------------------------------- models
@pytest.mark.parametrize("hidden", [128, 256])
@pytest.mark.parametrize(("op", "param"), MIXERS)
def test_every_layer_type_builds_and_runs(op, param, hidden, x):
    a = arch(hidden, [layer(op, param, 4, 1024, 3), layer(op, param, 2, 512, 1)])
    model = build_nasbench_bert(a, num_classes=3, seed=1)
    assert isinstance(model, NASBenchBERT) and model.arch == parse(json.dumps(a))
    assert (model.embeddings_project is None) == (hidden == E)
    assert model.proxy_blocks() == model.hidden_layers() == list(model.layers)
    assert len(model.proxy_blocks()) == 2
    h = model.forward_features(x)
    assert h.shape == (B, T, hidden) and torch.isfinite(h).all()
    logits = model(x)
    assert logits.shape == (B, 3) and torch.isfinite(logits).all()
    assert not any("Dropout" in type(m).__name__ for m in model.modules())
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_seed_gives_the_same_network(x):
    a = arch(256, [layer("DSC", 5, 4), layer("SA", "WMA", 2)])
    rng = torch.get_rng_state()
    m1, m2, m3 = (build_nasbench_bert(a, seed=s) for s in (7, 7, 8))
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is untouched
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert torch.equal(m1(x), m2(x))
    assert not torch.equal(s1["layers.0.mixer.query.weight"], s3["layers.0.mixer.query.weight"])
    assert not torch.allclose(m1(x), m3(x))
    m4 = copy.deepcopy(m1)
    assert torch.equal(m4(x), m1(x))
    build_nasbench_bert(a)  # no seed: the global RNG


def test_electra_init():
    model = build_nasbench_bert(arch(256, [layer("DSC", 9, 4), layer("SA", "WMA", 4)]), seed=3)
    weights = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            weights.append(m.weight.flatten())
            assert m.bias is None or not m.bias.any()
        if isinstance(m, nn.LayerNorm):
            assert (m.weight == 1).all() and not m.bias.any() and m.eps == 1e-12
    assert not model.layers[0].mixer.conv_bias.any()
    w = torch.cat(weights)
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 5e-4


def _mixer(model_arch, i=0):
    return build_nasbench_bert(model_arch, seed=0).layers[i].mixer


def test_parameter_counts_by_hand():
    H, F_, classes = 128, 512, 2
    sa = 4 * (H * H + H) + 2 * H  # q, k, v, self-output dense, LayerNorm
    ffn1 = (H * F_ + F_) + (F_ * H + H) + 2 * H
    lt = H * H + H  # `input` only
    head = (H * H + H) + (H * classes + classes)
    a = arch(H, [layer("SA", "SDP", 2, F_, 1), layer("LT", "DCT", 4, F_, 1)])
    assert parameter_count(a) == sa + ffn1 + lt + ffn1 + head
    model = build_nasbench_bert(a)
    assert parameter_count(a) == sum(p.numel() for p in model.parameters())
    # WMA adds a bias-free H x H query weight
    wma = arch(H, [layer("SA", "WMA", 2, F_, 1), layer("LT", "DCT", 4, F_, 1)])
    assert parameter_count(wma) - parameter_count(a) == H * H
    # DSC, 4 heads, kernel 9: 2 attention heads of 32, width 64
    k, w = 9, 64
    qkv, conv, out = 3 * (H * w + w), H * k + H * w + w, (H * H + H) + 2 * H
    dynamic = (w * 2 * k + 2 * k) + (H * w + w)  # conv_kernel, conv_out
    mixer = _mixer(arch(H, [layer("DSC", k, 4), layer()]))
    assert sum(p.numel() for p in mixer.parameters()) == qkv + conv + dynamic + out
    # two more F x F layers per block with num_feed_forward 3
    three = arch(H, [layer("SA", "SDP", 2, F_, 3), layer("LT", "DCT", 4, F_, 1)])
    assert parameter_count(three) - parameter_count(a) == 2 * (F_ * F_ + F_)
    wide = arch(256, a["encoder_layers"])
    assert parameter_count(wide) > parameter_count(a)
    assert parameter_count(wide) - sum(
        p.numel() for p in build_nasbench_bert(wide).layers.parameters()
    ) == (E * 256 + 256) + (256 * 256 + 256) + (256 * classes + classes)


# ------------------------------------------------------------ reference semantics
def test_wma_with_identity_weight_is_sdp(x):
    sdp = _mixer(arch(layers=[layer("SA", "SDP", 4), layer()]))
    wma = SelfAttention(E, 4, weighted=True)
    wma.load_state_dict(sdp.state_dict(), strict=False)
    with torch.no_grad():
        wma.weight.weight.copy_(torch.eye(E))
    assert torch.allclose(wma(x), sdp(x), atol=1e-5)
    with torch.no_grad():
        wma.weight.weight.mul_(3.0)
    assert not torch.allclose(wma(x), sdp(x), atol=1e-3)


@pytest.mark.parametrize("kernel", [5, 9])
def test_dsc_convolution_matches_a_naive_loop(kernel, x):
    m = ConvAttention(E, 4, kernel)
    h, d, k, pad = 2, 32, kernel, kernel // 2
    with probe.record() as records:
        out = m(x)
    conv = [r for r in records if r.kind == probe.MIXER][0].tensors["heads"]  # (B, h, T, d)
    q = m.query(x)
    key_conv = m.pointwise(m.depthwise(x.transpose(1, 2))).transpose(1, 2) + m.conv_bias
    kern = m.conv_kernel(key_conv * q).reshape(B, T, h, k).softmax(-1)
    v = m.conv_out(x)  # (B, T, h*d)
    ref = torch.zeros(B, h, T, d)
    for t in range(T):
        for j in range(k):
            s = t + j - pad
            if 0 <= s < T:
                ref[:, :, t] += kern[:, t, :, j, None] * v[:, s].reshape(B, h, d)
    assert torch.allclose(conv, ref, atol=1e-5)
    y = [r for r in records if r.kind == probe.ATTENTION][0].tensors["heads"]
    merged = torch.cat([y, conv], 1).transpose(1, 2).reshape(B, T, E)
    assert torch.allclose(out, m.norm(m.dense(merged) + x), atol=1e-5)


def test_linear_transforms_match_numpy_and_scipy(x):
    sp_fft = pytest.importorskip("scipy.fft")
    for transform in ("DFT", "DCT"):
        m = LinearTransform(E, 4, transform)
        z = m.input(x).reshape(B, T, 4, 32).transpose(1, 2).detach().double().numpy()
        if transform == "DFT":
            ref = sp_fft.fft2(z, axes=(-2, -1)).real
        else:
            ref = sp_fft.dctn(z, type=2, axes=(-2, -1), norm="ortho")
        ref = torch.from_numpy(ref).float().transpose(1, 2).reshape(B, T, E)
        assert torch.allclose(m(x), ref, atol=1e-4), transform


# -------------------------------------------------------------------------- probes
def test_probe_records_every_layer(x):
    a = arch(256, [layer("SA", "SDP", 4, 1024, 3), layer("DSC", 5, 4), layer("LT", "DFT", 2),
                   layer("SA", "WMA", 2)])
    model = build_nasbench_bert(a, seed=0)
    plain = model(x)
    with probe.record() as records:
        recorded = model(x)
    assert torch.allclose(plain, recorded, atol=1e-5)  # the explicit path computes the same
    kinds = [r.kind for r in records]
    assert kinds == ["attention", "ffn", "attention", "mixer", "ffn", "mixer", "ffn",
                     "attention", "ffn"]
    mixers = [la.mixer for la in model.layers]
    owners = [mixers[0], model.layers[0].ffn, mixers[1], mixers[1], model.layers[1].ffn,
              mixers[2], model.layers[2].ffn, mixers[3], model.layers[3].ffn]
    assert all(r.module is o for r, o in zip(records, owners, strict=True))
    heads_shapes = [(B, 4, T, 64), None, (B, 2, T, 64), (B, 2, T, 64), None, (B, 2, T, 128),
                    None, (B, 2, T, 128), None]
    for r, shape in zip(records, heads_shapes, strict=True):
        if r.kind == probe.FFN:
            assert r.tensors["hidden"].shape[:2] == (B, T)
            continue
        assert r.tensors["heads"].shape == shape
        if r.kind == probe.ATTENTION:
            p = r.tensors["probs"]
            assert p.shape == (B, shape[1], T, T) and (p >= 0).all()
            assert torch.allclose(p.sum(-1), torch.ones(B, shape[1], T), atol=1e-5)
    assert records[1].tensors["hidden"].shape == (B, T, 1024)
    assert any(p is mixers[0].query.weight for p in records[0].module.parameters())
    assert any(p is mixers[1].depthwise.weight for p in records[2].module.parameters())
    assert any(p is mixers[2].input.weight for p in records[5].module.parameters())
    assert any(p is mixers[3].weight.weight for p in records[7].module.parameters())
    gelu = records[1].tensors["hidden"]
    assert gelu.min() >= -0.2  # a GELU output (its minimum is about -0.17)


# ----------------------------------------------------------------- inputs, registry
def test_token_inputs_are_deterministic():
    a, b, c = token_inputs(B, T, 5), token_inputs(B, T, 5), token_inputs(B, T, 6)
    assert a.shape == (B, T, E) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a.mean(-1), torch.zeros(B, T), atol=1e-5)
    assert torch.allclose(a.std(-1, unbiased=False), torch.ones(B, T), atol=1e-3)
    one = token_inputs(3, T, 5, vocab_size=1, embedding_size=32)  # every token the same id
    assert one.shape == (3, T, 32) and torch.equal(one[0], one[2])
    assert not torch.allclose(one[0, 0], one[0, 1])  # positions differ
    with pytest.raises(ValueError, match="seq_len"):
        token_inputs(B, 0, 5)


def test_registry_builds_from_strings(dev_lines):
    entry = get_arch_parser("nasbench_bert")
    assert entry.input_shape == INPUT_SHAPE == (128, 128)
    for line in dev_lines[::2]:
        model = entry.build_from_str(line, 2, seed=0)
        assert isinstance(model, NASBenchBERT)
        assert model(token_inputs(B, T, 1)).shape == (B, 2)
        assert entry.build_from_str(arch_to_str(parse(line)), 2, seed=0).arch == parse(line)
    if getattr(entry, "from_record", None) is not None:
        assert entry.from_record(json.loads(dev_lines[0])) == arch_to_str(parse(dev_lines[0]))
    if getattr(entry, "data_free_input", None) is not None:
        batch = entry.data_free_input(B, (T, E), 3)
        assert torch.equal(batch, token_inputs(B, T, 3))


def test_attention_scale_is_one_over_sqrt_head_dim(x):
    m = SelfAttention(E, 2)
    with probe.record() as records:
        m(x)
    q = m.query(x).reshape(B, T, 2, 64).transpose(1, 2)
    k = m.key(x).reshape(B, T, 2, 64).transpose(1, 2)
    ref = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(64), dim=-1)
    assert torch.allclose(records[0].tensors["probs"], ref, atol=1e-6)
