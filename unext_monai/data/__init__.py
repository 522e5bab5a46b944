"""Data sets as MONAI datalists: one reader per layout, a pre-flight check, seeded splits, the synthetic demo set
(:mod:`~unext_monai.data.demo`) and the inputs of an inference run (:mod:`~unext_monai.data.inputs`).

Every datalist item is ``{"image": abs_path, "label": [abs_mask_path, ...], "name": case_id}``, sorted by name;
``"label"`` is a list (several masks only for BUSI images with several lesions, merged by a union).
"""

from unext_monai.data import demo, inputs
from unext_monai.data.checks import check_datalist
from unext_monai.data.layouts import (
           DATASETS,
           read_busi,
           read_datalist_json,
           read_dataset,
           read_isic2018,
           read_unext_pytorch,
)
from unext_monai.data.split import prepare_split, read_all

__all__ = ["DATASETS", "check_datalist", "demo", "inputs", "prepare_split", "read_all", "read_busi", "read_dataset",
           "read_datalist_json", "read_isic2018", "read_unext_pytorch"]
