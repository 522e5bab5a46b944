# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
from ...networks.blocks.shifted_mlp import ChannelLayerNorm, ShiftedMLP, ShiftedMLPBlock, axial_shift
from ...networks.blocks.unext_blocks import ConvDown, ConvUp, TokenizedDown, TokenizedUp

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
