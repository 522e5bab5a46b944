# This package is generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""UNeXt, the MLP-based rapid medical image segmentation network, as a MONAI network and bundle."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .console import quiet_upstream_noise

quiet_upstream_noise()

__version__ = "0.1.0"
__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES", "from_unext_pytorch", "__version__"]
if TYPE_CHECKING:  # also what a release copies into a bundle's scripts/
    from .networks import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt
_LAZY = {"UNeXt": ".networks", "UNEXT_FEATURES": ".networks", "UNEXT_S_FEATURES": ".networks",
         "from_unext_pytorch": ".networks.convert"}


def __getattr__(name: str) -> Any:
    # imported on first use (relative: also in a bundle's copy), so that command lines such as `python -m
    # unext_monai.deploy_app` check their arguments before torch, MONAI and (beside the Deploy SDK) holoscan load
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
