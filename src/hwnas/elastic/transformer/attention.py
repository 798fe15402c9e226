"""Multi-head self-attention with elastic heads (sliced by whole heads) and embed dim.

The fused q/k/v projection stores its rows head by head, ``(head, [q, k, v],
head_dim)``, so the first ``h`` heads are one leading slice of ``3·h·head_dim`` rows
and the output projection's first ``h·head_dim`` columns. The head dim is fixed; the
embed dim is elastic on the input (q/k/v columns) and output (projection rows) side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.core import probe
from hwnas.elastic.transformer.linear import ElasticLinear


def key_mask(padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) bool, True = padding  ->  (B, 1, 1, T) bool, True = may be attended to
    (``scaled_dot_product_attention``'s convention)."""
    return None if padding_mask is None else ~padding_mask[:, None, None, :]


def attend(
    qkv: torch.Tensor,
    heads: int,
    head_dim: int,
    padding_mask: torch.Tensor | None,
    dropout_p: float,
    module: nn.Module | None = None,
) -> torch.Tensor:
    """Self-attention from fused per-head q/k/v: (B, T, heads·3·head_dim) -> (B, T,
    heads·head_dim). Every sequence needs at least one unpadded token. While a
    :mod:`hwnas.core.probe` recording is open, ``module`` reports its probabilities."""
    b, t, _ = qkv.shape
    qkv = qkv.reshape(b, t, heads, 3, head_dim).permute(3, 0, 2, 1, 4)  # (3, B, h, T, d)
    q, k, v = qkv.unbind(0)
    mask = key_mask(padding_mask)
    if probe.recording() and module is not None:  # a proxy asks for the probabilities
        scores = (q @ k.transpose(-2, -1)) / head_dim**0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(dim=-1)
        y = F.dropout(probs, dropout_p) @ v
        probe.note(probe.ATTENTION, module, probs=probs, heads=y)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return y.transpose(1, 2).reshape(b, t, heads * head_dim)  # (B,h,T,d) -> (B,T,h·d)


class ElasticMultiheadAttention(nn.Module):
    """Self-attention over ``active_heads`` heads of ``head_dim`` on ``active_embed``
    input channels; ``padding_mask`` (B, T) bool marks padding tokens with True (as
    ``nn.MultiheadAttention``'s ``key_padding_mask``)."""

    def __init__(
        self,
        max_embed: int,
        max_heads: int,
        head_dim: int,
        attn_dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        self.max_embed, self.max_heads, self.head_dim = max_embed, max_heads, head_dim
        self.attn_dropout = attn_dropout
        self.qkv = ElasticLinear(max_embed, 3 * max_heads * head_dim, bias)
        self.proj = ElasticLinear(max_heads * head_dim, max_embed, bias)
        self.set_active(max_embed, max_heads)

    def set_active(self, embed: int, heads: int) -> None:
        if not (1 <= heads <= self.max_heads and 1 <= embed <= self.max_embed):
            raise ValueError(
                f"attention: heads={heads}, embed={embed} outside 1..{self.max_heads}, "
                f"1..{self.max_embed}"
            )
        self.active_embed, self.active_heads = embed, heads
        self.qkv.active_in, self.qkv.active_out = embed, 3 * heads * self.head_dim
        self.proj.active_in, self.proj.active_out = heads * self.head_dim, embed

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        p = self.attn_dropout if self.training else 0.0
        y = attend(self.qkv(x), self.active_heads, self.head_dim, padding_mask, p, self)
        return self.proj(y)

    def params(self) -> int:
        return self.qkv.params() + self.proj.params()

    def flops(self, tokens: int, batch: int = 1) -> int:
        """Projections plus the attention matrices: QKᵀ and AV, each
        ``2·B·h·T·T·head_dim`` (softmax and masking not counted)."""
        attn = 2 * 2 * batch * self.active_heads * tokens * tokens * self.head_dim
        return self.qkv.flops(tokens, batch) + attn + self.proj.flops(tokens, batch)

    def head_importance(self) -> torch.Tensor:
        """(max_heads,) L1 norm of each head's q/k/v rows times the L1 norm of its
        output-projection columns: weight magnitude (DynaBERT ranks by the loss
        instead, :meth:`head_saliency`)."""
        h, d = self.max_heads, self.head_dim
        w_in = self.qkv.weight.detach().abs().reshape(h, 3 * d, -1).sum(dim=(1, 2))
        w_out = self.proj.weight.detach().abs().reshape(-1, h, d).sum(dim=(0, 2))
        return w_in * w_out

    def importance_weights(self) -> list[nn.Parameter]:
        """The weights loss-based importance differentiates (the output projection)."""
        return [self.proj.weight]

    def importance_saliency(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """(max_heads,) saliency from the gradients of :meth:`importance_weights`."""
        return self.head_saliency(*grads)

    def head_saliency(self, grad_proj: torch.Tensor) -> torch.Tensor:
        """(max_heads,) first-order estimate of the loss change when each head is cut:
        ``|Σ W_proj ⊙ ∂L/∂W_proj|`` over the head's output-projection columns, which
        equals the loss gradient with respect to a mask on the head's output (Michel et
        al. 2019; DynaBERT ranks heads by it). ``grad_proj`` is ``∂L/∂proj.weight``."""
        h, d = self.max_heads, self.head_dim
        taylor = self.proj.weight.detach() * grad_proj  # (E, h·d)
        return taylor.reshape(-1, h, d).sum(dim=(0, 2)).abs()

    def permute_heads_(self, perm: torch.Tensor) -> None:
        """Reorder whole heads in place (``perm`` indexes the ``max_heads`` heads)."""
        h, d = self.max_heads, self.head_dim
        with torch.no_grad():
            w = self.qkv.weight
            w.copy_(w.reshape(h, 3 * d, -1)[perm].reshape_as(w))
            if self.qkv.bias is not None:
                b = self.qkv.bias
                b.copy_(b.reshape(h, 3 * d)[perm].reshape_as(b))
            w = self.proj.weight
            w.copy_(w.reshape(-1, h, d)[:, perm].reshape_as(w))

    def permute_embed_(self, perm: torch.Tensor) -> None:
        """Reorder the embed channels (q/k/v columns, projection rows) in place."""
        with torch.no_grad():
            self.qkv.weight.copy_(self.qkv.weight[:, perm])
            self.proj.weight.copy_(self.proj.weight[perm])
            if self.proj.bias is not None:
                self.proj.bias.copy_(self.proj.bias[perm])

    def to_static(self) -> StaticMultiheadAttention:
        return StaticMultiheadAttention(
            self.qkv.to_static(), self.proj.to_static(), self.active_heads, self.head_dim,
            self.attn_dropout,
        )  # fmt: skip


class StaticMultiheadAttention(nn.Module):
    """Plain self-attention (fused per-head q/k/v ``nn.Linear``, output ``nn.Linear``),
    produced by :meth:`ElasticMultiheadAttention.to_static`."""

    def __init__(
        self, qkv: nn.Linear, proj: nn.Linear, heads: int, head_dim: int, attn_dropout: float
    ):
        super().__init__()
        self.qkv, self.proj = qkv, proj
        self.heads, self.head_dim, self.attn_dropout = heads, head_dim, attn_dropout

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        p = self.attn_dropout if self.training else 0.0
        return self.proj(attend(self.qkv(x), self.heads, self.head_dim, padding_mask, p, self))
