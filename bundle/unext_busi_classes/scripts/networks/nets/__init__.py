from ...networks.nets.unext import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt

__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES"]
