"""What a user sees on the console: errors of input and settings as their message alone (:func:`plain_errors`),
and none of the upstream warnings a user cannot act on (:func:`quiet_upstream_noise`, applied on import).

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
import sys
import warnings
from typing import Any

__all__ = ["plain_errors", "quiet_upstream_noise"]


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
    dropped = {"monai.data.nvimgcodec_pydicom_plugin": "nvImageCodec is not available",
               "ignite.engine.engine.SupervisedTrainer": "resuming from iteration 0,",
               "ignite.engine.engine.SupervisedEvaluator": "resuming from iteration 0,"}
    for name, fragment in dropped.items():
        logging.getLogger(name).addFilter(lambda record, f=fragment: f not in record.getMessage())


def plain_errors() -> None:
    """End a run that fails on its input or settings (a ``ValueError`` or ``OSError`` anywhere in the chain) with that
    message as the last lines it prints, not the tracebacks MONAI's config parser wraps it in ("Failed to evaluate
    ConfigExpression"); any other error keeps its traceback. Python's ``sys.excepthook``, set for this process."""

    def hook(kind: type, error: BaseException, tb: Any) -> None:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, (ValueError, OSError)):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            return sys.__excepthook__(kind, error, tb)
        print(f"{type(cause).__name__}: {cause}", file=sys.stderr)

    sys.excepthook = hook
