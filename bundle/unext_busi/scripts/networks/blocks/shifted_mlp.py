# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""The shifted MLP of UNeXt: axial zero-filled shifts of channel groups around token-wise linear layers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath
from monai.networks.layers.factories import Conv

__all__ = ["axial_shift", "axial_shift_kernel", "ChannelLayerNorm", "ShiftedMLP", "ShiftedMLPBlock"]


def axial_shift(x: torch.Tensor, axis: int, shift_size: int) -> torch.Tensor:
    """Shift channel groups of ``x`` along one spatial axis, filling with zeros (the reference's pad-roll-crop).

    The channels are split into ``shift_size`` groups of ``ceil(C / shift_size)`` channels (the last may be smaller,
    and there may be fewer groups, exactly as ``torch.chunk`` splits them); group ``g`` moves by
    ``g - shift_size // 2`` positions, so ``out[..., i, ...] = x[..., i - s, ...]`` with zeros where ``i - s`` falls
    outside the map.

    Args:
        x: a channel-first map, shape (B, C, *spatial).
        axis: the spatial axis to shift along, 0 for the first spatial dimension (height in 2D, depth in 3D).
        shift_size: the number of channel groups; an odd number gives shifts symmetric around zero.

    Returns:
        a tensor of the same shape as ``x``.
    """
    pad = shift_size // 2
    channels = x.shape[1]
    group = (channels + shift_size - 1) // shift_size
    dim = 2 + axis
    length = x.shape[dim]
    # zero-pad the axis once on both sides (F.pad lists pairs from the last dimension backwards), then read each
    # group's window: padded[i + pad - s] == x[i - s]
    padded = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [pad, pad])
    shifted = []
    sizes = [group] * (channels // group)
    if channels % group:
        sizes.append(channels % group)
    for g, part in enumerate(torch.split(padded, sizes, dim=1)):
        shifted.append(part.narrow(dim, pad - (g - pad), length))
    return torch.cat(shifted, dim=1)


def axial_shift_kernel(channels: int, shift_size: int, axes: list[int], spatial_dims: int) -> torch.Tensor:
    """The depthwise convolution kernel that computes :func:`axial_shift` along each of ``axes`` in turn.

    Shifting by zero-filled translations is a depthwise convolution whose kernel is one-hot: channel ``c`` of group
    ``g`` has a single weight 1 at offset ``-(g - shift_size // 2)`` from the centre along every axis in ``axes`` (the
    composition of zero-filled shifts along several axes is one zero-filled translation). With zero padding of
    ``shift_size // 2`` along those axes, ``F.conv2d(x, kernel, padding=..., groups=channels)`` equals the shifts
    exactly (every other product is with a zero weight), and so does its gradient; unlike pad/split/cat it keeps
    the memory format, which keeps the backward pass of the neighbouring element-wise ops fast.

    Args:
        channels: C, the number of channels of the map to shift.
        shift_size: number of channel groups (see :func:`axial_shift`).
        axes: spatial axes to shift along (0 for the first spatial dimension).
        spatial_dims: 2 or 3.

    Returns:
        a float32 tensor of shape (C, 1, *k) with ``k[a] = shift_size`` for ``a`` in ``axes`` and 1 otherwise.
    """
    pad = shift_size // 2
    group = (channels + shift_size - 1) // shift_size
    size = [shift_size if a in axes else 1 for a in range(spatial_dims)]
    kernel = torch.zeros([channels, 1] + size)
    for c in range(channels):
        # out[i] = x[i - s] = x[i + tap - pad] at tap = pad - s
        tap = pad - (c // group - pad)
        kernel[(c, 0) + tuple(tap if a in axes else 0 for a in range(spatial_dims))] = 1.0
    return kernel


def _conv_nd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
             groups: int) -> torch.Tensor:
    if x.dim() == 4:
        return F.conv2d(x, weight, bias, 1, padding, 1, groups)
    return F.conv3d(x, weight, bias, 1, padding, 1, groups)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution (weight (C_out, C_in, 1, ...)) as ``F.linear`` on the channel-last view of ``x``.

    (B, C_in, *S) -> (B, C_out, *S). On channels-last maps (as UNeXt's are) the views are free and the GEMM is
    faster than the convolution kernels, forward and backward.
    """
    n = x.dim()
    y = F.linear(x.permute([0] + list(range(2, n)) + [1]), weight.flatten(1), bias)
    return y.permute([0, n - 1] + list(range(1, n - 1)))


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channel axis of a channel-first map (B, C, *spatial).

    Its parameters are those of ``nn.LayerNorm(C)``, so the token LayerNorms of the reference load unchanged.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.dim()  # explicit permutations: ONNX rejects the negative axes of movedim
        x = x.permute([0] + list(range(2, n)) + [1])
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute([0, n - 1] + list(range(1, n - 1)))


class ShiftedMLP(nn.Module):
    """UNeXt's shifted MLP on a channel-first map.

    shift -> fc1 -> depthwise 3x3 conv -> GELU -> dropout -> shift -> fc2 -> dropout, where the token-wise linear
    layers ``fc1``/``fc2`` are 1x1 convolutions (the same function as ``nn.Linear`` over tokens, without the
    reshapes). Before ``fc1`` the map is shifted along every spatial axis but the last (height in 2D, as the
    reference's code does; depth then height in 3D), before ``fc2`` along the last (width).

    The shifts run as one-hot depthwise convolutions (:func:`axial_shift_kernel`, kept in non-persistent buffers,
    so the state dict is unchanged) and ``fc1``/``fc2`` as ``F.linear`` on the channel-last view: the same function,
    faster forward and backward on channels-last maps.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels C.
        hidden_channels: width of the hidden layer (``mlp_ratio * C``).
        shift_size: number of channel groups shifted by ``-(shift_size // 2) .. shift_size // 2`` positions.
        dropout: dropout probability after the activation and after ``fc2``.
    """

    def __init__(
        self, spatial_dims: int, channels: int, hidden_channels: int, shift_size: int = 5, dropout: float = 0.0
    ) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.fc1 = conv_type(channels, hidden_channels, kernel_size=1)
        self.dwconv = conv_type(hidden_channels, hidden_channels, kernel_size=3, padding=1, groups=hidden_channels)
        self.act = nn.GELU()
        self.fc2 = conv_type(hidden_channels, channels, kernel_size=1)
        self.drop = nn.Dropout(dropout)
        self.shift_size = shift_size
        self.first_axes = list(range(spatial_dims - 1))
        self.last_axis = spatial_dims - 1
        pad = shift_size // 2
        self.register_buffer(
            "shift_in", axial_shift_kernel(channels, shift_size, self.first_axes, spatial_dims), persistent=False
        )
        self.register_buffer(
            "shift_out", axial_shift_kernel(hidden_channels, shift_size, [self.last_axis], spatial_dims),
            persistent=False,
        )
        self.pad_in = [pad] * (spatial_dims - 1) + [0]
        self.pad_out = [0] * (spatial_dims - 1) + [pad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> (B, C, *spatial)."""
        x = _conv_nd(x, self.shift_in.to(x.dtype), None, self.pad_in, self.shift_in.shape[0])
        x = self.drop(self.act(self.dwconv(_pointwise(x, self.fc1.weight, self.fc1.bias))))
        x = _conv_nd(x, self.shift_out.to(x.dtype), None, self.pad_out, self.shift_out.shape[0])
        return self.drop(_pointwise(x, self.fc2.weight, self.fc2.bias))


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

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        mlp_ratio: float = 1.0,
        shift_size: int = 5,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.mlp = ShiftedMLP(spatial_dims, channels, int(channels * mlp_ratio), shift_size, dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> (B, C, *spatial)."""
        return x + self.drop_path(self.mlp(self.norm(x)))
