"""Elastic versions of the plain layers a converted model is made of.

A converted model keeps its own ``nn.Conv*d`` / ``nn.Linear`` / ``nn.BatchNorm*d``
objects (same parameters, same state-dict names); :func:`make_elastic` switches their
class to a subclass whose ``forward`` slices the weights to the active channels. The
active channels of a dimension are ``None`` (all), an ``int`` k (the first k) or a
``LongTensor`` of indices (several concatenated segments, each cut to its first k).
A convolution's active kernel (``active_kernel``, ``None`` = the full kernel) is the
centre crop of its kernel, with the padding shrunk alike (see :func:`kernel_choices`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.elastic import syncbn

Index = None | int | torch.Tensor


def take(t: torch.Tensor | None, dim: int, idx: Index) -> torch.Tensor | None:
    """``t`` restricted to the channels ``idx`` along ``dim``."""
    if t is None or idx is None:
        return t
    if isinstance(idx, int):
        return t.narrow(dim, 0, idx)
    return t.index_select(dim, idx.to(t.device))


def count(idx: Index, full: int) -> int:
    if idx is None:
        return full
    return idx if isinstance(idx, int) else int(idx.numel())


def kernel_choices(conv: nn.Module) -> tuple[tuple[int, ...], str | None]:
    """The kernel sizes ``conv`` may shrink to (ascending odd sizes from 3 up to its
    own; empty when it cannot) and, for a kernel of 5 or more that cannot, why.

    A smaller kernel is the centre crop of the full one (Once-for-All's elastic kernel
    without its kernel-transform matrices) with padding ``(k - 1) // 2 * dilation``:
    the output size stays the same only when the conv pads that way ('same'-like)."""
    ks = tuple(conv.kernel_size)
    k = ks[0]
    if max(ks) < 5:
        return (), None
    if len(set(ks)) > 1:
        return (), f"kernel {list(ks)} is not square"
    if k % 2 == 0:
        return (), f"even kernel {k}: a centre crop would shift the output"
    same = [(k - 1) // 2 * d for d in conv.dilation]
    padding = conv.padding
    if padding != "same" and (isinstance(padding, str) or list(padding) != same):
        return (), (
            f"padding {padding if isinstance(padding, str) else list(padding)} is not "
            f"(k-1)//2*dilation = {same}: a smaller kernel would change the output size"
        )
    return tuple(range(3, k + 1, 2)), None


class _ElasticConv:
    """Mixin for ``nn.Conv{1,2,3}d``. ``tied``: grouped/depthwise with equal input and
    output channels, whose channels (and conv groups) shrink together. ``active_kernel``:
    the side of the centred crop of the kernel in use (``None``: all of it)."""

    in_idx: Index = None
    out_idx: Index = None
    tied: bool = False
    active_kernel: int | None = None

    def _active(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        w = take(self.weight, 0, self.out_idx)  # (out, in/groups, *k)
        if not self.tied:
            w = take(w, 1, self.in_idx)
            groups = self.groups
        else:
            groups = self.groups * count(self.out_idx, self.out_channels) // self.out_channels
        k = self.active_kernel
        if k is not None:  # (out_a, in_a/groups, *k) -> (out_a, in_a/groups, k, ..., k)
            for dim, full in enumerate(self.kernel_size, start=2):
                w = w.narrow(dim, (full - k) // 2, k)
        return w, take(self.bias, 0, self.out_idx), groups

    def _padding(self) -> str | tuple[int, ...]:
        """The active padding: shrunk with the kernel, 'same'-like."""
        if self.active_kernel is None:
            return self.padding
        return tuple((self.active_kernel - 1) // 2 * d for d in self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_a, *S) -> (B, out_a, *S')
        if self.in_idx is None and self.out_idx is None and self.active_kernel is None:
            return self._conv_forward(x, self.weight, self.bias)
        w, b, groups = self._active()
        conv = (F.conv1d, F.conv2d, F.conv3d)[len(self.kernel_size) - 1]
        padding = self._padding()
        if self.padding_mode != "zeros":
            if self.active_kernel is None:
                pad = self._reversed_padding_repeated_twice
            else:
                pad = [p for p in reversed(padding) for _ in range(2)]
            x = F.pad(x, pad, mode=self.padding_mode)
            padding = 0
        return conv(x, w, b, self.stride, padding, self.dilation, groups)

    def active_params(self) -> int:
        w, b, _ = self._shapes()
        return math.prod(w) + (b or 0)

    def _shapes(self) -> tuple[tuple[int, ...], int | None, int]:
        out_a = count(self.out_idx, self.out_channels)
        if self.tied:
            in_pg, groups = self.weight.shape[1], self.groups * out_a // self.out_channels
        else:
            in_pg, groups = count(self.in_idx, self.in_channels) // self.groups, self.groups
        b = out_a if self.bias is not None else None
        kernel = (
            self.kernel_size
            if self.active_kernel is None
            else (self.active_kernel,) * len(self.kernel_size)
        )
        return (out_a, in_pg, *kernel), b, groups

    def active_flops(self, out_spatial: tuple[int, ...]) -> int:
        """Per sample, 2 per multiply-add."""
        w, _, _ = self._shapes()
        return 2 * math.prod(w) * math.prod(out_spatial)

    def to_plain(self) -> nn.Module:
        w, b, groups = self._active()
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(self.kernel_size) - 1]
        conv = cls(
            w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), self.stride, self._padding(),
            self.dilation, groups, b is not None, self.padding_mode,
            device=w.device, dtype=w.dtype,
        )  # fmt: skip
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)
        return conv


class ElasticConv1d(_ElasticConv, nn.Conv1d):
    pass


class ElasticConv2d(_ElasticConv, nn.Conv2d):
    pass


class ElasticConv3d(_ElasticConv, nn.Conv3d):
    pass


class ElasticLinear(nn.Linear):
    in_idx: Index = None
    out_idx: Index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_a) -> (B, out_a)
        w = take(take(self.weight, 0, self.out_idx), 1, self.in_idx)
        return F.linear(x, w, take(self.bias, 0, self.out_idx))

    def active_params(self) -> int:
        out_a, in_a = count(self.out_idx, self.out_features), count(self.in_idx, self.in_features)
        return out_a * in_a + (out_a if self.bias is not None else 0)

    def active_flops(self, out_spatial: tuple[int, ...] = ()) -> int:
        out_a, in_a = count(self.out_idx, self.out_features), count(self.in_idx, self.in_features)
        return 2 * out_a * in_a * math.prod(out_spatial)

    def to_plain(self) -> nn.Linear:
        w = take(take(self.weight, 0, self.out_idx), 1, self.in_idx)
        b = take(self.bias, 0, self.out_idx)
        lin = nn.Linear(w.shape[1], w.shape[0], b is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
        return lin


class _ElasticBatchNorm:
    """Mixin for ``nn.BatchNorm{1,2,3}d``: parameters and running statistics sliced to
    the active channels (``in_idx``); running statistics are updated in place."""

    in_idx: Index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_a, *S) -> same
        idx = self.in_idx
        if idx is None and not (self.training and syncbn.active()):
            return super().forward(x)
        self._check_input_dim(x)
        factor = syncbn.step_factor(self)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        mean = take(self.running_mean, 0, idx) if keep_stats else None
        var = take(self.running_var, 0, idx) if keep_stats else None
        out = syncbn.batch_norm(  # global batch statistics under DDP (see syncbn)
            x, mean, var, take(self.weight, 0, idx), take(self.bias, 0, idx),
            use_batch, factor, self.eps,
        )  # fmt: skip
        if isinstance(idx, torch.Tensor) and mean is not None and self.training:
            with torch.no_grad():  # index_select copied the statistics: write them back
                self.running_mean[idx.to(mean.device)] = mean
                self.running_var[idx.to(var.device)] = var
        return out

    def active_params(self) -> int:
        n = count(self.in_idx, self.num_features)
        return 2 * n if self.affine else 0

    def active_flops(self, out_spatial: tuple[int, ...] = ()) -> int:
        return 0

    def to_plain(self) -> nn.Module:
        idx = self.in_idx
        n = count(idx, self.num_features)
        cls = next(c for c in type(self).__mro__ if c.__module__.startswith("torch.nn"))
        bn = cls(n, self.eps, self.momentum, self.affine, self.track_running_stats)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                src = getattr(self, name)
                if src is not None:
                    getattr(bn, name).copy_(take(src, 0, idx))
            if self.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(self.num_batches_tracked)
        device = next(iter([*self.parameters(), *self.buffers()])).device
        return bn.to(device)


class ElasticBatchNorm1d(_ElasticBatchNorm, nn.BatchNorm1d):
    pass


class ElasticBatchNorm2d(_ElasticBatchNorm, nn.BatchNorm2d):
    pass


class ElasticBatchNorm3d(_ElasticBatchNorm, nn.BatchNorm3d):
    pass


ELASTIC_TYPES: dict[type, type] = {
    nn.Conv1d: ElasticConv1d,
    nn.Conv2d: ElasticConv2d,
    nn.Conv3d: ElasticConv3d,
    nn.Linear: ElasticLinear,
    nn.BatchNorm1d: ElasticBatchNorm1d,
    nn.BatchNorm2d: ElasticBatchNorm2d,
    nn.BatchNorm3d: ElasticBatchNorm3d,
}
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def make_elastic(module: nn.Module, tied: bool = False) -> nn.Module:
    """Switch a plain layer (exact type in :data:`ELASTIC_TYPES`) to its elastic class,
    in place: same object, parameters and state-dict names; all channels active."""
    module.__class__ = ELASTIC_TYPES[type(module)]
    if isinstance(module, _ElasticConv):
        module.tied = tied
    return module


def permute_(t: torch.Tensor | None, dim: int, start: int, perm: torch.Tensor) -> None:
    """Reorder ``t``'s entries ``start : start + len(perm)`` along ``dim`` by ``perm``."""
    if t is None:
        return
    with torch.no_grad():
        seg = t.data.narrow(dim, start, perm.numel())
        seg.copy_(seg.index_select(dim, perm.to(t.device)))
