from unext_monai.networks.convert import convert_unext_pytorch_state_dict, from_unext_pytorch
from unext_monai.networks.nets.unext import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt

__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "from_unext_pytorch", "convert_unext_pytorch_state_dict"]
