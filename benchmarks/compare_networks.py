"""The convolutional-stages ablation of UNeXt: its layout with stages 4-5 convolutional instead of tokenized MLPs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from unext_monai.networks.blocks.unext_blocks import ConvDown, ConvUp, LayerSpec
from unext_monai.networks.nets.unext import UNEXT_FEATURES, UNeXt

__all__ = ["ConvStagesUNeXt"]


class _ConvUpWithSkip(nn.Module):
    """:class:`ConvUp`, then the skip added: the ``(x, skip)`` call of ``TokenizedUp``, so UNeXt's forward runs as is.

    (B, in_channels, *S) and skip (B, out_channels, *2S) -> (B, out_channels, *2S).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: LayerSpec, act: LayerSpec) -> None:
        super().__init__()
        self.conv_up = ConvUp(spatial_dims, in_channels, out_channels, norm, act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_up(x) + skip


class ConvStagesUNeXt(UNeXt):
    """UNeXt whose tokenized-MLP stages are convolutional stages: the ablation that isolates the tokenized MLPs.

    Stages 4 and 5 of the encoder are :class:`ConvDown` (3x3 conv -> norm -> 2x max-pool -> activation) and the two
    decoder stages that follow are :class:`ConvUp` (3x3 conv -> norm -> 2x upsampling -> activation) plus the skip,
    exactly as UNeXt's stages 1-3 and its last decoder stages are built; everything else (widths, additive skips,
    padding to a multiple of 32, deep-supervision heads, channels-last weights in 2D) is :class:`UNeXt`'s. With the
    paper's widths it has 1.1 M parameters where UNeXt has 1.47 M (no shifted-MLP blocks or token LayerNorms).

    (The paper's "Conv Stage" ablation row is a shallower network, UNeXt's three convolutional levels alone; this one
    keeps the depth, so that the tokenized MLP is the only difference.)

    Args:
        spatial_dims, in_channels, out_channels, features, norm, act, deep_supervision: as :class:`UNeXt`'s.

    Example::

        net = ConvStagesUNeXt(spatial_dims=2, in_channels=3, out_channels=1)
        logits = net(torch.rand(2, 3, 256, 256))  # (2, 1, 256, 256)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        features: Sequence[int] = UNEXT_FEATURES,
        norm: LayerSpec = "batch",
        act: LayerSpec = ("relu", {"inplace": True}),
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, features, norm=norm, act=act, deep_supervision=deep_supervision
        )
        fea = self.features
        self.down_4 = ConvDown(spatial_dims, fea[2], fea[3], norm=norm, act=act)
        self.down_5 = ConvDown(spatial_dims, fea[3], fea[4], norm=norm, act=act)
        self.up_4 = _ConvUpWithSkip(spatial_dims, fea[4], fea[3], norm, act)
        self.up_3 = _ConvUpWithSkip(spatial_dims, fea[3], fea[2], norm, act)
        if spatial_dims == 2:  # the new stages' weights in the maps' memory format, as UNeXt stores its own
            self.to(memory_format=torch.channels_last)
