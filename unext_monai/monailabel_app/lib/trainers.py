"""Training task: MONAI Label's ``BundleTrainTask`` for the UNeXt bundle's ``train.json``.

MONAI Label replaces ``train#dataset#data`` and ``validate#dataset#data`` with its datastore's labelled images and
``train#trainer#max_epochs`` with the request's. The bundle derives more from its own split and epoch count (the
``split`` it logs, ``drop_last`` from the training list's length, the cosine schedule's ``T_max`` from
``max_epochs``), so this task also sets ``split``, ``dataset_name``, ``dataset_dir`` and ``max_epochs`` from the same
values. Labels are the datastore's final labels (PNG label indices 0/1, or 0/255 masks).

What it changes in the stock task:

- it answers with the run's statistics (MONAI Label's ``prepare_stats``: the trainer's and the evaluator's metrics,
  the best validation Dice and its epoch), and keeps them in ``eval/monailabel_train_stats.json`` of the bundle,
  which ``/info/`` shows as ``train_stats``;
- the bundle's per-epoch resume checkpoint (``train#interval_saver``, ``models/checkpoint_epoch=N.pt``) is not
  written, and only ``models/model.pt`` is offered as the starting point: intermediate checkpoints never become
  models;
- training runs in this process on one device (the network is small; MONAI Label's multi-GPU path starts
  ``torchrun`` and reports nothing back).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict

from monai.bundle import ConfigWorkflow
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.tasks.train.handler import prepare_stats

from unext_monai.io import write_json_atomic

__all__ = ["UNeXtTrainTask"]

logger = logging.getLogger(__name__)


class UNeXtTrainTask(BundleTrainTask):
    """Fine-tune the released bundle at ``path`` on the datastore's labels; ``models/model.pt`` is updated in place
    (the bundle's best-metric saver), which the infer task then picks up.

    Args:
        path: the release folder (``configs/train.json``, ``models/model.pt``).
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: Dict[str, str]) -> None:
        super().__init__(path, conf, load_strict=True)
        self.stats_path = os.path.join(path, "eval", "monailabel_train_stats.json")
        self._datastore_dir = ""

    def config(self) -> Dict[str, Any]:
        options = super().config()
        for key in ("multi_gpu", "gpus", "tracking", "tracking_uri", "tracking_experiment_name", "run_id"):
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
        request = {**request, "multi_gpu": False, "force_multi_gpu": False,
                   "model_filename": self.const.model_pytorch()}
        super().__call__(request, datastore)
        return self.stats()

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
        overrides["train#interval_saver#_disabled_"] = True
        logger.info(f"training on {len(train)} images, validating on {len(val)}, {overrides['max_epochs']} epoch(s)")
        return overrides

    def run_single_gpu(self, request, overrides) -> None:
        start = time.time()
        workflow = ConfigWorkflow(config_file=self.bundle_config_path, meta_file=self.bundle_metadata_path,
                                  workflow_type="train", **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        stats = prepare_stats(start, workflow.parser.get_parsed_content("train#trainer"),
                              workflow.parser.get_parsed_content("validate#evaluator"))
        write_json_atomic(self.stats_path, json.loads(json.dumps(stats, default=float)))
        logger.info(f"training finished: {stats}")
