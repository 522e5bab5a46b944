# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
from ...networks.nets.unext import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt
from ...networks.nets.unext_conv_stages import ConvStagesUNeXt

__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "ConvStagesUNeXt"]
