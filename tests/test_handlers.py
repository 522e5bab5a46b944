"""Handlers of the training bundle: the weight average (WeightAverage) as train.json's ``ema_momentum`` wires it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_training import train
from ignite.engine import Engine, Events

from unext_monai import UNEXT_S_FEATURES, UNeXt
from unext_monai.data.demo import make_demo_dataset
from unext_monai.handlers import WeightAverage


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNeXt(spatial_dims=2, in_channels=3, out_channels=1, features=UNEXT_S_FEATURES)


def _step(network: torch.nn.Module):
    """A training step that moves every parameter by +1 (and BatchNorm statistics by +1), so averages are exact."""

    def step(engine: Engine, batch) -> None:
        with torch.no_grad():
            for t in list(network.parameters()) + [b for b in network.buffers() if b.is_floating_point()]:
                t.add_(1.0)

    return step


def test_average_starts_from_the_weights_loaded_at_start_and_follows_each_iteration() -> None:
    network = _network()
    average = WeightAverage(network, momentum=0.25)
    loaded = {k: v + 3.0 if v.is_floating_point() else v for k, v in network.state_dict().items()}
    engine = Engine(_step(network))
    engine.add_event_handler(Events.STARTED, lambda e: network.load_state_dict(loaded))  # as a checkpoint loader does
    average.attach(engine)  # after the loaders, as train.json's state_handlers order them
    engine.run([0, 1], max_epochs=1)
    # the average starts at the loaded weights w, then w+1 and w+2 are averaged in: w + 0.25 + (0.75*0.25 + 0.25*2)
    key = "down_1.conv.weight"
    expected = loaded[key] + 0.25 * 1 + 0.25 * (2 - 0.25 * 1)
    assert torch.allclose(average.ema_model.state_dict()[key], expected, atol=1e-5)
    assert not average.ema_model.training


def test_a_restored_average_is_kept_at_start() -> None:
    network = _network()
    average = WeightAverage(network, momentum=0.5)
    restored = {k: v - 7.0 if v.is_floating_point() else v for k, v in network.state_dict().items()}
    average.load_state_dict(restored)
    engine = Engine(_step(network))
    average.attach(engine)
    engine.run([0], max_epochs=1)
    key = "down_1.conv.weight"
    expected = 0.5 * restored[key] + 0.5 * (network.state_dict()[key])
    assert torch.allclose(average.state_dict()[key], expected, atol=1e-5)


@pytest.mark.slow
def test_train_json_validates_and_keeps_the_average_and_resumes_it(tmp_path: Path, caplog) -> None:
    demo = make_demo_dataset(str(tmp_path / "demo"), num_images=12, size=64)
    run = tmp_path / "run"
    schedule = {"lr_scheduler#T_max": 3}  # the same learning rates whether a run stops at epoch 2 or not
    train(run, dataset_dir=demo, max_epochs=2, ema_momentum=0.3, **schedule)
    checkpoint = torch.load(run / "models" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    best = torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "weight_average" in checkpoint
    assert checkpoint["weight_average"].keys() == checkpoint["model"].keys() == best.keys()
    # model.pt holds the average of the best epoch (the validated weights), not the trained weights
    reference = checkpoint["best_metric"]["model"]
    assert all(torch.equal(best[k], reference[k]) for k in best)
    differs = [k for k in best if best[k].is_floating_point() and not torch.equal(best[k], checkpoint["model"][k])]
    assert differs, "model.pt holds the trained weights, not their average"

    train(run, log_handler=caplog.handler, dataset_dir=demo, max_epochs=3, ema_momentum=0.3, resume=True, **schedule)
    assert not any("no 'weight_average'" in r.getMessage() for r in caplog.records)
    resumed = torch.load(run / "models" / "checkpoint_epoch=3.pt", map_location="cpu", weights_only=True)
    uninterrupted = tmp_path / "uninterrupted"
    train(uninterrupted, dataset_dir=demo, max_epochs=3, ema_momentum=0.3, **schedule)
    reference = torch.load(uninterrupted / "models" / "checkpoint_epoch=3.pt", map_location="cpu", weights_only=True)
    for key, value in reference["model"].items():  # the runs are deterministic: the same trained weights
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-6), key
    # the resumed run carried its average on: the same as a run that was never stopped (a restarted average is not)
    for key, value in reference["weight_average"].items():
        assert torch.allclose(resumed["weight_average"][key].float(), value.float(), atol=1e-6), key


@pytest.mark.slow
def test_switched_off_the_checkpoint_has_no_average_and_model_pt_holds_the_trained_weights(tmp_path: Path) -> None:
    demo = make_demo_dataset(str(tmp_path / "demo"), num_images=12, size=64)
    run = tmp_path / "run"
    train(run, dataset_dir=demo, max_epochs=1)
    checkpoint = torch.load(run / "models" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    best = torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "weight_average" not in checkpoint
    assert all(torch.equal(best[k], checkpoint["model"][k]) for k in best)
