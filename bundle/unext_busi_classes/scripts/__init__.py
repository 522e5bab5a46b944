# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""UNeXt, the MLP-based rapid medical image segmentation network, as a MONAI network and bundle."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._upstream_noise import quiet_upstream_noise

quiet_upstream_noise()

__version__ = "0.1.0"
__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "from_unext_pytorch", "__version__"]

if TYPE_CHECKING:
    from .networks import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt


def __getattr__(name: str) -> Any:
    # the network (torch, MONAI) is imported on first use: command lines such as `python -m unext_monai.deploy_app`
    # check their arguments before torch, MONAI (and, beside the Deploy SDK, holoscan) are imported
    if name in ("UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES"):
        return getattr(importlib.import_module(".networks", __name__), name)  # relative: also in a bundle's copy
    if name == "from_unext_pytorch":
        return importlib.import_module(".networks.convert", __name__).from_unext_pytorch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
