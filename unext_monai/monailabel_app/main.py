"""MONAI Label app serving a released UNeXt bundle for 2D lesion segmentation: ``python -m monailabel.main
start_server --app APP_DIR --studies STUDIES --conf bundle bundle/NAME --host 127.0.0.1`` (the ``--conf`` settings:
``docs/integrations.md``). A request MONAI Label would answer with 500 or run on a wrong input gets a 4xx naming the
problem; ids and tags are confined to ``STUDIES`` (``lib/security.py``)."""

from __future__ import annotations

import os
from typing import Any, Dict

from fastapi import HTTPException
from lib.infers import UNeXtDropoutInferTask, UNeXtInferTask
from lib.security import UPLOAD, StudiesDatastore, check_tag, guard_server
from lib.trainers import UNeXtTrainTask
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring
from monailabel.utils.others.generic import strtobool

from unext_monai.data.checks import check_image_file


class UNeXtLabelApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        bundle = conf.get("bundle") or os.environ.get("UNEXT_BUNDLE")
        if not bundle:
            raise ValueError("no bundle: start with --conf bundle <release folder, e.g. bundle/NAME>")
        self.bundle_dir = os.path.realpath(os.path.expanduser(bundle))
        self.model_name = conf.get("model_name") or os.path.basename(self.bundle_dir)
        self.infer_task = UNeXtInferTask(self.bundle_dir, preload=strtobool(conf.get("preload", "false")),
                                         engine=conf.get("engine"))
        meta = self.infer_task.metadata
        super().__init__(app_dir, studies, conf, name=f"UNeXt - {meta['name']}", description=meta["description"],
                         version=meta["version"], labels=self.infer_task.labels)
        guard_server(int(float(conf.get("max_upload_mb", "64")) * 2**20))

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return StudiesDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def sessions(self):
        return None  # off: a session's upload is kept outside STUDIES, and `uncompress` unpacks archives unchecked

    def init_infers(self):
        return {self.model_name: self.infer_task}

    def init_trainers(self):
        if not strtobool(self.conf.get("train", "true")):
            return {}
        return {self.model_name: UNeXtTrainTask(self.bundle_dir, self.conf, os.path.join(self.app_dir, "model",
                                                                                         self.model_name))}

    def init_strategies(self):
        return {"random": Random(), "first": First(), "epistemic": Epistemic()}

    def init_scoring_methods(self):
        task = UNeXtDropoutInferTask(self.bundle_dir, float(self.conf.get("epistemic_dropout", "0.2")))
        return {"epistemic": EpistemicScoring(task, simulation_size=int(self.conf.get("epistemic_samples", "5")))}

    # MONAI Label answers an unknown name with 500; an HTTPException raised here reaches the client as it is
    def infer(self, request, datastore=None):
        _known("model", request.get("model"), self._infers)
        image = request.get("image")
        if isinstance(image, str):
            datastore = datastore or self.datastore()
            # MONAI Label reads any existing path first, and "" as the server's folder (a DICOM series there)
            path = image if UPLOAD.get() else datastore.get_image_uri(image)
            if not path:
                raise HTTPException(404, f"no image {image!r} in the datastore")
            problem = check_image_file(path)
            if problem:
                raise HTTPException(422, f"{'the uploaded file' if UPLOAD.get() else repr(image)} cannot be "
                                         f"segmented: {problem}")
            if request.get("save_label"):
                check_tag(request.get("label_tag", "original"))  # before inference, whose label file would stay
        return super().infer(request, datastore)

    def train(self, request):
        _known("model", request.get("model"), self._trainers)
        return super().train(request)

    def bundle_path(self, model):
        # called for /train/{model} before the training is queued in the background
        if model and model not in self._trainers and model not in self._infers:
            _known("model", model, self._trainers)
        return super().bundle_path(model)

    def next_sample(self, request):
        _known("strategy", request.get("strategy") or "random", self._strategies)
        return super().next_sample(request)

    def scoring(self, request, datastore=None):
        _known("scoring method", request.get("method"), self._scoring_methods)
        return super().scoring(request, datastore)


def _known(what: str, name: Any, available: Dict[str, Any]) -> None:
    if name not in available:
        raise HTTPException(404, f"no {what} {name!r} on this server; available: {sorted(available)}")
