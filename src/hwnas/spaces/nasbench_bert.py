"""The NAS-Bench-BERT search space (Serianni & Kalita, "Training-free Neural Architecture
Search for RNNs and Transformers", ACL 2023): 500 BERT-like encoders, pretrained
ELECTRA-style (Clark et al., ICLR 2020) and scored on GLUE.

An arch is ``{"hidden_size": 128 | 256, "encoder_layers": [layer, ...]}`` with 2 or 4
layers; each layer is a token mixer then a feed-forward stack::

    {"operation_type": "SA" | "LT" | "DSC", "num_operation_heads": 2 | 4,
     "operation_parameter": "SDP" | "WMA" (SA), "DFT" | "DCT" (LT), 5 | 9 (DSC kernel),
     "feed_forward_dimension": 512 | 1024, "num_feed_forward": 1 | 3}

- ``SA/SDP``: multi-head scaled dot-product self-attention; ``SA/WMA`` the same with the
  query passed through an extra bias-free ``Linear(H, H)`` (weighted multiplicative
  attention). Both end with ELECTRA's self-output: Linear, residual, LayerNorm.
- ``DSC``: ConvBERT's span-based dynamic convolution mixed with attention (Jiang et al.,
  NeurIPS 2020), conv head ratio 2: ``heads // 2`` attention heads of width
  ``H / heads`` next to as many dynamic-convolution heads; the two halves are
  concatenated per token, then the self-output.
- ``LT/DFT``: FNet's Fourier mixing (Lee-Thorp et al., NAACL 2022) per head: a
  ``Linear(H, H)``, then the real part of the 2-D FFT over (tokens, head dim) of each
  head. ``LT/DCT``: the same with the **orthonormal** 2-D DCT-II. As in the benchmark's
  code, LT mixers have no residual and no LayerNorm after them.

The feed-forward stack is ``Linear(H, F)`` + GELU, ``num_feed_forward - 1`` times
``Linear(F, F)`` + GELU, ``Linear(F, H)``, residual with the mixer output, LayerNorm.
Choices: the built model starts after the embedding stage (its input is the
(B, T, embedding_size) output of :func:`token_inputs` or of a real embedding table)
with ELECTRA's ``embeddings_project`` when ``hidden_size != embedding_size``, and ends
with ELECTRA's classification head on the first token (Linear, GELU, Linear). Weights
follow ELECTRA's init: Linear/Conv1d ~ N(0, 0.02), biases 0, LayerNorm 1/0. No dropout.
Probe reports: SA reports ``ATTENTION``; DSC reports ``ATTENTION`` for its attention heads
and then ``MIXER`` (same module) for its convolution heads; LT reports ``MIXER``; every
feed-forward stack reports ``FFN`` with its last GELU activation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core import probe
from hwnas.core.seeding import seeded_generator
from hwnas.core.types import Network
from hwnas.spaces.parsing import register_arch_parser

__all__ = ["EMBEDDING_SIZE", "INPUT_SHAPE", "NASBenchBERT", "arch_to_str", "build_nasbench_bert"]
__all__ += ["normalize", "parameter_count", "parse", "token_inputs"]

EMBEDDING_SIZE = 128
INPUT_SHAPE: tuple[int, int] = (128, EMBEDDING_SIZE)  # (seq_len, embedding_size)
LN_EPS = 1e-12
INIT_STD = 0.02
HIDDEN_SIZES = (128, 256)
NUM_LAYERS = (2, 4)
OPERATIONS: dict[str, tuple[Any, ...]] = {"SA": ("SDP", "WMA"), "LT": ("DFT", "DCT"), "DSC": (5, 9)}
CHOICES: dict[str, tuple[int, ...]] = {"num_operation_heads": (2, 4), "feed_forward_dimension":
                                       (512, 1024), "num_feed_forward": (1, 3)}
LAYER_KEYS = ("operation_type", "operation_parameter", *CHOICES)


# ------------------------------------------------------------------- arch strings
def _pick(value: Any, field: str, allowed: tuple[Any, ...]) -> Any:
    """``value`` as its allowed choice (strings case-insensitive, "5" is 5), or ValueError."""
    v = value.strip().upper() if isinstance(value, str) else value
    v = int(v) if isinstance(v, str) and v.isdigit() else v
    if isinstance(v, bool) or not isinstance(v, (str, int, float)) or v not in allowed:
        raise ValueError(f"nasbench_bert: {field} is {value!r}; allowed values: {list(allowed)}")
    return allowed[allowed.index(v)]


def _layer(layer: Any, where: str) -> dict[str, Any]:
    keys = sorted(set(layer) ^ set(LAYER_KEYS)) if isinstance(layer, Mapping) else LAYER_KEYS
    if keys:
        raise ValueError(f"nasbench_bert: {where} must be an object with exactly the keys "
                         f"{list(LAYER_KEYS)} (unknown or missing: {list(keys)})")
    op = _pick(layer["operation_type"], f"{where}.operation_type", tuple(OPERATIONS))
    out = {"operation_type": op, "operation_parameter": _pick(
        layer["operation_parameter"], f"{where}.operation_parameter for {op}", OPERATIONS[op])}
    return out | {key: _pick(layer[key], f"{where}.{key}", ok) for key, ok in CHOICES.items()}


def normalize(arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` (an arch or a whole benchmark record; other keys are dropped) as a plain,
    validated ``{"hidden_size": int, "encoder_layers": [...]}``; ValueError names the
    bad field and its allowed values."""
    if not isinstance(arch, Mapping) or not {"hidden_size", "encoder_layers"} <= set(arch):
        raise ValueError(f"nasbench_bert: an arch is a JSON object with 'hidden_size' and "
                         f"'encoder_layers', got {str(arch)[:80]!r}")
    hidden = _pick(arch["hidden_size"], "hidden_size", HIDDEN_SIZES)
    layers = arch["encoder_layers"]
    if isinstance(layers, (str, bytes, Mapping)) or not hasattr(layers, "__len__"):
        raise ValueError("nasbench_bert: encoder_layers must be a list of layer objects")
    _pick(len(layers), "the number of encoder_layers", NUM_LAYERS)
    return {
        "hidden_size": hidden,
        "encoder_layers": [_layer(la, f"encoder_layers[{i}]") for i, la in enumerate(layers)],
    }


def parse(text: str | Mapping[str, Any]) -> dict[str, Any]:
    """Read a JSON arch (``{"hidden_size", "encoder_layers"}`` or a whole benchmark
    record) into the normalized plain dict of :func:`normalize`."""
    if isinstance(text, Mapping):
        return normalize(text)
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"nasbench_bert: not a JSON arch ({exc}): {str(text)[:80]!r}") from exc
    return normalize(data)


def arch_to_str(arch: Mapping[str, Any] | str) -> str:
    """The canonical compact JSON of ``arch`` (sorted keys): a stable table key, and
    ``parse(arch_to_str(a)) == a`` for a normalized ``a``."""
    data = parse(arch) if isinstance(arch, str) else normalize(arch)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------ modules
def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, h·d) -> (B, h, T, d)."""
    b, t, _ = x.shape
    return x.reshape(b, t, heads, -1).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d) -> (B, T, h·d)."""
    b, h, t, d = y.shape
    return y.transpose(1, 2).reshape(b, t, h * d)


def _attend(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention over (B, h, T, d) q/k/v; reports to an open probe recording."""
    if not probe.recording():
        return F.scaled_dot_product_attention(q, k, v)
    probs = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    y = probs @ v
    probe.note(probe.ATTENTION, module, probs=probs, heads=y)
    return y


def _check_heads(hidden: int, heads: int) -> None:
    if heads < 1 or hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not divisible into {heads} heads")


class SelfAttention(nn.Module):
    """SA: multi-head self-attention (``weighted``: WMA's extra query weight) followed by
    ELECTRA's self-output (Linear, residual with the input, LayerNorm)."""

    def __init__(self, hidden: int, heads: int, weighted: bool = False):
        super().__init__()
        _check_heads(hidden, heads)
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.weight = nn.Linear(hidden, hidden, bias=False) if weighted else None
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x)
        if self.weight is not None:
            q = self.weight(q)
        q, k, v = (_split(t, self.heads) for t in (q, self.key(x), self.value(x)))
        y = _attend(self, q, k, v)
        return self.norm(self.dense(_merge(y)) + x)


class ConvAttention(nn.Module):
    """DSC: ConvBERT's mixed attention, ``heads // 2`` softmax heads plus as many
    span-based dynamic convolution heads of kernel ``kernel``, then the self-output."""

    def __init__(self, hidden: int, heads: int, kernel: int):
        super().__init__()
        _check_heads(hidden, heads)
        self.heads = max(1, heads // 2)
        self.head_dim = hidden // heads
        self.kernel = kernel
        width = self.heads * self.head_dim
        if 2 * width != hidden:
            raise ValueError(f"DSC with hidden_size {hidden} and {heads} heads concatenates "
                             f"{2 * width} != {hidden} channels; use an even number of heads")
        self.query, self.key, self.value = (nn.Linear(hidden, width) for _ in range(3))
        self.depthwise = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden,
                                   bias=False)
        self.pointwise = nn.Conv1d(hidden, width, 1, bias=False)
        self.conv_bias = nn.Parameter(torch.zeros(width))
        self.conv_kernel = nn.Linear(width, self.heads * kernel)
        self.conv_out = nn.Linear(hidden, width)
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, d, k = self.heads, self.head_dim, self.kernel
        q = self.query(x)  # (B, T, h·d)
        key_conv = self.pointwise(self.depthwise(x.transpose(1, 2))).transpose(1, 2)
        kern = self.conv_kernel((key_conv + self.conv_bias) * q).reshape(b, t, h, k).softmax(-1)
        pad = (k - 1) // 2
        spans = F.pad(self.conv_out(x).transpose(1, 2), (pad, k - 1 - pad)).unfold(-1, k, 1)
        conv = torch.einsum("bhdtk,bthk->bhtd", spans.reshape(b, h, d, t, k), kern)
        y = _attend(self, _split(q, h), _split(self.key(x), h), _split(self.value(x), h))
        probe.note(probe.MIXER, self, heads=conv)  # the convolution heads (no-op if closed)
        return self.norm(self.dense(_merge(torch.cat([y, conv], dim=1))) + x)


@lru_cache(maxsize=32)
def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n), float64 on the CPU."""
    i = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


class LinearTransform(nn.Module):
    """LT: ``Linear(H, H)`` then, per head, the real 2-D FFT (``DFT``) or the
    orthonormal 2-D DCT-II (``DCT``) over (tokens, head dim); no residual/LayerNorm."""

    def __init__(self, hidden: int, heads: int, transform: str):
        super().__init__()
        _check_heads(hidden, heads)
        self.heads = heads
        self.transform = _pick(transform, "LT operation_parameter", OPERATIONS["LT"])
        self.input = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _split(self.input(x), self.heads)  # (B, h, T, d)
        if self.transform == "DFT":
            y = torch.fft.fft2(z.float(), dim=(-2, -1)).real.to(z.dtype)
        else:
            c_t = _dct_matrix(z.shape[-2]).to(z.device, z.dtype)
            c_d = _dct_matrix(z.shape[-1]).to(z.device, z.dtype)
            y = c_t @ z @ c_d.T
        probe.note(probe.MIXER, self, heads=y)
        return _merge(y)


class FeedForward(nn.Module):
    """``num`` GELU Linear layers (H->F, then F->F), Linear(F, H), residual, LayerNorm."""

    def __init__(self, hidden: int, dim: int, num: int):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(dim if i else hidden, dim) for i in range(num))
        self.output = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        for linear in self.hidden:
            a = F.gelu(linear(a))
        probe.note(probe.FFN, self, hidden=a)
        return self.norm(self.output(a) + x)


def make_mixer(hidden: int, layer: Mapping[str, Any]) -> nn.Module:
    """The token mixer of one normalized layer dict."""
    op, param = layer["operation_type"], layer["operation_parameter"]
    heads = layer["num_operation_heads"]
    if op == "SA":
        return SelfAttention(hidden, heads, weighted=param == "WMA")
    if op == "DSC":
        return ConvAttention(hidden, heads, int(param))
    return LinearTransform(hidden, heads, param)


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, layer: Mapping[str, Any]):  # token mixer, then FFN stack
        super().__init__()
        self.mixer = make_mixer(hidden, layer)
        self.ffn = FeedForward(hidden, layer["feed_forward_dimension"], layer["num_feed_forward"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(x))


class NASBenchBERT(Network):
    """A NAS-Bench-BERT encoder on (B, T, embedding_size) embeddings, with ELECTRA's
    classification head on the first token."""

    def __init__(self, arch: Mapping[str, Any], num_classes: int = 2, embedding_size: int = 128):
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(f"need positive sizes, got {num_classes=}, {embedding_size=}")
        arch = normalize(arch)
        self.arch_str = arch_to_str(arch)
        self.embedding_size = embedding_size
        hidden = arch["hidden_size"]
        project = embedding_size != hidden  # ELECTRA's embeddings_project
        self.embeddings_project = nn.Linear(embedding_size, hidden) if project else None
        self.layers = nn.ModuleList(EncoderLayer(hidden, la) for la in arch["encoder_layers"])
        self.head_dense = nn.Linear(hidden, hidden)
        self.head_out = nn.Linear(hidden, num_classes)

    @property
    def arch(self) -> dict[str, Any]:
        return parse(self.arch_str)

    def proxy_blocks(self) -> list[nn.Module]:
        return list(self.layers)  # the encoder layers, in order

    def hidden_layers(self) -> list[nn.Module]:
        return list(self.layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, embedding_size) embeddings -> (B, T, hidden_size) final hidden states."""
        if x.dim() != 3 or x.shape[-1] != self.embedding_size:
            raise ValueError(f"NASBenchBERT expects (batch, seq_len, {self.embedding_size}) "
                             f"embeddings, got shape {tuple(x.shape)}")
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.forward_features(x)[:, 0]
        return self.head_out(F.gelu(self.head_dense(first)))  # (B, num_classes)


def init_electra_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """ELECTRA's init in module order: Linear/Conv1d weights ~ N(0, 0.02) from
    ``generator`` (the global RNG when ``None``), every bias 0, LayerNorm 1/0."""
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # biases and ConvBERT's separable-conv bias
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                nn.init.normal_(m.weight, 0.0, INIT_STD, generator=generator)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
    return model


def build_nasbench_bert(arch: Mapping[str, Any] | str, num_classes: int = 2,
                        seed: int | None = None, embedding_size: int = 128) -> NASBenchBERT:
    """Build the network of ``arch`` (a dict or its JSON). With an int ``seed`` the
    weights come from a ``torch.Generator`` seeded with it (same seed, same network;
    the global RNG is untouched); without, from the global RNG."""
    arch = parse(arch) if isinstance(arch, str) else arch
    with torch.device("meta"):
        model = NASBenchBERT(arch, num_classes=num_classes, embedding_size=embedding_size)
    model.to_empty(device="cpu")
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    return init_electra_(model, generator)


def parameter_count(arch: Mapping[str, Any] | str, num_classes: int = 2,
                    embedding_size: int = 128) -> int:
    """Parameters of the built network (head and projection included), not allocated."""
    with torch.device("meta"):
        model = NASBenchBERT(parse(arch), num_classes=num_classes, embedding_size=embedding_size)
    return sum(p.numel() for p in model.parameters())


def token_inputs(batch_size: int, seq_len: int, seed: int, vocab_size: int = 30522,
                 embedding_size: int = 128, device: str | torch.device = "cpu") -> torch.Tensor:
    """ELECTRA's embedding stage on random tokens: (B, T, embedding_size) float32.

    Token ids are uniform in ``[0, vocab_size)``; word + position + token-type-0
    embeddings ~ N(0, 0.02), then LayerNorm (weight 1, bias 0, eps 1e-12). Instead of a
    ``vocab_size``-row table, only the rows of the ids used are drawn, one per distinct
    id in increasing id order (equal ids share a row); everything comes from generators
    derived from ``seed``, so the same arguments give the same tensor.
    """
    if batch_size < 1 or seq_len < 1 or vocab_size < 1 or embedding_size < 1:
        raise ValueError(f"token_inputs needs positive sizes, got {batch_size=}, {seq_len=}, "
                         f"{vocab_size=}, {embedding_size=}")
    g = seeded_generator(seed, "ids")
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g)
    used, inverse = torch.unique(ids, sorted=True, return_inverse=True)

    def draw(*shape: int, part: str) -> torch.Tensor:
        g = seeded_generator(seed, part, vocab_size, embedding_size)
        return torch.randn(*shape, generator=g) * INIT_STD

    words = draw(len(used), embedding_size, part="words")
    positions = draw(seq_len, embedding_size, part="positions")
    token_type = draw(embedding_size, part="token_type")
    x = words[inverse] + positions + token_type
    return F.layer_norm(x, (embedding_size,), eps=LN_EPS).to(device)


def _data_free_input(batch_size: int, input_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    seq_len, embedding_size = input_shape
    return token_inputs(batch_size, seq_len, seed, embedding_size=embedding_size)


register_arch_parser("nasbench_bert", parse, build_nasbench_bert, INPUT_SHAPE, overwrite=True,
                     data_free_input=_data_free_input, from_record=arch_to_str)
