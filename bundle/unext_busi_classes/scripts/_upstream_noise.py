# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Silence warnings of upstream packages that a user of this package cannot act on (applied on import).

Each filter matches one known message of one package, so that any other warning still shows:
- MONAI's optional NVIDIA nvImageCodec DICOM plugin, absent on CPU machines (a WARNING log line and a UserWarning on
  every run that builds a ``LoadImage``);
- PyTorch's "NumPy array is not writable" when MONAI wraps the read-only array PIL gives (nothing is written to it);
- MONAI's own use of its deprecated ``get_mask_edges(always_return_as_numpy=...)`` inside ``HausdorffDistanceMetric``;
- scikit-image's deprecation of ``remove_small_objects(min_size=...)``, which MONAI's ``RemoveSmallObjects`` (the
  ``min_lesion_area`` option) calls;
- MONAI's note that HD95 of an empty prediction or ground truth is undefined, and NumPy's notes ("Mean of empty
  slice", "All-NaN slice", "Degrees of freedom <= 0") when MONAI's MetricsSaver summarizes such undefined values (the
  metric reports them as NaN, the report says how many are defined);
- ignite's "Engine run resuming from iteration 0", which every fresh run logs.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_upstream_noise"]


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_upstream_noise() -> None:
    warnings.filterwarnings("ignore", message=r"NvImgCodecPydicomReader: nvImageCodec decoder", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*get_mask_edges:always_return_as_numpy", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Parameter `min_size` is deprecated")
    # a 2D picture in DICOM (secondary capture, ultrasound) has no patient orientation: nothing to act on
    warnings.filterwarnings("ignore", message=r"PydicomReader: ImageOrientationPatient")
    warnings.filterwarnings("ignore", message=r"the (ground truth|prediction) of class \d+ is all 0")
    for message in (r"Mean of empty slice", r"Degrees of freedom <= 0 for slice", r"All-NaN slice encountered"):
        warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").addFilter(_DropMessage("nvImageCodec is not available"))
    for engine in ("SupervisedTrainer", "SupervisedEvaluator"):
        logging.getLogger(f"ignite.engine.engine.{engine}").addFilter(_DropMessage("resuming from iteration 0,"))
