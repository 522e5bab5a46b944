"""Training task: MONAI Label's ``BundleTrainTask`` on the released bundle's ``train.json``, in this process, on one
device (its multi-GPU path starts ``torchrun`` and reports nothing back). Each run fine-tunes the served
``models/model.pt`` in its own ``<app>/model/<model>/runs/<run>/``; its best model then replaces the served one
atomically (the replaced one kept as the run's ``replaced_model.pt``). The answer, ``prepare_stats``, is kept as
``/info/``'s ``train_stats``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Dict

from fastapi import HTTPException
from monai.bundle import ConfigWorkflow
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.tasks.train.handler import prepare_stats

from unext_monai.io import write_atomic, write_json_atomic

logger = logging.getLogger(__name__)

#: request options of the stock task that this one does not offer
_NOT_OFFERED = ("multi_gpu", "force_multi_gpu", "gpus", "tracking", "tracking_uri", "tracking_experiment_name",
                "run_id")


class UNeXtTrainTask(BundleTrainTask):
    """Fine-tune the release at ``path`` on the datastore's final labels and serve the result; runs and statistics
    go to ``model_dir`` (``<app>/model/<model name>``)."""

    def __init__(self, path: str, conf: Dict[str, str], model_dir: str) -> None:
        super().__init__(path, conf, load_strict=True)
        self.model_dir = model_dir
        self.stats_path = os.path.join(model_dir, "train_stats.json")
        self.served_model = os.path.join(path, "models", "model.pt")

    def config(self) -> Dict[str, Any]:
        # only model.pt is offered as a starting point: a run's checkpoint_epoch=N.pt in models/ is not
        return {**{k: v for k, v in super().config().items() if k not in _NOT_OFFERED}, "model_filename": ["model.pt"]}

    def stats(self) -> Dict[str, Any]:
        if not os.path.isfile(self.stats_path):
            return {}
        with open(self.stats_path) as f:
            return json.load(f)

    def __call__(self, request, datastore) -> Dict[str, Any]:
        runs = os.path.join(self.model_dir, "runs")
        os.makedirs(runs, exist_ok=True)
        self._run_dir = tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs)
        request = {k: v for k, v in request.items() if k not in _NOT_OFFERED}
        super().__call__({**request, "multi_gpu": False, "model_filename": "model.pt"}, datastore)
        return self.stats()

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        # the bundle's own pretrained_checkpoint (_update_overrides) loads the served model, weights only
        self._pretrained = bool(pretrained) and os.path.isfile(model_pytorch)

    def _update_overrides(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        train, val = overrides.get("train#dataset#data"), overrides.get("validate#dataset#data")
        if not train or not val:
            raise HTTPException(422, f"{len(train or [])} labelled image(s) for training, {len(val or [])} for "
                                     "validation: save final labels and give val_split > 0")
        # the datastore's labels are label maps of the class numbers, not masks named by a class key
        overrides.update(run_dir=self._run_dir, class_key=None, resume_checkpoint=None,
                         pretrained_checkpoint=self.served_model if self._pretrained else None)
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
        best = os.path.join(self._run_dir, "models", "model.pt")
        if os.path.isfile(best):  # written at each validation that improves
            if os.path.isfile(self.served_model):
                shutil.copy2(self.served_model, os.path.join(self._run_dir, "replaced_model.pt"))
            write_atomic(self.served_model, lambda p: shutil.copyfile(best, p))
            stats["published"] = self.served_model
        write_json_atomic(self.stats_path, json.loads(json.dumps(stats, default=float)))
        logger.info(f"training finished: {stats}")
