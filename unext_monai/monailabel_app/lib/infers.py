"""Inference task: MONAI Label's ``BundleInferTask`` for a 2D, one-logit UNeXt bundle.

The bundle's own ``postprocessing`` (sigmoid, ``Invertd`` back to the input's size, threshold) runs as is, minus its
file-writing transform (``SavePredictiond``; MONAI Label writes the label itself). Two things of the stock task
are changed for 2D pictures:

- MONAI Label's ``Restored`` is not appended: the bundle's ``Invertd`` already returns the label at the input's
  size, and ``Restored`` would resize it again to the reader's ``spatial_shape``, which MONAI's ``PILReader`` states
  as (width, height) even with ``reverse_indexing=False`` (a transposed, stretched label for non-square pictures);
- the stock task hands MONAI Label's writer a (1, H, W) label, which it writes as a 1-pixel-high image or fails on:
  here the channel is squeezed after the bundle's post-processing and the (H, W) label, in the row/column order of
  the input picture, is written as a PNG of label indices (0 background, 1 lesion, as ``metadata.json``'s
  ``channel_def`` numbers them).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
from monai.transforms import SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from PIL import Image

from unext_monai.transforms import SavePredictiond

logger = logging.getLogger(__name__)


class UNeXtInferTask(BundleInferTask):
    """Segmentation with the released bundle at ``path``; labels come from the bundle's ``metadata.json``.

    Args:
        path: the release folder (``configs/``, ``models/model.pt``).
        conf: the app's ``--conf`` settings (``preload``).
    """

    def __init__(self, path: str, conf: Dict[str, str], **kwargs: Any) -> None:
        super().__init__(
            path,
            conf,
            type=InferType.SEGMENTATION,
            post_filter=[SaveImaged, SavePredictiond],
            add_post_restore=False,
            load_strict=True,
            **kwargs,
        )
        if self.valid and self.dimension != 2:
            raise ValueError(f"{path}: a 2D bundle is expected, metadata says {self.dimension}D")

    def post_transforms(self, data=None) -> Sequence[Callable]:
        # the bundle's post-processing (already at the input's size), then (1, H, W) -> (H, W)
        return [*super().post_transforms(data), SqueezeDimd(keys=self.key_pred, dim=0)]

    def writer(self, data: Dict[str, Any], extension=None, dtype=None) -> Tuple[Any, Any]:
        label = data[self.output_label_key]
        label = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
        if label.ndim != 2:
            return super().writer(data, extension, dtype)
        ext = extension or data.get("result_extension") or ".png"
        if ext.lower() != ".png":
            logger.info(f"2D labels are written as PNG (asked: {ext})")
        if not data.get("result_write_to_file", True):
            return label.astype(np.uint8), data.get(self.output_json_key, {})
        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
            path = f.name
        Image.fromarray(np.rint(label).astype(np.uint8)).save(path, format="PNG")
        logger.info(f"label {label.shape} written to {path}")
        return path, data.get(self.output_json_key, {})
