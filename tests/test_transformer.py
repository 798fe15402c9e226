"""The elastic transformer encoder and its super-ops: export equivalence (pre-/post-norm,
GELU/ReLU, padding masks), exact costs, reordering, ONNX."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hwnas.elastic.transformer.attention import ElasticMultiheadAttention
from hwnas.elastic.transformer.embedding import ElasticEmbedding, ElasticPositionEmbedding
from hwnas.elastic.transformer.encoder import ElasticTransformerEncoder
from hwnas.elastic.transformer.layernorm import ElasticLayerNorm
from hwnas.elastic.transformer.linear import ElasticLinear

EMBEDS, HEADS, HIDDEN, DEPTH, HEAD_DIM = (8, 12, 16), (1, 2, 3), (8, 24, 32), 3, 4
ATOL = 1e-5  # float32 slices vs. contiguous copies: the same sums in another order


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Weights of order 1 so that outputs are not near zero (init is std 0.02): matrices
    ~ N(0, 1/fan_in), vectors ~ N(0, 0.3), LayerNorm gains 1 + N(0, 0.2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, ElasticLayerNorm):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
    return module


def make_encoder(norm_first: bool = True, activation: str = "gelu", **kw):
    torch.manual_seed(0)
    args = dict(max_embed=max(EMBEDS), max_depth=DEPTH, max_heads=max(HEADS),
                head_dim=HEAD_DIM, max_hidden=max(HIDDEN), norm_first=norm_first,
                activation=activation)  # fmt: skip
    args.update(kw)
    return randomize_(ElasticTransformerEncoder(**args), seed=1).eval()


def configs(n: int = 10, seed: int = 0) -> list[tuple[int, int, list[int], list[int]]]:
    """(depth, embed, heads per layer, hidden per layer): max, min and ``n`` random."""
    rng = random.Random(seed)
    out = [
        (DEPTH, max(EMBEDS), [max(HEADS)] * DEPTH, [max(HIDDEN)] * DEPTH),
        (1, min(EMBEDS), [min(HEADS)] * DEPTH, [min(HIDDEN)] * DEPTH),
    ]
    for _ in range(n):
        out.append((rng.randint(1, DEPTH), rng.choice(EMBEDS),
                    [rng.choice(HEADS) for _ in range(DEPTH)],
                    [rng.choice(HIDDEN) for _ in range(DEPTH)]))  # fmt: skip
    return out


def batch(embed: int, b: int = 3, t: int = 7, seed: int = 2):
    """x (B, T, E) and a padding mask (B, T): row 0 unpadded, the others padded at the end."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, embed, generator=gen)
    lengths = torch.tensor([t] + [max(1, t - 2 * i) for i in range(1, b)])
    mask = torch.arange(t)[None, :] >= lengths[:, None]  # True = padding
    return x, mask


VARIANTS = [(True, "gelu"), (False, "gelu"), (True, "relu"), (False, "relu")]


@pytest.mark.parametrize(("norm_first", "activation"), VARIANTS)
@pytest.mark.parametrize("masked", [False, True])
def test_export_matches_supernet(norm_first, activation, masked):
    enc = make_encoder(norm_first, activation)
    for depth, embed, heads, hidden in configs():
        enc.set_active(depth, embed, heads, hidden)
        x, mask = batch(embed)
        mask = mask if masked else None
        static = enc.to_static().eval()
        assert not any(isinstance(m, (ElasticLinear, ElasticLayerNorm)) for m in static.modules())
        torch.testing.assert_close(static(x, mask), enc(x, mask), rtol=1e-5, atol=ATOL)


def test_post_norm_has_no_final_norm_and_pre_norm_has_one():
    assert make_encoder(norm_first=False).norm is None
    assert make_encoder(norm_first=True).norm is not None


def test_padding_mask_hides_padded_tokens():
    enc = make_encoder()
    x, mask = batch(max(EMBEDS))
    y = enc(x, mask)
    x2 = x.clone()
    x2[mask] = 100.0  # change only the padded tokens
    y2 = enc(x2, mask)
    keep = ~mask
    torch.testing.assert_close(y2[keep], y[keep], rtol=1e-5, atol=ATOL)
    assert not torch.allclose(enc(x2)[keep], y[keep])  # without the mask they leak in


def test_dropout_is_identity_in_eval_and_active_in_train():
    enc = make_encoder(dropout=0.3, attn_dropout=0.3)
    x, mask = batch(max(EMBEDS))
    torch.testing.assert_close(enc(x, mask), enc.to_static().eval()(x, mask))
    enc.train()
    torch.manual_seed(0)
    a = enc(x, mask)
    torch.manual_seed(1)
    assert not torch.allclose(a, enc(x, mask))
    static = enc.to_static().train()
    torch.manual_seed(5)
    a = enc(x, mask)
    torch.manual_seed(5)  # same dropout draws in the same order: same output
    torch.testing.assert_close(static(x, mask), a, rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("norm_first", [True, False])
def test_active_params_and_flops_are_exact(norm_first):
    """Params: equal to the exported model's. FLOPs: equal to ``FlopCounterMode`` on the
    exported model (tolerance 0), counted under SDPA's MATH backend -- PyTorch's fused
    CPU flash-attention kernel has no FLOP formula, so the default backend would leave
    QKᵀ and AV uncounted. Neither side counts softmax, LayerNorm, activations, residual
    adds or bias adds (2 FLOPs per multiply-add of matrix products only)."""
    enc = make_encoder(norm_first)
    for depth, embed, heads, hidden in configs(n=4, seed=3):
        enc.set_active(depth, embed, heads, hidden)
        static = enc.to_static()
        assert enc.params() == sum(p.numel() for p in static.parameters())
        x, mask = batch(embed, b=2, t=5)
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            static(x, mask)
        assert enc.flops(tokens=5, batch=2) == counter.get_total_flops()


def test_attention_flops_include_the_attention_matrices():
    attn = ElasticMultiheadAttention(max_embed=16, max_heads=2, head_dim=4)
    attn.set_active(embed=8, heads=1)
    t, b = 10, 2
    projections = 2 * b * t * 8 * 12 + 2 * b * t * 4 * 8
    assert attn.flops(t, b) == projections + 2 * 2 * b * 1 * t * t * 4


@pytest.mark.parametrize("norm_first", [True, False])
def test_reorganize_keeps_the_largest_function(norm_first):
    enc = make_encoder(norm_first)
    x, mask = batch(max(EMBEDS))
    before = enc(x, mask)
    enc.reorganize_by_importance()
    perm = torch.randperm(max(EMBEDS), generator=torch.Generator().manual_seed(0))
    enc.permute_embed_(perm)  # the owner would permute its own tensors as well
    torch.testing.assert_close(enc(x[..., perm], mask), before[..., perm], rtol=1e-5, atol=ATOL)
    for layer in enc.layers:  # most important first afterwards
        for score in (layer.attn.head_importance(), layer.mlp.neuron_importance()):
            assert torch.all(score[:-1] >= score[1:])


def test_set_active_rejects_bad_sizes():
    enc = make_encoder()
    with pytest.raises(ValueError, match="depth"):
        enc.set_active(DEPTH + 1, 8, [1] * 4, [8] * 4)
    with pytest.raises(ValueError, match="heads"):
        enc.set_active(1, 8, [max(HEADS) + 1], [8])
    with pytest.raises(ValueError, match="hidden"):
        enc.set_active(1, 8, [1], [max(HIDDEN) + 1])


def test_encoder_onnx_export_with_padding_mask_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    enc = make_encoder()
    enc.set_active(2, 12, [2, 3], [24, 8])
    static = enc.to_static().eval()
    x, mask = batch(12, b=2, t=6)
    buf = io.BytesIO()
    torch.onnx.export(static, (x, mask), buf, input_names=["x", "padding_mask"],
                      output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "b", 1: "t"}, "padding_mask": {0: "b", 1: "t"},
                                    "y": {0: "b", 1: "t"}})  # fmt: skip
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x, mask = batch(12, b=3, t=9, seed=7)  # another batch and length than at export
    (got,) = sess.run(None, {"x": x.numpy(), "padding_mask": mask.numpy()})
    np.testing.assert_allclose(got, static(x, mask).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_linear_and_layernorm_ops():
    lin = randomize_(ElasticLinear(6, 5), seed=0)
    lin.active_in, lin.active_out = 4, 3
    x = torch.randn(2, 7, 4)
    static = lin.to_static()
    torch.testing.assert_close(static(x), lin(x))
    assert lin.params() == 4 * 3 + 3 == sum(p.numel() for p in static.parameters())
    assert lin.flops(tokens=7, batch=2) == 2 * 2 * 7 * 4 * 3
    ln = randomize_(ElasticLayerNorm(6), seed=1)
    ln.active_dim = 4
    torch.testing.assert_close(ln.to_static()(x), ln(x))
    assert ln.params() == 8 and ln.flops(7, 2) == 0


def test_embeddings_slice_the_active_dim():
    emb = ElasticEmbedding(11, 8, padding_idx=0)
    emb.active_dim = 5
    ids = torch.tensor([[0, 3, 10], [4, 4, 1]])
    out = emb(ids)
    assert out.shape == (2, 3, 5) and torch.all(out[0, 0] == 0)
    static = emb.to_static()
    torch.testing.assert_close(static(ids), out)
    assert emb.params() == 11 * 5 == sum(p.numel() for p in static.parameters())
    pos = ElasticPositionEmbedding(max_len=6, max_dim=8)
    pos.active_dim = 5
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(pos(x), x + pos.weight[:4, :5])
    torch.testing.assert_close(pos.to_static()(x), pos(x))
    assert pos.params() == 6 * 5
