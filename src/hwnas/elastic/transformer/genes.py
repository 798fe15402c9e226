"""The encoder genes shared by the transformer domains with absolute MLP sizes (BERT,
RNN-T): ``depth``, ``embed``, and per layer ``heads{i}`` and ``ffn{i}``, active only when
``depth > i`` (the ViT's ``mlp{i}`` genes are ratios and live in its own module).

With ``uniform_width`` the widths are tied across layers instead (DynaBERT's width
multipliers): one ``heads`` and one ``ffn`` gene that every active layer takes, so a
space of ``|depth| * |heads| * |ffn| * |embed|`` subnets whose every width is trained
often by a short weight-sharing budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hwnas.spaces.base import Gene


def encoder_genes(
    depth_choices: Sequence[int],
    embed_choices: Sequence[int],
    head_choices: Sequence[int],
    ffn_choices: Sequence[int],
    uniform_width: bool = False,
) -> list[Gene]:
    """Genes of groups ``depth``, ``embed``, ``heads`` and ``mlp`` (progressive
    shrinking opens them by group); layers below the smallest depth are always active."""
    heads, ffn = tuple(sorted(set(head_choices))), tuple(sorted(set(ffn_choices)))
    genes = [
        Gene("depth", tuple(sorted(set(depth_choices))), "depth"),
        Gene("embed", tuple(sorted(set(embed_choices))), "embed"),
    ]
    if uniform_width:
        return [*genes, Gene("heads", heads, "heads"), Gene("ffn", ffn, "mlp")]
    for i in range(max(depth_choices)):
        cond = None if i < min(depth_choices) else ("depth", i)
        genes.append(Gene(f"heads{i}", heads, "heads", cond))
        genes.append(Gene(f"ffn{i}", ffn, "mlp", cond))
    return genes


def encoder_dims(arch: Mapping[str, Any]) -> tuple[int, int, list[int], list[int]]:
    """``(depth, embed, heads per layer, MLP size per layer)`` of an arch of these genes
    (per-layer or tied widths)."""
    depth = int(arch["depth"])
    if "heads" in arch:  # widths tied across layers
        return depth, int(arch["embed"]), [int(arch["heads"])] * depth, [int(arch["ffn"])] * depth
    heads = [int(arch[f"heads{i}"]) for i in range(depth)]
    return depth, int(arch["embed"]), heads, [int(arch[f"ffn{i}"]) for i in range(depth)]


def layer_keys(arch: Mapping[str, Any], tokens: int) -> list[str]:
    """Latency-table keys of the active layers: (tokens, embed, heads, MLP size)."""
    depth, e, heads, hidden = encoder_dims(arch)
    return [f"layer:t{tokens}e{e}h{h}f{f}" for h, f in zip(heads, hidden)]
