"""The handlers MONAI lacks: per-class metrics and their mean, NaN for an undefined metric, the metric history."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import torch
from ignite.engine import Engine
from monai.metrics import DiceMetric

from unext_monai.handlers import MetricHandler, MetricsHistory, defined_and_greater


def _score(pred: list, label: list, class_names: list[str]) -> dict:
    engine = Engine(lambda e, batch: batch)
    MetricHandler(DiceMetric(include_background=len(class_names) == 1, reduction="mean_batch", get_not_nans=True),
                  class_names=class_names).attach(engine, "dice")
    engine.run([(torch.stack(pred), torch.stack(label))], max_epochs=1)
    return engine.state.metrics


def test_the_mean_over_the_classes_each_defined_where_it_is():
    one_hot = torch.zeros(3, 4, 4)
    a, b = one_hot.clone(), one_hot.clone()
    a[1, :2], b[2, :2] = 1, 1  # image a has class 1, image b class 2, each predicted exactly
    a[0], b[0] = 1 - a[1], 1 - b[2]
    metrics = _score([a, b], [a, b], ["benign", "malignant"])
    assert metrics == {"dice": 1.0, "dice_benign": 1.0, "dice_malignant": 1.0}
    half = b.clone()
    half[2, :1], half[0, :1] = 0, 1  # class 2 found on half its pixels
    metrics = _score([a, half], [a, b], ["benign", "malignant"])
    assert metrics["dice_benign"] == 1.0 and abs(metrics["dice_malignant"] - 2 / 3) < 1e-6
    assert abs(metrics["dice"] - (1 + 2 / 3) / 2) < 1e-6  # classes weigh alike, whatever their image counts


def test_a_metric_no_image_defines_is_nan_not_zero():
    empty = torch.zeros(1, 4, 4)
    assert math.isnan(_score([empty], [empty], ["lesion"])["dice"])
    assert defined_and_greater(0.1, float("nan")) and not defined_and_greater(float("nan"), 0.1)


def test_the_history_keeps_a_resumed_runs_rows(tmp_path):
    path = tmp_path / "val_metrics.csv"
    history = MetricsHistory(str(path))
    for epoch in (1, 2):
        history(SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"dice": epoch / 10})))
    resumed = MetricsHistory(str(path), resume=True)  # killed after epoch 2, resumed at epoch 2 again
    resumed(SimpleNamespace(state=SimpleNamespace(epoch=2, metrics={"dice": 0.25})))
    with open(path) as f:
        assert [(r["epoch"], r["dice"]) for r in csv.DictReader(f)] == [("1", "0.1"), ("2", "0.25")]
    MetricsHistory(str(path))(SimpleNamespace(state=SimpleNamespace(epoch=1, metrics={"dice": 0.5})))  # a new run
    with open(path) as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
