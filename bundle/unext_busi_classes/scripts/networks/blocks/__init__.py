from ...networks.blocks.shifted_mlp import (
    AxialShift,
    ChannelLayerNorm,
    PointwiseConv2d,
    PointwiseConv3d,
    ShiftedMLP,
    ShiftedMLPBlock,
    axial_shift_kernel,
    pointwise_conv,
)
from ...networks.blocks.unext_blocks import ConvDown, ConvUp, TokenizedDown, TokenizedUp

__all__ = ["AxialShift", "ChannelLayerNorm", "ConvDown", "ConvUp", "PointwiseConv2d", "PointwiseConv3d", "ShiftedMLP",
           "ShiftedMLPBlock", "TokenizedDown", "TokenizedUp", "axial_shift_kernel", "pointwise_conv"]
