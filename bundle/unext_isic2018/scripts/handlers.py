# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Ignite handlers and helpers the bundle's configs need and MONAI lacks.

- :class:`ProgressBar`: ignite's tqdm bar with the running loss (MONAI's handlers log lines, not a bar).
- :class:`MetricsHistory`: one CSV row of validation metrics per epoch, for curves without TensorBoard.
- :func:`latest_checkpoint`: the newest ``checkpoint_epoch=N.pt`` that MONAI's ``CheckpointSaver`` wrote, to resume.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar as _IgniteProgressBar

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ProgressBar", "MetricsHistory", "MetricsJSON", "latest_checkpoint", "log_dataset", "log_best"]

logger = logging.getLogger("unext_monai")


class ProgressBar:
    """A tqdm progress bar over each epoch's iterations showing the loss; attach to a trainer.

    Args:
        loss_key: key of the loss in the engine's output dictionary.
    """

    def __init__(self, loss_key: str = "loss") -> None:
        self.loss_key = loss_key

    def attach(self, engine: Engine) -> None:
        bar = _IgniteProgressBar(persist=True)
        bar.attach(engine, output_transform=lambda output: {"loss": _loss_of(output, self.loss_key)})


def _loss_of(output: Any, key: str) -> float:
    if isinstance(output, list):  # MONAI engines decollate: a list of per-item dicts
        output = output[0]
    return float(output[key])


class MetricsHistory:
    """Append ``epoch, <metric>...`` to a CSV file after each evaluator run, written atomically per row.

    Attach to an evaluator (``SupervisedEvaluator``) run by ``ValidationHandler``: the epoch recorded is the
    trainer's. With ``resume=False`` an existing file is started afresh on the first row.

    Args:
        filepath: the CSV file.
        resume: keep existing rows (a resumed training run).
    """

    def __init__(self, filepath: str, resume: bool = False) -> None:
        self.filepath = filepath
        self.resume = resume
        self._started = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
        epoch = engine.state.epoch  # MONAI's evaluators run with the trainer's epoch number
        row = {"epoch": epoch, **metrics}
        rows: list[dict[str, Any]] = []
        if os.path.isfile(self.filepath) and (self.resume or self._started):
            with open(self.filepath, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < int(epoch)]
        rows.append(row)
        self._started = True
        os.makedirs(os.path.dirname(os.path.abspath(self.filepath)), exist_ok=True)
        tmp = f"{self.filepath}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in row} for r in rows)
        os.replace(tmp, self.filepath)


def latest_checkpoint(ckpt_dir: str) -> str:
    """Path of the newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir`` (the resumable state of a training run)."""
    pattern = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
    found = []
    if os.path.isdir(ckpt_dir):
        for name in os.listdir(ckpt_dir):
            m = pattern.search(name)
            if m:
                found.append((int(m.group(1)), os.path.join(ckpt_dir, name)))
    if not found:
        raise FileNotFoundError(
            f"resume: no checkpoint_epoch=N.pt in {ckpt_dir}; train without --resume first (or point --ckpt_dir at "
            "the folder of the interrupted run)."
        )
    return max(found)[1]


def log_dataset(dataset_name: str, dataset_dir: str | None, split: dict[str, list]) -> None:
    """Log which data a run trains on (says so plainly when it is the built-in demo set)."""
    n_train, n_val = len(split.get("training", [])), len(split.get("validation", []))
    if dataset_name == "demo" or dataset_dir is None:
        logger.info("no dataset given: training on the built-in synthetic demo set (%d train, %d validation); "
                    "use --dataset_name isic2018|busi|unext|datalist --dataset_dir DIR for real data", n_train, n_val)
    else:
        logger.info("dataset %s at %s: %d train, %d validation", dataset_name, dataset_dir, n_train, n_val)


def log_best(evaluator: Engine) -> None:
    """Log the best validation metric and its epoch at the end of training."""
    state = evaluator.state
    logger.info("best validation %s: %.4f at epoch %s", getattr(evaluator, "key_metric_name", "metric"),
                state.best_metric, state.best_metric_epoch)


class MetricsJSON:
    """Write an evaluator's mean metrics and per-image values (``save_details``) to one JSON file, atomically.

    The file holds ``{"mean": {metric: value}, "per_image": [{"image": path, metric: value, ...}, ...]}``;
    attach to an evaluator that runs once (``evaluate.json``). NaN (an empty mask) is written as null.

    Args:
        filepath: the JSON file.
        confusion_metrics: metric names whose details are confusion matrices (MONAI's ``ConfusionMatrix`` handler),
            mapped to the measure to compute per image from them, e.g. ``{"val_sensitivity": "sensitivity"}``.
    """

    def __init__(self, filepath: str, confusion_metrics: dict[str, str] | None = None) -> None:
        self.filepath = filepath
        self.confusion_metrics = dict(confusion_metrics or {})
        self._names: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._names = []

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        for item in items:
            meta = getattr(item.get("image"), "meta", {}) if isinstance(item, dict) else {}
            self._names.append(str(meta.get("filename_or_obj", len(self._names))))

    def _write(self, engine: Engine) -> None:
        import json

        import numpy as np
        from monai.metrics import compute_confusion_matrix_metric

        means = {k: _to_float(v) for k, v in engine.state.metrics.items()}
        per_image = [{"image": name} for name in self._names]
        for metric, details in (engine.state.metric_details or {}).items():
            details = torch.as_tensor(details).detach().cpu().float()
            if metric in self.confusion_metrics:  # (N, C, 4) counts -> the measure per image and class
                details = compute_confusion_matrix_metric(self.confusion_metrics[metric], details)
            values = np.asarray(details, dtype=float)
            values = np.nanmean(values.reshape(len(values), -1), axis=1) if values.size else values
            for row, value in zip(per_image, values):
                row[metric] = _to_float(value)
        os.makedirs(os.path.dirname(os.path.abspath(self.filepath)), exist_ok=True)
        tmp = f"{self.filepath}.tmp"
        with open(tmp, "w") as f:
            json.dump({"mean": means, "per_image": per_image}, f, indent=2)
        os.replace(tmp, self.filepath)
        logger.info("evaluation metrics of %d images written to %s", len(per_image), self.filepath)


def _to_float(value: Any) -> float | None:
    """A JSON-safe float: NaN and infinity (empty masks) become None."""
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class KeyMetricState:
    """The best-metric record of a key-metric ``CheckpointSaver``, as an object with ``state_dict`` so that the
    resumable training checkpoint can carry it (MONAI's alternative, ``key_metric_save_state``, writes it into
    ``model.pt`` itself, which then no longer loads as a plain state dict)."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    def state_dict(self) -> dict:
        checkpoint = self.saver._key_metric_checkpoint
        return checkpoint.state_dict() if checkpoint is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self.saver.load_state_dict(state_dict)
