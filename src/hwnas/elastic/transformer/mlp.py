"""Transformer feed-forward block with an elastic hidden dim: fc1 -> act -> fc2."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.core import probe
from hwnas.elastic.transformer.linear import ElasticLinear

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} unknown; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ElasticMLP(nn.Module):
    """``fc2(drop(act(fc1(x))))`` with elastic embed (in/out) and hidden dims."""

    def __init__(
        self, max_embed: int, max_hidden: int, activation: str = "gelu", dropout: float = 0.0
    ):
        super().__init__()
        self.max_embed, self.max_hidden, self.activation = max_embed, max_hidden, activation
        self.fc1 = ElasticLinear(max_embed, max_hidden)
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.fc2 = ElasticLinear(max_hidden, max_embed)
        self.set_active(max_embed, max_hidden)

    def set_active(self, embed: int, hidden: int) -> None:
        if not (1 <= hidden <= self.max_hidden and 1 <= embed <= self.max_embed):
            raise ValueError(
                f"mlp: hidden={hidden}, embed={embed} outside 1..{self.max_hidden}, "
                f"1..{self.max_embed}"
            )
        self.active_embed, self.active_hidden = embed, hidden
        self.fc1.active_in, self.fc1.active_out = embed, hidden
        self.fc2.active_in, self.fc2.active_out = hidden, embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        hidden = self.act(self.fc1(x))
        probe.note(probe.FFN, self, hidden=hidden)  # for transformer proxies (W-PCA)
        return self.fc2(self.drop(hidden))

    def params(self) -> int:
        return self.fc1.params() + self.fc2.params()

    def flops(self, tokens: int, batch: int = 1) -> int:
        """The two matrix products (the activation is not counted)."""
        return self.fc1.flops(tokens, batch) + self.fc2.flops(tokens, batch)

    def neuron_importance(self) -> torch.Tensor:
        """(max_hidden,) L1 norm of each hidden unit's fc1 row times its fc2 column."""
        w1, w2 = self.fc1.weight.detach().abs(), self.fc2.weight.detach().abs()
        return w1.sum(dim=1) * w2.sum(dim=0)

    def importance_weights(self) -> list[nn.Parameter]:
        """The weights loss-based importance differentiates (fc1 weight and bias, fc2)."""
        return [self.fc1.weight, self.fc1.bias, self.fc2.weight]

    def importance_saliency(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """(max_hidden,) saliency from the gradients of :meth:`importance_weights`."""
        return self.neuron_saliency(*grads)

    def neuron_saliency(
        self, grad_w1: torch.Tensor, grad_b1: torch.Tensor, grad_w2: torch.Tensor
    ) -> torch.Tensor:
        """(max_hidden,) first-order estimate of the loss change when each hidden unit
        is cut (DynaBERT): ``|Σ_in W1⊙∂L/∂W1 + b1⊙∂L/∂b1|`` (a mask before the
        activation) plus ``|Σ_out W2⊙∂L/∂W2|`` (a mask after it)."""
        w1, b1, w2 = self.fc1.weight.detach(), self.fc1.bias.detach(), self.fc2.weight.detach()
        before = (w1 * grad_w1).sum(dim=1) + b1 * grad_b1  # (H,)
        after = (w2 * grad_w2).sum(dim=0)  # (H,)
        return before.abs() + after.abs()

    def permute_hidden_(self, perm: torch.Tensor) -> None:
        with torch.no_grad():
            self.fc1.weight.copy_(self.fc1.weight[perm])
            self.fc1.bias.copy_(self.fc1.bias[perm])
            self.fc2.weight.copy_(self.fc2.weight[:, perm])

    def permute_embed_(self, perm: torch.Tensor) -> None:
        with torch.no_grad():
            self.fc1.weight.copy_(self.fc1.weight[:, perm])
            self.fc2.weight.copy_(self.fc2.weight[perm])
            self.fc2.bias.copy_(self.fc2.bias[perm])

    def to_static(self) -> StaticMLP:
        return StaticMLP(self.fc1.to_static(), make_activation(self.activation),
                         self.drop.p, self.fc2.to_static())  # fmt: skip


class StaticMLP(nn.Module):
    """Plain feed-forward block produced by :meth:`ElasticMLP.to_static`."""

    def __init__(self, fc1: nn.Linear, act: nn.Module, dropout: float, fc2: nn.Linear):
        super().__init__()
        self.fc1, self.act, self.drop, self.fc2 = fc1, act, nn.Dropout(dropout), fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        hidden = self.act(self.fc1(x))
        probe.note(probe.FFN, self, hidden=hidden)  # for transformer proxies (W-PCA)
        return self.fc2(self.drop(hidden))
