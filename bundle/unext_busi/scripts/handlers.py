# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Ignite handlers and helpers the bundle's configs need and MONAI lacks.

- :class:`ProgressBar`: ignite's tqdm bar with the running loss (MONAI's handlers log lines, not a bar).
- :class:`MetricsHistory`: one CSV row of validation metrics per epoch, for curves without TensorBoard (MONAI's
  ``MetricsSaver`` rewrites its files at every run of the evaluator).
- :class:`WeightAverage`: ignite's ``EMAHandler`` (an exponential moving average of the weights, which the bundle
  validates and keeps as ``model.pt``) that starts from the weights a run starts with and resumes with the run.
- :class:`MetricHandler`, :func:`defined_and_greater`: an undefined metric (no ground-truth lesion anywhere) stays
  undefined (NaN) instead of MONAI's 0.0, and never ranks as the best.
- :func:`latest_checkpoint`: the newest ``checkpoint_epoch=N.pt`` that MONAI's ``CheckpointSaver`` wrote, to resume.
- :func:`log_dataset`, :func:`log_best`: the log lines that start and end a training run.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Events
from ignite.handlers import EMAHandler
from ignite.handlers import ProgressBar as _IgniteProgressBar
from monai.handlers import IgniteMetricHandler

from .io import write_atomic

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "ProgressBar",
    "MetricsHistory",
    "WeightAverage",
    "MetricHandler",
    "defined_and_greater",
    "latest_checkpoint",
    "log_dataset",
    "log_best",
]

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

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
                writer.writerows({k: r.get(k, "") for k in row} for r in rows)

        write_atomic(self.filepath, write)


class WeightAverage(EMAHandler):
    """An exponential moving average of a network's weights, for validation and ``model.pt``; a checkpoint entry.

    After each training iteration: ``average = (1 - momentum) * average + momentum * weights``, parameters and
    BatchNorm statistics alike (ignite's ``handle_buffers="update"``). ``ema_model`` is a copy of the network holding
    the average, in eval mode. Why not ignite's ``EMAHandler`` as it is: it copies the network when it is built, before
    the checkpoint loaders run at ``Events.STARTED``, so a fine-tuning run would average from random weights and a
    resumed run would lose its average. Here, at ``STARTED`` (attach after the loaders), the average starts from the
    network's weights unless a checkpoint restored it; as a ``save_dict``/``load_dict`` entry it is saved and resumed
    with the run, and a checkpoint written without it (``optional``) resumes with the average started anew.

    Args:
        model: the network being trained (a DDP wrapper is looked through).
        momentum: weight of the newest weights per iteration, in (0, 1); the average spans about ``1 / momentum``
            iterations.
    """

    optional = True  # a checkpoint written without weight averaging still resumes (the average starts there)

    def __init__(self, model: torch.nn.Module, momentum: float) -> None:
        super().__init__(model, momentum=momentum, handle_buffers="update")
        self._restored = False

    def attach(self, engine: Engine) -> None:  # type: ignore[override]
        """Start the average at ``STARTED`` and update it after every iteration; attach after the loaders."""
        engine.add_event_handler(Events.STARTED, self._start)
        super().attach(engine, name="ema_momentum", warn_if_exists=False)

    def _start(self, engine: Engine) -> None:
        if not self._restored:
            self.ema_model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ema_model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.ema_model.load_state_dict(state)
        self._restored = True


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
    sizes = ", ".join(f"{len(split.get(k, []))} {k}" for k in ("training", "selection", "validation"))
    if dataset_name == "demo" or dataset_dir is None:
        logger.info(f"no dataset given: training on the built-in synthetic demo set ({sizes}); use --dataset_name "
                    "isic2018|busi|unext|datalist --dataset_dir DIR for real data")
    else:
        logger.info(f"dataset {dataset_name} at {dataset_dir}: {sizes} (the selection part picks model.pt; the "
                    "validation part is held out for evaluate.json)")


def log_best(evaluator: Engine) -> None:
    """Log the best validation metric and its epoch at the end of training."""
    state = evaluator.state
    name = getattr(evaluator, "key_metric_name", None) or getattr(state, "key_metric_name", "metric")
    if getattr(state, "best_metric_epoch", -1) < 1 or math.isnan(state.best_metric):
        logger.warning(f"no epoch had a defined {name}: no best model was saved")
        return
    logger.info(f"best {name} on the selection split: {state.best_metric:.4f} at epoch {state.best_metric_epoch}")


class MetricHandler(IgniteMetricHandler):
    """MONAI's ``IgniteMetricHandler`` (same arguments) that reports a metric no item defines as NaN, with a warning.

    MONAI's metrics skip items where the metric is undefined (Dice of an empty ground truth with ``ignore_empty``),
    but when every item is skipped ``aggregate`` returns 0.0, which reads as "the model found nothing". Give it a
    MONAI metric made with ``get_not_nans=True``, e.g. ``DiceMetric(include_background=True, get_not_nans=True)``.
    """

    def __init__(self, metric_fn: Any, *args: Any, **kwargs: Any) -> None:
        if not getattr(metric_fn, "get_not_nans", False):
            raise ValueError(f"MetricHandler needs a metric made with get_not_nans=True, got {metric_fn!r}")
        super().__init__(metric_fn, *args, **kwargs)

    def compute(self) -> Any:
        value, not_nans = self.metric_fn.aggregate()
        self._is_reduced = True
        if self.save_details:  # every item's value, for MetricsSaver
            self._engine.state.metric_details[self._name] = self.metric_fn.get_buffer()
        if float(torch.as_tensor(not_nans).sum()) == 0:
            logger.warning(f"{self._name}: undefined for every item (empty ground truth or prediction): NaN")
            return float("nan")
        value = torch.as_tensor(value).squeeze()
        return value.item() if value.ndim == 0 else value


def defined_and_greater(current: float, best: float) -> bool:
    """``metric_cmp_fn`` for MONAI's evaluators: a defined metric beats an undefined (NaN) best, NaN beats nothing."""
    return not math.isnan(current) and (math.isnan(best) or current > best)
