"""MONAI Label app serving a released UNeXt bundle (``python -m unext_monai.release``) for 2D lesion segmentation.

Start it (copy the app out of the package first: ``python -m unext_monai.monailabel_app APP_DIR``)::

    python -m monailabel.main start_server --app APP_DIR --studies STUDIES --conf bundle bundle/NAME \\
        --host 127.0.0.1 --port 8000

Settings (``--conf KEY VALUE``):

- ``bundle`` (required, or the ``UNEXT_BUNDLE`` environment variable): the release folder; each MONAI Label training
  run replaces its ``models/model.pt`` with the run's best model (the replaced one is kept in the run's folder,
  ``APP_DIR/model/<model name>/runs/<run>/replaced_model.pt``), so serve a copy of the release;
- ``model_name``: the model's name in MONAI Label (default: the bundle folder's name);
- ``preload``: load the network at start-up (``true``/``false``, default false);
- ``engine``: ``fp32`` (``model.onnx`` on ONNX Runtime), ``bf16`` (OpenVINO bfloat16 where the CPU computes it
  natively) or ``pytorch`` (the network); default: the bundle's ``inference.json`` setting (the engines are the
  ``unext-monai[engines]`` extra; without them the network runs);
- ``train``: offer the train task (default true);
- ``epistemic_dropout``: dropout probability of the Monte Carlo dropout used by the ``epistemic`` scoring method
  (default 0.2); ``epistemic_samples``: forward passes per image (default 5).

``STUDIES`` is a folder of images (PNG, JPEG, BMP, TIFF, DICOM); final labels go to
``STUDIES/labels/final/<image id>.png``. Label names and numbers come from the bundle's ``metadata.json``
(``lesion`` = 1).

Requests MONAI Label would run on a wrong input are refused with a 4xx and a ``detail`` naming the problem: an
unknown model, scoring method or strategy (404), an image id not in the datastore (404), a file that is not a
readable 2D image (422), training without enough labelled images (422).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict

from fastapi import HTTPException
from lib.infers import UNeXtDropoutInferTask, UNeXtInferTask, bundle_labels, read_bundle
from lib.trainers import UNeXtTrainTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring
from monailabel.utils.others.generic import strtobool

from unext_monai.transforms import check_image_file

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
        _, metadata = read_bundle(self.bundle_dir)
        self.model_name = conf.get("model_name") or os.path.basename(self.bundle_dir)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"UNeXt - {metadata.get('name', self.model_name)}",
            description=metadata.get("description", ""),
            version=metadata.get("version", "0"),
            labels=bundle_labels(metadata),
        )
        logger.info(f"UNeXt bundle {self.bundle_dir} as model {self.model_name!r}; labels {self.labels}")

    def init_infers(self) -> Dict[str, InferTask]:
        return {self.model_name: UNeXtInferTask(self.bundle_dir, preload=strtobool(self.conf.get("preload", "false")),
                                                engine=self.conf.get("engine"))}

    def init_trainers(self) -> Dict[str, TrainTask]:
        if not strtobool(self.conf.get("train", "true")):
            return {}
        model_dir = os.path.join(self.app_dir, "model", self.model_name)
        return {self.model_name: UNeXtTrainTask(self.bundle_dir, self.conf, model_dir)}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First(), "epistemic": Epistemic()}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        dropout = float(self.conf.get("epistemic_dropout", "0.2"))
        samples = int(self.conf.get("epistemic_samples", "5"))
        return {"epistemic": EpistemicScoring(UNeXtDropoutInferTask(self.bundle_dir, dropout), simulation_size=samples)}

    # MONAI Label answers every error below with "500 Internal Server Error"; an HTTPException raised here reaches
    # the client as it is.
    def infer(self, request, datastore=None):
        _known("model", request.get("model"), self._infers)
        image = request.get("image")
        if isinstance(image, str):
            datastore = datastore if datastore else self.datastore()
            path = image if os.path.exists(image) else datastore.get_image_uri(image)
            if not path:  # MONAI Label would read "" as the current folder (a DICOM series there, if any)
                raise HTTPException(404, f"no image {image!r} in the datastore")
            problem = check_image_file(path)
            if problem:
                raise HTTPException(422, f"{_image_name(image)} cannot be segmented: {problem}")
        return _client_errors(super().infer, request, datastore)

    def train(self, request):
        _known("model", request.get("model"), self._trainers)
        return _client_errors(super().train, request)

    def bundle_path(self, model):
        # called for /train/{model} before the training is queued in the background: refuse an unknown model there
        if model and model not in self._trainers and model not in self._infers:
            _known("model", model, self._trainers)
        return super().bundle_path(model)

    def next_sample(self, request):
        _known("strategy", request.get("strategy") or "random", self._strategies)
        return _client_errors(super().next_sample, request)

    def scoring(self, request, datastore=None):
        _known("scoring method", request.get("method"), self._scoring_methods)
        return _client_errors(super().scoring, request, datastore)


def _image_name(image: str) -> str:
    """How the client knows ``image``: MONAI Label saves an upload as a temporary file named only by its suffix."""
    if os.path.dirname(os.path.abspath(image)) == os.path.abspath(tempfile.gettempdir()):
        return f"the uploaded {os.path.splitext(image)[1] or 'extension-less'} file"
    return f"image {image!r}"


def _known(what: str, name: Any, available: Dict[str, Any]) -> None:
    if name not in available:
        raise HTTPException(404, f"no {what} {name!r} on this server; available: {sorted(available)}")


def _client_errors(call, *args):
    """``call(*args)``, with MONAI Label's ``INVALID_INPUT`` errors answered as 422 instead of 500."""
    try:
        return call(*args)
    except MONAILabelException as e:
        if e.error == MONAILabelError.INVALID_INPUT:
            raise HTTPException(422, e.msg) from e
        raise
