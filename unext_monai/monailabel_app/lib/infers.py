"""Inference tasks: the released bundle's ``inference.json`` as a MONAI Label ``BasicInferTask``.

MONAI Label's ``BundleInferTask`` is not used: its module imports ``monailabel.transform.post``, which imports
torchvision at start-up, and PyPI's torchvision does not load beside the CPU build of torch (see
``.ci/label_env.sh``). The task reads the same things from the bundle that ``BundleInferTask`` reads (``network_def``,
``preprocessing``, ``inferer``, ``postprocessing``, the labels of ``metadata.json``) and changes what 2D pictures
need:

- the bundle's ``postprocessing`` (sigmoid, ``Invertd`` back to the input's size, threshold) runs without its file
  writer (``SavePredictiond``); MONAI Label's ``Restored`` is not added (``Invertd`` already returns the input's
  size, and ``Restored`` would resize to ``PILReader``'s ``spatial_shape``, stated as (width, height): a transposed
  label for non-square pictures);
- the (1, H, W) label is squeezed to (H, W) and written as a PNG of label indices (0 background, 1 lesion, as
  ``metadata.json``'s ``channel_def`` numbers them), in the picture's row/column order;
- only ``models/model.pt`` is served: other ``.pt`` files in ``models/`` (a training run's ``checkpoint_epoch=N.pt``)
  are never offered as models.

:class:`UNeXtDropoutInferTask` is the same network with dropout active at inference (Monte Carlo dropout), for
MONAI Label's epistemic scoring.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.inferers import Inferer
from monai.transforms import Activationsd, Compose, SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from PIL import Image

from unext_monai.bundle_scripts import bundle_on_path
from unext_monai.transforms import SavePredictiond

__all__ = ["UNeXtInferTask", "UNeXtDropoutInferTask", "read_bundle", "bundle_labels"]

logger = logging.getLogger(__name__)

#: post-processing transforms that write files; MONAI Label writes the label itself
FILE_WRITERS = (SaveImaged, SavePredictiond)


def read_bundle(bundle_dir: str, dropout: float = 0.0, engine: str | None = None
                ) -> Tuple[ConfigParser, Dict[str, Any]]:
    """The bundle's ``inference.json`` (``bundle_root`` set to ``bundle_dir``) and its ``metadata.json``.

    ``dropout`` > 0 is passed to ``network_def`` (UNeXt's ``dropout``, inside its shifted MLPs), and runs the
    network itself (``model.onnx`` has no dropout); ``engine`` replaces the bundle's ``engine`` setting, where it has
    one.
    """
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "inference.json"))
    parser["bundle_root"] = bundle_dir
    if "engine" in parser.config and (engine or dropout > 0):
        parser["engine"] = "pytorch" if dropout > 0 else engine
    if dropout > 0:
        parser["network_def"]["dropout"] = dropout
    with open(os.path.join(bundle_dir, "configs", "metadata.json")) as f:
        metadata = json.load(f)
    return parser, metadata


def bundle_labels(metadata: Dict[str, Any]) -> Dict[str, int]:
    """``{label name: mask value}`` of the output's ``channel_def`` in ``metadata.json``, background left out: a
    one-channel (sigmoid) output marks its class with 1, a several-channel (softmax) output with the channel index."""
    pred = next(iter(metadata["network_data_format"]["outputs"].values()))
    channels = pred.get("channel_def", {})
    if int(pred.get("num_channels", len(channels))) == 1:
        return {v.lower(): 1 for v in channels.values() if v.lower() != "background"}
    return {v.lower(): int(k) for k, v in channels.items() if v.lower() != "background"}


class UNeXtInferTask(BasicInferTask):
    """Segment one 2D picture with the released bundle at ``bundle_dir`` (``configs/``, ``models/model.pt``).

    Args:
        bundle_dir: the release folder.
        preload: load the network at start-up.
        dropout: dropout probability inside the network's shifted MLPs (0: the network as trained).
        engine: the bundle's ``engine`` setting to use instead of its own (``fp32``, ``bf16``, ``pytorch``). Once a
            training run has replaced ``models/model.pt``, its ``model.onnx`` is stale and the network runs.
        kwargs: passed to ``BasicInferTask`` (e.g. ``skip_writer``).
    """

    def __init__(self, bundle_dir: str, preload: bool = False, dropout: float = 0.0, engine: str | None = None,
                 **kwargs: Any) -> None:
        self.bundle_dir = bundle_dir
        self.parser, metadata = read_bundle(bundle_dir, dropout, engine)
        spatial_shape = next(iter(metadata["network_data_format"]["inputs"].values())).get("spatial_shape", [])
        if len(spatial_shape) != 2:
            raise ValueError(f"{bundle_dir}: a 2D bundle is expected, metadata.json says {spatial_shape}")
        self.version = metadata.get("version")
        with bundle_on_path(bundle_dir):
            network = self.parser.get_parsed_content("network_def")
        super().__init__(
            path=os.path.join(bundle_dir, "models", "model.pt"),
            network=network,
            type=InferType.SEGMENTATION,
            labels=bundle_labels(metadata),
            dimension=2,
            description=metadata.get("description", ""),
            input_key="image",
            output_label_key="pred",
            load_strict=True,
            preload=preload,
            **kwargs,
        )

    def info(self) -> Dict[str, Any]:
        return {**super().info(), "version": self.version}

    def _bundle_transforms(self, key: str) -> list:
        with bundle_on_path(self.bundle_dir):
            c = self.parser.get_parsed_content(key)
        return list(c.transforms) if isinstance(c, Compose) else list(c)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return self._bundle_transforms("preprocessing")

    def inferer(self, data=None) -> Inferer:
        with bundle_on_path(self.bundle_dir):
            weights = self.get_path(validate=False)
            stamp = os.path.getmtime(weights) if weights and os.path.exists(weights) else None
            if getattr(self, "_weights_stamp", stamp) != stamp and self.parser.get("engine") not in (None, "pytorch"):
                self.parser["engine"] = "pytorch"  # model.pt retrained since model.onnx was exported
                logger.info(f"{weights} replaced by training: inference runs the network, not model.onnx")
                return self.parser.get_parsed_content("inferer", lazy=False)
            self._weights_stamp = stamp
            return self.parser.get_parsed_content("inferer")

    def post_transforms(self, data=None) -> Sequence[Callable]:
        # the bundle's post-processing without its file writer (already at the input's size), then (1, H, W) -> (H, W)
        post = [t for t in self._bundle_transforms("postprocessing") if not isinstance(t, FILE_WRITERS)]
        return [*post, SqueezeDimd(keys=self.output_label_key, dim=0)]

    def writer(self, data: Dict[str, Any], extension=None, dtype=None) -> Tuple[Any, Any]:
        label = data[self.output_label_key]
        label = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
        if label.ndim != 2:
            raise ValueError(f"expected an (H, W) label, got shape {label.shape}")
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


class UNeXtDropoutInferTask(UNeXtInferTask):
    """Monte Carlo dropout for MONAI Label's ``EpistemicScoring``: each call samples a new dropout mask.

    The network is in eval mode except its ``torch.nn.Dropout`` layers (``BasicInferTask``'s ``train_mode`` would also
    switch BatchNorm to the statistics of the single picture). The result is not written: the data dictionary
    carries ``pred``, the lesion probability (1, H, W) at the network's input size.

    Args:
        bundle_dir: the release folder.
        dropout: dropout probability inside the shifted MLPs (> 0).
    """

    def __init__(self, bundle_dir: str, dropout: float = 0.2) -> None:
        if not 0 < dropout < 1:
            raise ValueError(f"dropout must be in (0, 1) for Monte Carlo dropout, got {dropout}")
        super().__init__(bundle_dir, dropout=dropout, skip_writer=True)
        self.description = f"{self.description} (Monte Carlo dropout {dropout})"

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return [Activationsd(keys=self.output_label_key, sigmoid=True)]

    def _get_network(self, device, data):
        network = super()._get_network(device, data)
        for module in network.modules():
            if isinstance(module, torch.nn.Dropout):
                module.train()
        return network
