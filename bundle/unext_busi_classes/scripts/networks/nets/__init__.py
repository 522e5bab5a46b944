# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
from ...networks.nets.unext import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt

__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES"]
