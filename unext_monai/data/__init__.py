"""Data sets as MONAI datalists of ``{"image": path, "label": [mask paths, merged by a union], "name"}``: one reader
per layout, a pre-flight check, seeded splits, the synthetic demo set, and the inputs of an inference run."""

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
