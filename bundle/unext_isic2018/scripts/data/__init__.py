# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Datasets as MONAI datalists: layout readers, the synthetic demo set, seeded splits and a pre-flight check.

Every datalist item is ``{"image": abs_path, "label": [abs_mask_path, ...], "name": case_id}``, sorted by name;
``"label"`` is always a list (several masks only for BUSI images with several lesions, merged by a union).
"""

from ..data.checks import check_datalist
from ..data.demo import make_demo_dataset
from ..data.layouts import (
    DATASETS,
    read_busi,
    read_datalist_json,
    read_dataset,
    read_isic2018,
    read_unext_pytorch,
)
from ..data.split import prepare_split, read_all

__all__ = [
    "DATASETS",
    "check_datalist",
    "make_demo_dataset",
    "prepare_split",
    "read_all",
    "read_busi",
    "read_dataset",
    "read_datalist_json",
    "read_isic2018",
    "read_unext_pytorch",
]
