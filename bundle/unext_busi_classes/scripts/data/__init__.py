# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Data sets as MONAI datalists: one reader per layout, a pre-flight check, seeded splits (the synthetic demo set:
:mod:`unext_monai.data.demo`; inference inputs: :mod:`unext_monai.data.inputs`).

Every datalist item is ``{"image": abs_path, "label": [abs_mask_path, ...], "name": case_id}``, sorted by name;
``"label"`` is a list (several masks only for BUSI images with several lesions, merged by a union).
"""

from ..data.checks import check_datalist
from ..data.layouts import (
    DATASETS,
    read_busi,
    read_datalist_json,
    read_dataset,
    read_isic2018,
    read_unext_pytorch,
)
from ..data.split import prepare_split, read_all

__all__ = ["DATASETS", "check_datalist", "prepare_split", "read_all", "read_busi", "read_dataset",
           "read_datalist_json", "read_isic2018", "read_unext_pytorch"]


def __getattr__(name: str):
    # the demo set and the inference inputs on first use: a packaged bundle carries only the modules its configs name
    if name in ("demo", "inputs"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
