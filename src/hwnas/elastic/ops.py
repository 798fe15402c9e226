"""Elastic ops: parameters allocated at the largest size, sliced in ``forward``.

Each op keeps ``max_*`` (allocated) and ``active_*`` (current choice) sizes and reports
its own parameter count and FLOPs for the active configuration. FLOPs count 2 per
multiply-add of convolutions and linear layers, as ``torch.utils.flop_counter`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.elastic import syncbn


class DynamicPointwiseConv2d(nn.Module):
    """1x1 convolution with elastic input and output channels (no bias)."""

    def __init__(self, max_in: int, max_out: int, stride: int = 1):
        super().__init__()
        self.max_in, self.max_out, self.stride = max_in, max_out, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.active_in, self.active_out = max_in, max_out

    def active_weight(self, in_channels: int | None = None) -> torch.Tensor:
        return self.weight[: self.active_out, : in_channels or self.active_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, H', W')
        return F.conv2d(x, self.active_weight(x.shape[1]), stride=self.stride)

    def params(self) -> int:
        return self.active_out * self.active_in

    def flops(self, out_hw: tuple[int, int], batch: int = 1) -> int:
        return 2 * batch * out_hw[0] * out_hw[1] * self.active_in * self.active_out

    def to_static(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.active_in, self.active_out, 1, self.stride, bias=False)
        conv.weight.data.copy_(self.active_weight())
        return conv


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise convolution with elastic channels and elastic kernel size.

    The largest kernel is stored; a smaller one is the centre crop of the next larger
    (transformed) kernel multiplied by a learned ``k²×k²`` matrix initialised to the
    identity, shared by all channels (Once-for-All's kernel transformation).
    """

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int = 1):
        super().__init__()
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.max_kernel = self.kernel_choices[-1]
        self.max_channels, self.stride = max_channels, stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        # One transform per step down, e.g. "7to5" (25x25) and "5to3" (9x9).
        self.transforms = nn.ParameterDict(
            {
                f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                for big, small in zip(self.kernel_choices[:0:-1], self.kernel_choices[-2::-1])
            }
        )
        self.active_channels, self.active_kernel = max_channels, self.max_kernel

    def active_weight(self, channels: int | None = None) -> torch.Tensor:
        w = self.weight[: channels or self.active_channels]  # (C, 1, Kmax, Kmax)
        k = self.max_kernel
        for small in self.kernel_choices[-2::-1]:
            if k == self.active_kernel:
                break
            start = (k - small) // 2
            crop = w[:, :, start : start + small, start : start + small]
            flat = crop.reshape(-1, small * small) @ self.transforms[f"{k}to{small}"].t()
            w, k = flat.reshape(-1, 1, small, small), small
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H', W')
        k = self.active_kernel
        w = self.active_weight(x.shape[1])
        return F.conv2d(x, w, None, self.stride, k // 2, 1, x.shape[1])

    def params(self) -> int:
        return self.active_channels * self.active_kernel**2

    def flops(self, out_hw: tuple[int, int], batch: int = 1) -> int:
        return 2 * batch * out_hw[0] * out_hw[1] * self.active_channels * self.active_kernel**2

    def to_static(self) -> nn.Conv2d:
        c, k = self.active_channels, self.active_kernel
        conv = nn.Conv2d(c, c, k, self.stride, k // 2, groups=c, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight())
        return conv


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its input; stats sliced in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = syncbn.step_factor(self)
        use_batch = self.training or self.running_mean is None
        return syncbn.batch_norm(  # global batch statistics under DDP (see syncbn)
            x,
            self.running_mean[:c] if not self.training or self.track_running_stats else None,
            self.running_var[:c] if not self.training or self.track_running_stats else None,
            self.weight[:c],
            self.bias[:c],
            use_batch,
            factor,
            self.eps,
        )

    def params(self, channels: int) -> int:
        return 2 * channels

    def to_static(self, channels: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(channels, self.eps, self.momentum)
        with torch.no_grad():
            bn.weight.copy_(self.weight[:channels])
            bn.bias.copy_(self.bias[:channels])
            bn.running_mean.copy_(self.running_mean[:channels])
            bn.running_var.copy_(self.running_var[:channels])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn


def permute_bn_(bn: nn.BatchNorm2d, perm: torch.Tensor) -> None:
    """Reorder a BN layer's channels in place."""
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t.copy_(t[perm])
