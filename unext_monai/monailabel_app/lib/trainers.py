"""Training task: MONAI Label's ``BundleTrainTask`` for the UNeXt bundle's ``train.json``.

MONAI Label replaces ``train#dataset#data`` and ``validate#dataset#data`` with its datastore's labelled images and
``train#trainer#max_epochs`` with the request's. The bundle derives more from its own split and epoch count (the
``split`` it makes and logs, ``drop_last`` from the training list's length, the cosine schedule's ``T_max`` from
``max_epochs``), so this task also sets ``split``, ``dataset_name``, ``dataset_dir`` and ``max_epochs`` from the same
values: the bundle then logs, schedules and batches for the data it really trains on. Labels are the datastore's
final labels (PNG label indices 0/1, or 0/255 masks).
"""

from __future__ import annotations

import logging
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger(__name__)


class UNeXtTrainTask(BundleTrainTask):
    """Fine-tune the released bundle at ``path`` on the datastore's labels; ``models/model.pt`` is updated in place
    (the bundle's best-metric saver), which the infer task then picks up.

    Args:
        path: the release folder (``configs/train.json``, ``models/model.pt``).
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: Dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, **kwargs)
        self._datastore_dir = ""

    def __call__(self, request, datastore: Datastore):
        self._datastore_dir = getattr(datastore, "_datastore_path", "") or ""
        return super().__call__(request, datastore)

    def _update_overrides(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        train = list(overrides.get(self.const.key_train_dataset_data()) or [])
        val = list(overrides.get(self.const.key_validate_dataset_data()) or [])
        if not train:
            raise ValueError("no labelled images in the datastore: save final labels before training")
        if not val:
            raise ValueError("no validation images: give val_split > 0 with at least two labelled images")
        overrides["split"] = {"training": train, "validation": val}
        overrides["dataset_name"] = "monailabel"
        overrides["dataset_dir"] = self._datastore_dir
        overrides["max_epochs"] = overrides[self.const.key_train_trainer_max_epochs()]
        logger.info(f"training on {len(train)} images, validating on {len(val)}, {overrides['max_epochs']} epoch(s)")
        return overrides
