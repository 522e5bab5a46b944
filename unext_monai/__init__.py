"""UNeXt, the MLP-based rapid medical image segmentation network, as a MONAI network and bundle."""

from unext_monai._upstream_noise import quiet_upstream_noise
from unext_monai.networks import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt, from_unext_pytorch

quiet_upstream_noise()

__version__ = "0.1.0"
__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "from_unext_pytorch", "__version__"]
