"""Training task: MONAI Label's ``BundleTrainTask`` for the UNeXt bundle's ``train.json``.

MONAI Label replaces ``train#dataset#data`` and ``validate#dataset#data`` with its datastore's labelled images and
``train#trainer#max_epochs`` with the request's. The bundle derives more from its own split and epoch count (the
``split`` it logs, ``drop_last`` from the training list's length, the cosine schedule's ``T_max`` from
``max_epochs``), so this task also sets ``split``, ``dataset_name``, ``dataset_dir`` and ``max_epochs`` from the same
values. Labels are the datastore's final labels (PNG label indices 0/1, or 0/255 masks).

What it changes in the stock task:

- each run writes into its own folder, ``<app>/model/<model name>/runs/<run>/`` (the bundle's ``ckpt_dir`` and
  ``output_dir``: its best model, resumable checkpoint, metric history), starting from the served ``models/model.pt``
  (the bundle's own ``pretrained_checkpoint``); at the end its best model replaces the served ``models/model.pt``
  (atomically; the model it replaces is kept in the run folder as ``replaced_model.pt``), which the infer task then
  picks up. Intermediate checkpoints never reach the served ``models/``, and only ``model.pt`` is offered as a model;
- it answers with the run's statistics (MONAI Label's ``prepare_stats``: the trainer's and the evaluator's metrics,
  the best validation Dice and its epoch), kept in ``<app>/model/<model name>/train_stats.json``, which ``/info/``
  shows as ``train_stats``;
- training runs in this process on one device (the network is small; MONAI Label's multi-GPU path starts
  ``torchrun`` and reports nothing back); experiment tracking (mlflow) is not offered.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any, Dict

from monai.bundle import ConfigWorkflow
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.tasks.train.handler import prepare_stats

from unext_monai.io import write_atomic, write_json_atomic

__all__ = ["UNeXtTrainTask"]

logger = logging.getLogger(__name__)

#: request options of the stock task this one does not offer
_NOT_OFFERED = ("multi_gpu", "gpus", "tracking", "tracking_uri", "tracking_experiment_name", "run_id")


class UNeXtTrainTask(BundleTrainTask):
    """Fine-tune the released bundle at ``path`` on the datastore's labels and serve the result.

    Args:
        path: the release folder (``configs/train.json``, ``models/model.pt``).
        conf: the app's ``--conf`` settings.
        model_dir: the app's folder for this model (``<app>/model/<model name>``): runs and statistics go there.
    """

    def __init__(self, path: str, conf: Dict[str, str], model_dir: str) -> None:
        super().__init__(path, conf, load_strict=True)
        self.model_dir = model_dir
        self.stats_path = os.path.join(model_dir, "train_stats.json")
        self.served_model = os.path.join(path, "models", self.const.model_pytorch())
        self._datastore_dir = ""
        self._run_dir = ""
        self._pretrained = False

    def config(self) -> Dict[str, Any]:
        options = super().config()
        for key in _NOT_OFFERED:
            options.pop(key, None)
        options["model_filename"] = [self.const.model_pytorch()]
        return options

    def stats(self) -> Dict[str, Any]:
        """The last finished run's statistics (``{}`` before the first)."""
        if not os.path.isfile(self.stats_path):
            return {}
        with open(self.stats_path) as f:
            return json.load(f)

    def __call__(self, request, datastore: Datastore) -> Dict[str, Any]:
        self._datastore_dir = getattr(datastore, "_datastore_path", "") or ""
        request = {k: v for k, v in request.items() if k not in _NOT_OFFERED}
        request.update(multi_gpu=False, force_multi_gpu=False, model_filename=self.const.model_pytorch())
        runs = os.path.join(self.model_dir, "runs")
        os.makedirs(runs, exist_ok=True)
        name = time.strftime("%Y%m%d-%H%M%S")
        self._run_dir, n = os.path.join(runs, name), 1
        while os.path.exists(self._run_dir):
            n += 1
            self._run_dir = os.path.join(runs, f"{name}-{n}")
        super().__call__(request, datastore)
        return self.stats()

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        # the bundle's own pretrained_checkpoint (set in _update_overrides) loads the served model, weights only
        self._pretrained = bool(pretrained) and os.path.isfile(model_pytorch)

    def _update_overrides(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        train = list(overrides.get(self.const.key_train_dataset_data()) or [])
        val = list(overrides.get(self.const.key_validate_dataset_data()) or [])
        if not train:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      "no labelled images in the datastore: save final labels before training")
        if not val:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      "no validation images: give val_split > 0 with at least two labelled images")
        overrides["split"] = {"training": train, "selection": val, "validation": val}
        overrides["dataset_name"] = "monailabel"
        overrides["dataset_dir"] = self._datastore_dir
        overrides["max_epochs"] = overrides[self.const.key_train_trainer_max_epochs()]
        overrides["ckpt_dir"] = os.path.join(self._run_dir, "models")
        overrides["output_dir"] = os.path.join(self._run_dir, "eval")
        overrides["resume"] = False
        overrides["pretrained_checkpoint"] = self.served_model if self._pretrained else None
        logger.info(f"training on {len(train)} images, validating on {len(val)}, {overrides['max_epochs']} epoch(s), "
                    f"from {overrides['pretrained_checkpoint'] or 'scratch'}, into {self._run_dir}")
        return overrides

    def run_single_gpu(self, request, overrides) -> None:
        start = time.time()
        workflow = ConfigWorkflow(config_file=self.bundle_config_path, meta_file=self.bundle_metadata_path,
                                  workflow_type="train", logging_file=False, **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        stats = prepare_stats(start, workflow.parser.get_parsed_content("train#trainer"),
                              workflow.parser.get_parsed_content("validate#evaluator"))
        stats["run"] = self._run_dir
        best = os.path.join(overrides["ckpt_dir"], self.const.model_pytorch())
        if os.path.isfile(best):
            if os.path.isfile(self.served_model):
                shutil.copy2(self.served_model, os.path.join(self._run_dir, "replaced_model.pt"))
            write_atomic(self.served_model, lambda p: shutil.copyfile(best, p))
            stats["published"] = self.served_model
        else:
            logger.warning(f"the run wrote no {best}: the served model is unchanged")
        write_json_atomic(self.stats_path, json.loads(json.dumps(stats, default=float)))
        logger.info(f"training finished: {stats}")
