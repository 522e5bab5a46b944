# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""UNeXt, the MLP-based rapid medical image segmentation network, as a MONAI network and bundle."""

from .networks import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt, from_unext_pytorch

__version__ = "0.1.0"
__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "from_unext_pytorch", "__version__"]
