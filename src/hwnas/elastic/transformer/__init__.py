"""The elastic transformer: super-ops (one per file) and the domain-free encoder.

Every op allocates its parameters at the largest size, slices them in ``forward``,
reports ``params()`` and ``flops(tokens, batch)`` (2 per multiply-add of matrix
products, as ``torch.utils.flop_counter.FlopCounterMode`` counts them) for its active
configuration, and builds a plain module with copied weights with ``to_static()``.
"""

from hwnas.elastic.transformer.attention import ElasticMultiheadAttention, StaticMultiheadAttention
from hwnas.elastic.transformer.embedding import (
    ElasticEmbedding,
    ElasticPositionEmbedding,
    StaticPositionEmbedding,
)
from hwnas.elastic.transformer.encoder import (
    ElasticTransformerEncoder,
    ElasticTransformerLayer,
    StaticTransformerEncoder,
    StaticTransformerLayer,
)
from hwnas.elastic.transformer.layernorm import ElasticLayerNorm
from hwnas.elastic.transformer.linear import ElasticLinear
from hwnas.elastic.transformer.mlp import ACTIVATIONS, ElasticMLP, StaticMLP

__all__ = [
    "ACTIVATIONS",
    "ElasticEmbedding",
    "ElasticLayerNorm",
    "ElasticLinear",
    "ElasticMLP",
    "ElasticMultiheadAttention",
    "ElasticPositionEmbedding",
    "ElasticTransformerEncoder",
    "ElasticTransformerLayer",
    "StaticMLP",
    "StaticMultiheadAttention",
    "StaticPositionEmbedding",
    "StaticTransformerEncoder",
    "StaticTransformerLayer",
]
