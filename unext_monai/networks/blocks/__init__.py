from unext_monai.networks.blocks.shifted_mlp import ChannelLayerNorm, ShiftedMLP, ShiftedMLPBlock, axial_shift
from unext_monai.networks.blocks.unext_blocks import ConvDown, ConvUp, TokenizedDown, TokenizedUp

__all__ = [
    "axial_shift",
    "ChannelLayerNorm",
    "ShiftedMLP",
    "ShiftedMLPBlock",
    "ConvDown",
    "ConvUp",
    "TokenizedDown",
    "TokenizedUp",
]
