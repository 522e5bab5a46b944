from unext_monai.networks.nets.unext import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt
from unext_monai.networks.nets.unext_conv_stages import ConvStagesUNeXt

__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "ConvStagesUNeXt"]
