"""The shifted MLP of UNeXt: axial zero-filled shifts of channel groups around token-wise linear layers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath
from monai.networks.layers.factories import Conv

__all__ = ["axial_shift_kernel", "AxialShift", "ChannelLayerNorm", "PointwiseConv2d", "PointwiseConv3d",
           "pointwise_conv", "ShiftedMLP", "ShiftedMLPBlock"]


def axial_shift_kernel(channels: int, shift_size: int, axes: list[int], spatial_dims: int) -> torch.Tensor:
    """The one-hot depthwise convolution kernel (channels, 1, *k), ``k[a] = shift_size`` for ``a`` in ``axes`` (0: the
    first spatial axis) and 1 otherwise, that shifts channel groups along ``axes``, filling with zeros: exact forward
    and backward. The channels are split into groups of ``ceil(channels / shift_size)`` as ``torch.chunk`` splits them
    (the reference's pad -> chunk -> roll -> crop); group ``g`` moves by ``s = g - shift_size // 2`` along every axis
    in ``axes``: ``out[..., i, ...] = x[..., i - s, ...]``, zero outside."""
    pad = shift_size // 2
    group = (channels + shift_size - 1) // shift_size
    size = [shift_size if a in axes else 1 for a in range(spatial_dims)]
    kernel = torch.zeros([channels, 1] + size)
    for c in range(channels):
        tap = pad - (c // group - pad)  # out[i] = x[i - s] = x[i + tap - pad]
        kernel[(c, 0) + tuple(tap if a in axes else 0 for a in range(spatial_dims))] = 1.0
    return kernel


class AxialShift(nn.Module):
    """Zero-filled shift of channel groups along spatial axes, (B, channels, *S) -> (B, channels, *S): a depthwise
    convolution with :func:`axial_shift_kernel` (one call that keeps the memory format; pad/split/cat would copy), a
    non-persistent buffer rebuilt after every move (``to``, ``to_empty``: the meta device works). ``shift_size`` 1
    (the ablation's "shift off") returns the input as it is."""

    def __init__(self, spatial_dims: int, channels: int, shift_size: int, axes: list[int]) -> None:
        super().__init__()
        self.spatial_dims, self.channels, self.shift_size, self.axes = spatial_dims, channels, shift_size, list(axes)
        self.padding = [shift_size // 2 if a in self.axes else 0 for a in range(spatial_dims)]
        self.register_buffer("kernel", axial_shift_kernel(channels, shift_size, axes, spatial_dims), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        with torch.no_grad():  # (a no-op on the meta device)
            self.kernel.copy_(axial_shift_kernel(self.channels, self.shift_size, self.axes, self.spatial_dims))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift_size == 1:  # nothing moves; a 1x1 depthwise convolution is a slow copy on CPUs
            return x
        if self.spatial_dims == 2:
            return F.conv2d(x, self.kernel, None, 1, self.padding, 1, self.channels)
        return F.conv3d(x, self.kernel, None, 1, self.padding, 1, self.channels)


def _linear_over_channels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution as ``F.linear`` on the channels-last view: (B, C_in, *S) -> (B, C_out, *S) channels-last."""
    n = x.dim()  # explicit permutations: ONNX rejects the negative axes of movedim
    y = F.linear(x.permute([0] + list(range(2, n)) + [1]), weight.flatten(1), bias)
    return y.permute([0, n - 1] + list(range(1, n - 1)))


def _matmul_over_map(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution as a matrix product over the flattened map: (B, C_in, *S) -> (B, C_out, *S) contiguous."""
    w = weight.flatten(1)
    y = torch.matmul(w, x.flatten(2))
    if bias is not None:
        y = y + bias.unsqueeze(-1)
    return y.view([x.shape[0], w.shape[0]] + list(x.shape[2:]))


class _Pointwise:
    """The constructor and forward of :class:`PointwiseConv2d` and :class:`PointwiseConv3d`."""

    def __init__(self, in_channels: int, out_channels: int, channels_first: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # (TorchScript compiles no more of this branch)
            if torch.onnx.is_in_onnx_export():
                return super().forward(x)  # a convolution in ONNX: engines fuse it and pick its layout
        if self.channels_first:
            return _matmul_over_map(x, self.weight, self.bias)
        return _linear_over_channels(x, self.weight, self.bias)


class PointwiseConv2d(_Pointwise, nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, kernel_size=1)`` (the same parameters, initialisation and state dict)
    computed as a matrix product, faster than PyTorch's 1x1 convolution kernels forward and backward. With
    ``channels_first`` False (inside the network) a linear layer on the channels-last view (free on channels-last maps,
    channels-last out); True (the outputs) a matrix product over the flattened map: contiguous channel-first logits.
    Exported to ONNX, the stock convolution."""


class PointwiseConv3d(_Pointwise, nn.Conv3d):
    """:class:`PointwiseConv2d` for volumes: ``nn.Conv3d(in_channels, out_channels, kernel_size=1)``."""


def pointwise_conv(spatial_dims: int, in_channels: int, out_channels: int, channels_first: bool = False) -> nn.Module:
    """:class:`PointwiseConv2d` or :class:`PointwiseConv3d`."""
    return (PointwiseConv2d if spatial_dims == 2 else PointwiseConv3d)(in_channels, out_channels, channels_first)


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channel axis of a channel-first map (B, C, *spatial), with the parameters of
    ``nn.LayerNorm(C)`` (the reference's token LayerNorms load unchanged); channels-last, the permutes are views."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.dim()
        x = x.permute([0] + list(range(2, n)) + [1])
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute([0, n - 1] + list(range(1, n - 1)))


class ShiftedMLP(nn.Module):
    """UNeXt's shifted MLP on a channel-first map: shift -> fc1 -> depthwise 3x3 conv -> GELU -> dropout -> shift ->
    fc2 -> dropout, the reference's token-wise ``fc1``/``fc2`` as 1x1 convolutions (:class:`PointwiseConv2d`: no
    reshapes to tokens), shifted before ``fc1`` along every spatial axis but the last (height in 2D, as the
    reference's code does), before ``fc2`` along the last (width).

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels C.
        hidden_channels: width of the hidden layer (``mlp_ratio * C``).
        shift_size: number of channel groups shifted by ``-(shift_size // 2) .. shift_size // 2`` positions.
        dropout: dropout probability after the activation and after ``fc2``.
    """

    def __init__(self, spatial_dims: int, channels: int, hidden_channels: int, shift_size: int = 5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = pointwise_conv(spatial_dims, channels, hidden_channels)
        self.dwconv = Conv[Conv.CONV, spatial_dims](hidden_channels, hidden_channels, 3, 1, 1, groups=hidden_channels)
        self.act = nn.GELU()
        self.fc2 = pointwise_conv(spatial_dims, hidden_channels, channels)
        self.drop = nn.Dropout(dropout)
        self.shift_in = AxialShift(spatial_dims, channels, shift_size, list(range(spatial_dims - 1)))
        self.shift_out = AxialShift(spatial_dims, hidden_channels, shift_size, [spatial_dims - 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> (B, C, *spatial)."""
        x = self.drop(self.act(self.dwconv(self.fc1(self.shift_in(x)))))
        return self.drop(self.fc2(self.shift_out(x)))


class ShiftedMLPBlock(nn.Module):
    """Pre-norm residual block: ``x + DropPath(ShiftedMLP(LayerNorm(x)))`` on a channel-first map.

    Args:
        spatial_dims: 2 or 3.
        channels: channels C of the input and output map.
        mlp_ratio: hidden width of the MLP as a multiple of C (the paper uses 1).
        shift_size: number of shifted channel groups (the paper uses 5).
        dropout: dropout probability inside the MLP.
        drop_path: stochastic-depth probability of dropping the residual branch in training.
    """

    def __init__(self, spatial_dims: int, channels: int, mlp_ratio: float = 1.0, shift_size: int = 5,
                 dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.mlp = ShiftedMLP(spatial_dims, channels, int(channels * mlp_ratio), shift_size, dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> (B, C, *spatial)."""
        return x + self.drop_path(self.mlp(self.norm(x)))
