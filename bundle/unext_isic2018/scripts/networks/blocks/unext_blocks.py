# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""The stages of UNeXt: convolutional down/up stages and tokenized-MLP down/up stages."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from ...networks.blocks.shifted_mlp import ChannelLayerNorm, ShiftedMLPBlock

__all__ = ["ConvDown", "ConvUp", "TokenizedDown", "TokenizedUp"]


def _plain_eager() -> bool:
    """False while the module is traced (``torch.jit.trace``, ``torch.onnx.export``) or captured by
    ``torch.compile``, where standard ops are kept for the exporters and compilers; True in eager and TorchScript."""
    if not torch.jit.is_scripting():
        return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())
    return True


def max_pool_pairs(x: torch.Tensor) -> torch.Tensor:
    """2x max-pool with stride 2 of a (B, C, *S) map (odd sides floored, as ``max_pool2d(x, 2)``), computed as
    element-wise maxima of the two halves of each pair along every axis on the channels-last (B, *S, C) view:
    about 2x faster than ``max_pool2d`` on one CPU thread. Returns (B, C, *S//2), channels-last. For inference:
    where two values tie, its gradient is split between them (``max_pool2d`` gives it to the first).
    """
    n = x.dim()
    y = x.permute([0] + list(range(2, n)) + [1])
    for d in range(1, n - 1):
        half = y.shape[d] // 2
        y = y.narrow(d, 0, 2 * half).contiguous()
        shape = list(y.shape)
        pairs = y.view(shape[:d] + [half, 2] + shape[d + 1:]).unbind(d + 1)
        y = torch.maximum(pairs[0], pairs[1])
    return y.permute([0, n - 1] + list(range(1, n - 1)))


def _conv_folded_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))`` for a BatchNorm in eval mode, with the norm folded into the convolution's weight and bias
    (one pass over the output instead of two). Python eager only."""
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.running_var is None:
        return norm(conv(x))
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = -norm.running_mean * scale if conv.bias is None else (conv.bias - norm.running_mean) * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    return conv._conv_forward(x, conv.weight * scale.view([-1] + [1] * (conv.weight.dim() - 1)), bias)


class ConvDown(nn.Module):
    """Convolutional encoder stage: 3x3 conv (bias) -> BatchNorm -> 2x max-pool -> ReLU.

    (B, in_channels, *S) -> (B, out_channels, *S/2). A 2D input is made channels-last first (a no-op when it is
    already): on CPU, oneDNN's convolutions and PyTorch's pooling, upsampling and BatchNorm kernels run several times
    faster in that memory format, forward and backward, and the following stages keep it. In eval mode without
    gradients, the BatchNorm is folded into the convolution on the fly and the pooling is :func:`max_pool_pairs`
    (the same values up to float rounding, faster).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = Norm[Norm.BATCH, spatial_dims](out_channels)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        inference = not self.training and not torch.is_grad_enabled() and _plain_eager()
        y = self._conv_norm(x, inference)
        if inference:
            return F.relu(max_pool_pairs(y), inplace=True)
        return F.relu(self.pool(y), inplace=True)  # the pooled map is a fresh tensor

    def _conv_norm(self, x: torch.Tensor, inference: bool) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if inference:
                return _conv_folded_norm(self.conv, self.norm, x)
        return self.norm(self.conv(x))


class ConvUp(nn.Module):
    """Convolutional decoder stage: 3x3 conv (bias) -> BatchNorm (optional) -> 2x (bi/tri)linear upsampling -> ReLU.

    (B, in_channels, *S) -> (B, out_channels, *2S). The reference's last stage has no BatchNorm (``norm=False``).
    In eval mode without gradients the BatchNorm is folded into the convolution on the fly.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: bool = True) -> None:
        super().__init__()
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = Norm[Norm.BATCH, spatial_dims](out_channels) if norm else nn.Identity()
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_norm(x, not self.training and not torch.is_grad_enabled() and _plain_eager())
        return F.relu(F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=False), inplace=True)

    def _conv_norm(self, x: torch.Tensor, inference: bool) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if inference:
                return _conv_folded_norm(self.conv, self.norm, x)
        return self.norm(self.conv(x))


class TokenizedDown(nn.Module):
    """Tokenized-MLP encoder stage: overlapping patch embedding (3x3 conv, stride 2) -> LayerNorm ->
    shifted-MLP block -> LayerNorm.

    (B, in_channels, *S) -> (B, out_channels, *ceil(S/2)). Keyword arguments go to :class:`ShiftedMLPBlock`.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, **block_args) -> None:
        super().__init__()
        self.patch_embed = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.embed_norm = ChannelLayerNorm(out_channels)
        self.block = ShiftedMLPBlock(spatial_dims, out_channels, **block_args)
        self.norm = ChannelLayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.embed_norm(self.patch_embed(x))))


class TokenizedUp(nn.Module):
    """Tokenized-MLP decoder stage: :class:`ConvUp` -> add the skip -> shifted-MLP block -> LayerNorm.

    (B, in_channels, *S) and skip (B, out_channels, *2S) -> (B, out_channels, *2S).
    Keyword arguments go to :class:`ShiftedMLPBlock`.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, **block_args) -> None:
        super().__init__()
        self.conv_up = ConvUp(spatial_dims, in_channels, out_channels)
        self.block = ShiftedMLPBlock(spatial_dims, out_channels, **block_args)
        self.norm = ChannelLayerNorm(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.conv_up(x) + skip))
