"""The stages of UNeXt: convolutional down/up stages and tokenized-MLP down/up stages."""

from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import get_act_layer, get_norm_layer
from monai.networks.layers.factories import Conv

from ...networks.blocks.shifted_mlp import ChannelLayerNorm, ShiftedMLPBlock

__all__ = ["ConvDown", "ConvUp", "TokenizedDown", "TokenizedUp"]

#: a MONAI layer name, or a name and its keyword arguments, as ``monai.networks.layers.get_norm_layer`` takes them
LayerSpec = Union[str, tuple]


class _ConvStage(nn.Module):
    """The parts both convolutional stages share: a 3x3 conv (bias), its norm, an activation.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels of the input and output maps.
        norm: normalisation after the convolution, a MONAI name (``"batch"``, ``"instance"``...) or (name, args);
            ``""`` for none.
        act: the activation, a MONAI name or (name, args).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: LayerSpec = "batch",
                 act: LayerSpec = ("relu", {"inplace": True})) -> None:
        super().__init__()
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = get_norm_layer(norm, spatial_dims, out_channels)
        self.act = get_act_layer(act)


class ConvDown(_ConvStage):
    """Convolutional encoder stage: 3x3 conv (bias) -> norm -> 2x max-pool -> activation, (B, in_channels, *S) ->
    (B, out_channels, *S // 2). Arguments as :class:`_ConvStage`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return self.act(F.max_pool2d(x, 2) if x.dim() == 4 else F.max_pool3d(x, 2))


class ConvUp(_ConvStage):
    """Convolutional decoder stage: 3x3 conv (bias) -> norm -> 2x (bi/tri)linear upsampling -> activation,
    (B, in_channels, *S) -> (B, out_channels, *2S). Arguments as :class:`_ConvStage` (the reference's last: no norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        mode = "bilinear" if x.dim() == 4 else "trilinear"
        return self.act(F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False))


class TokenizedDown(nn.Module):
    """Tokenized-MLP encoder stage: overlapping patch embedding (3x3 conv, stride 2) -> LayerNorm -> shifted-MLP block
    -> LayerNorm, (B, in_channels, *S) -> (B, out_channels, *ceil(S/2)). Keyword arguments go to the block."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, **block_args) -> None:
        super().__init__()
        self.patch_embed = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.embed_norm = ChannelLayerNorm(out_channels)
        self.block = ShiftedMLPBlock(spatial_dims, out_channels, **block_args)
        self.norm = ChannelLayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.embed_norm(self.patch_embed(x))))


class TokenizedUp(nn.Module):
    """Tokenized-MLP decoder stage: :class:`ConvUp` -> add the skip -> shifted-MLP block -> LayerNorm, (B,
    in_channels, *S) and skip (B, out_channels, *2S) -> (B, out_channels, *2S); ``norm`` and ``act`` go to the
    :class:`ConvUp`, the other keyword arguments to :class:`ShiftedMLPBlock`."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: LayerSpec = "batch",
                 act: LayerSpec = ("relu", {"inplace": True}), **block_args) -> None:
        super().__init__()
        self.conv_up = ConvUp(spatial_dims, in_channels, out_channels, norm, act)
        self.block = ShiftedMLPBlock(spatial_dims, out_channels, **block_args)
        self.norm = ChannelLayerNorm(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.conv_up(x) + skip))
