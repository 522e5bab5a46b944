"""Inference tasks: the released bundle's ``inference.json`` as a MONAI Label ``BasicInferTask`` (``BundleInferTask``
imports torchvision, which does not load beside the CPU torch), without its file writer; its ``postprocessing``
returns the picture's size (``Restored`` would transpose non-square pictures). The label is a PNG of label indices."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.inferers import Inferer
from monai.transforms import Activationsd, SqueezeDimd, ToNumpyd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from PIL import Image

from unext_monai.bundle_scripts import bundle_on_path, output_classes


class UNeXtInferTask(BasicInferTask):
    """Segment one 2D picture with the release at ``bundle_dir``; ``dropout``: the probability inside the network's
    shifted MLPs (0: the network as trained); ``engine``: overrides the bundle's; ``kwargs`` go to ``BasicInferTask``.
    """

    def __init__(self, bundle_dir: str, preload: bool = False, dropout: float = 0.0, engine: str | None = None,
                 **kwargs: Any) -> None:
        self.bundle_dir = bundle_dir
        with open(os.path.join(bundle_dir, "configs", "metadata.json")) as f:
            self.metadata = json.load(f)
        self.parser = ConfigParser()
        self.parser.read_config(os.path.join(bundle_dir, "configs", "inference.json"))
        self.parser["bundle_root"] = bundle_dir
        if dropout > 0:
            self.parser["network_def"]["dropout"] = dropout
        if "engine" in self.parser.config and (engine or dropout > 0):  # model.onnx has no dropout
            self.parser["engine"] = "pytorch" if dropout > 0 else engine
        names = [name.lower() for name in output_classes(self.metadata)]  # label values 1.., background 0
        super().__init__(
            path=os.path.join(bundle_dir, "models", "model.pt"),
            network=self._parsed("network_def"),
            type=InferType.SEGMENTATION,
            labels={name: value for value, name in enumerate(names, start=1)},
            dimension=2,
            description=self.metadata.get("description", ""),
            load_strict=True,
            preload=preload,
            **kwargs,
        )

    def _parsed(self, key: str) -> Any:
        with bundle_on_path(self.bundle_dir):  # the configs name the bundle's own scripts/
            return self.parser.get_parsed_content(key)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        # first of each request: a changed setting re-parses every part (Invertd needs this call's preprocessing)
        onnx = os.path.join(self.bundle_dir, "models", "model.onnx")
        if self.parser.get("engine") not in (None, "pytorch") and os.path.isfile(onnx) and \
                os.path.getmtime(self.path[0]) > os.path.getmtime(onnx):  # retrained: model.onnx is stale
            self.parser["engine"] = "pytorch"
        return list(self._parsed("preprocessing").transforms)

    def inferer(self, data=None) -> Inferer:
        return self._parsed("inferer")

    def post_transforms(self, data=None) -> Sequence[Callable]:
        post = [t for t in self._parsed("postprocessing").transforms if "Save" not in type(t).__name__]
        return [*post, SqueezeDimd(keys="pred", dim=0), ToNumpyd(keys="pred", dtype=np.uint8)]

    def writer(self, data: Dict[str, Any], extension=None, dtype=None) -> Tuple[Any, Any]:
        # MONAI Label's Writer writes through ITK, in MONAI's transposed (W, H) order
        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
            Image.fromarray(data["pred"]).save(f, format="PNG")
        return f.name, data.get(self.output_json_key, {})


class UNeXtDropoutInferTask(UNeXtInferTask):
    """Monte Carlo dropout for MONAI Label's ``EpistemicScoring``: ``pred`` is the lesion probability (1, H, W) or
    the class probabilities (K+1, H, W) at the network's input size, not written. Only the ``Dropout`` layers train
    (``BasicInferTask``'s ``train_mode`` would normalise each picture by its own statistics)."""

    def __init__(self, bundle_dir: str, dropout: float = 0.2) -> None:
        super().__init__(bundle_dir, dropout=dropout, skip_writer=True)

    def post_transforms(self, data=None) -> Sequence[Callable]:
        classes = len(self.labels) > 1
        return [Activationsd(keys="pred", sigmoid=not classes, softmax=classes)]

    def _get_network(self, device, data):
        network = super()._get_network(device, data)
        for module in network.modules():
            if isinstance(module, torch.nn.Dropout):
                module.train()
        return network
