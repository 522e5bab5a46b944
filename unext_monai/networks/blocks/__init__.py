from unext_monai.networks.blocks.shifted_mlp import (
    AxialShift,
    ChannelLayerNorm,
    PointwiseConv2d,
    PointwiseConv3d,
    ShiftedMLP,
    ShiftedMLPBlock,
    axial_shift_kernel,
    pointwise_conv,
)
from unext_monai.networks.blocks.unext_blocks import ConvDown, ConvUp, TokenizedDown, TokenizedUp

__all__ = [
    "AxialShift",
    "axial_shift_kernel",
    "ChannelLayerNorm",
    "PointwiseConv2d",
    "PointwiseConv3d",
    "pointwise_conv",
    "ShiftedMLP",
    "ShiftedMLPBlock",
    "ConvDown",
    "ConvUp",
    "TokenizedDown",
    "TokenizedUp",
]
