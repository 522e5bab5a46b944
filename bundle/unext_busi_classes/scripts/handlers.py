# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Ignite handlers and log lines of the bundle's trainings and evaluations that MONAI lacks."""

from __future__ import annotations

import csv
import logging
import math
import os
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler

from .io import write_atomic

__all__ = ["MetricsHistory", "MetricHandler", "defined_and_greater", "log_summary"]

logger = logging.getLogger("unext_monai")


class MetricsHistory:
    """One CSV row of the evaluator's metrics per training epoch (``epoch``, then the metrics), rewritten atomically
    after each evaluation; a resumed run (``resume``) keeps the earlier rows. MONAI's ``MetricsSaver`` keeps only the
    last evaluation."""

    def __init__(self, filepath: str, resume: bool = False) -> None:
        self.filepath, self.resume = filepath, resume

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        row = {"epoch": engine.state.epoch, **{k: float(v) for k, v in engine.state.metrics.items()
                                                if isinstance(v, (int, float))}}
        rows = []
        if self.resume and os.path.isfile(self.filepath):
            with open(self.filepath, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
        self.resume = True  # the rows this run wrote are kept from now on

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
                writer.writeheader()
                writer.writerows([*rows, row])

        write_atomic(self.filepath, write)


class MetricHandler(IgniteMetricHandler):
    """MONAI's ``IgniteMetricHandler`` (same arguments) reporting the mean over the classes a metric is defined for
    and each class's value (``<name>_<class>``, with ``class_names``); NaN, not MONAI's 0.0, when it is defined for
    none (no ground-truth lesion). Give it a MONAI metric made with ``reduction="mean_batch", get_not_nans=True``."""

    def __init__(self, metric_fn: Any, *args: Any, class_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(metric_fn, *args, **kwargs)
        self.class_names = list(class_names or [])

    def compute(self) -> Any:
        value, not_nans = self.metric_fn.aggregate()
        self._is_reduced = True
        if self.save_details:  # every item's value, for MetricsSaver
            self._engine.state.metric_details[self._name] = self.metric_fn.get_buffer()
        per_class = torch.where(torch.as_tensor(not_nans).flatten() > 0, torch.as_tensor(value).flatten().float(),
                                torch.tensor(float("nan")))
        if len(self.class_names) > 1:
            for name, v in zip(self.class_names, per_class.tolist()):
                self._engine.state.metrics[f"{self._name}_{name}"] = v
        defined = per_class[~per_class.isnan()]
        if defined.numel() == 0:
            logger.warning(f"{self._name}: no item has a ground-truth lesion, so it is undefined (NaN)")
            return math.nan
        return float(defined.mean())


def defined_and_greater(current: float, best: float) -> bool:
    """``metric_cmp_fn`` of MONAI's evaluators: a defined metric beats an undefined (NaN) best; NaN beats nothing."""
    return not math.isnan(current) and (math.isnan(best) or current > best)


def log_summary(split: dict[str, list] | None = None, evaluator: Any = None, outputs: dict[str, str] | None = None) \
        -> None:
    """Log what a run trains on (``split``), or at its end the best epoch of ``evaluator`` and where its ``outputs``
    went (``{"what": path}``)."""
    if split is not None:
        logger.info("data: " + ", ".join(f"{len(split[k])} {k}" for k in ("training", "selection", "validation"))
                    + " (the selection part picks models/model.pt; the validation part is held out for evaluation)")
    if evaluator is not None:
        state, name = evaluator.state, getattr(evaluator.state, "key_metric_name", "metric")
        if getattr(state, "best_metric_epoch", -1) < 1 or math.isnan(state.best_metric):
            logger.warning(f"no epoch had a defined {name}: no best model was saved")
        else:
            logger.info(f"best {name} on the selection part: {state.best_metric:.4f}, epoch {state.best_metric_epoch}")
    for what, path in (outputs or {}).items():
        logger.info(f"{what}: {os.path.abspath(path)}")
