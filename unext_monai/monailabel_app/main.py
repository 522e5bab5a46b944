"""MONAI Label app serving a released UNeXt bundle (``python -m unext_monai.release``) for 2D lesion segmentation.

Start it (copy the app out of the package first: ``python -m unext_monai.monailabel_app APP_DIR``)::

    python -m monailabel.main start_server --app APP_DIR --studies STUDIES --conf bundle bundle/NAME \\
        --host 127.0.0.1 --port 8000

Settings (``--conf KEY VALUE``):

- ``bundle`` (required, or the ``UNEXT_BUNDLE`` environment variable): the release folder; MONAI Label training
  updates its ``models/model.pt`` in place, so serve a copy you can spare;
- ``model_name``: the model's name in MONAI Label (default: the bundle folder's name);
- ``preload``: load the network at start-up (``true``/``false``, default false);
- ``train``: offer the train task (default true).

``STUDIES`` is a folder of images (PNG, JPEG); final labels go to ``STUDIES/labels/final/<image id>.png``. Label names
and numbers come from the bundle's ``metadata.json`` (``lesion`` = 1).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict

from lib.infers import UNeXtInferTask
from lib.trainers import UNeXtTrainTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


class UNeXtLabelApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        bundle = conf.get("bundle") or os.environ.get("UNEXT_BUNDLE")
        if not bundle:
            raise ValueError("no bundle: start with --conf bundle <release folder, e.g. bundle/NAME>")
        self.bundle_dir = os.path.realpath(os.path.expanduser(bundle))
        for required in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
            if not os.path.isfile(os.path.join(self.bundle_dir, required)):
                raise ValueError(f"{self.bundle_dir}: {required} missing; is it a release folder?")
        with open(os.path.join(self.bundle_dir, "configs", "metadata.json")) as f:
            metadata = json.load(f)
        pred = next(iter(metadata["network_data_format"]["outputs"].values()))
        labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
        self.model_name = conf.get("model_name") or os.path.basename(self.bundle_dir)
        logger.info(f"UNeXt bundle {self.bundle_dir} as model {self.model_name!r}; labels {labels}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"UNeXt - {metadata.get('name', self.model_name)}",
            description=metadata.get("description", ""),
            version=metadata.get("version", "0"),
            labels=labels,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        task = UNeXtInferTask(self.bundle_dir, self.conf)
        if not task.is_valid():
            raise ValueError(f"{self.bundle_dir}: MONAI Label cannot use this bundle for inference (see the log)")
        return {self.model_name: task}

    def init_trainers(self) -> Dict[str, TrainTask]:
        if not strtobool(self.conf.get("train", "true")):
            return {}
        task = UNeXtTrainTask(self.bundle_dir, self.conf)
        return {self.model_name: task} if task.is_valid() else {}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}
