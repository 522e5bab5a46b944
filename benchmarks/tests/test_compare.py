"""The comparison's overlays (configs/compare/) build their networks through the bundle's configs, and the pieces of
benchmarks/compare.py that need no training: its commands, result files, tables and resumability."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import monai
import pytest
import torch
from monai.bundle import ConfigParser

from unext_monai.console import check_command_line
from unext_monai.networks.nets import UNeXt

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import compare  # noqa: E402

from benchmarks.compare_networks import ConvStagesUNeXt  # noqa: E402

OVERLAYS = sorted(p.stem for p in (ROOT / "configs" / "compare").glob("*.json"))
BUNDLE_MAIN = os.path.join(os.path.dirname(monai.__file__), "bundle", "__main__.py")


def _parser(row: str, evaluate: bool = False) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in compare.config_files(row, evaluate)])
    parser["device"] = "$torch.device('cpu')"
    return parser


def test_every_overlay_is_a_row():
    assert OVERLAYS == sorted(compare.ROWS)


@pytest.mark.parametrize("row", OVERLAYS)
@pytest.mark.parametrize("evaluate", [False, True], ids=["training", "evaluation"])
def test_overlay_network_through_bundle_configs(row, evaluate):
    """train.json (+ evaluate.json) + busi.json + the overlay build a network that maps an image batch to one logit
    map of the input's size: the shape the bundle's loss, inferers and post-processing take."""
    net = _parser(row, evaluate).get_parsed_content("network")
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, 64, 64)


@pytest.mark.parametrize("row", OVERLAYS)
def test_every_row_trains_without_deep_supervision(row):
    """The table's recipe is the paper's comparison: one loss on the final output for every network, whatever
    busi.json (the released weights' recipe) sets; so the recorded commands keep reproducing the table."""
    parser = _parser(row)
    assert parser.get_parsed_content("deep_supervision") is False
    net = parser.get_parsed_content("network").train()
    assert isinstance(net(torch.rand(1, 3, 64, 64)), torch.Tensor)


@pytest.mark.parametrize("row", OVERLAYS)
def test_overlay_network_trains_with_bundle_loss_and_inferer(row):
    """A step with the bundle's training inferer and loss: the gradient reaches the first layer (UNet++'s list output
    is reduced to its one map by the overlay's forward hook, in training too)."""
    parser = _parser(row)
    net = parser.get_parsed_content("network").train()
    loss = parser.get_parsed_content("loss")(
        parser.get_parsed_content("train#inferer")(torch.rand(2, 3, 64, 64), net),
        (torch.rand(2, 1, 64, 64) > 0.5).float(),
    )
    loss.backward()
    assert torch.isfinite(loss)
    first = next(net.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_ablation_overlays_are_the_variants_they_name():
    nets = {row: _parser(row).get_parsed_content("network_def") for row in OVERLAYS if row.startswith("unext")}
    assert type(nets["unext"]) is UNeXt and nets["unext"].features == (16, 32, 128, 160, 256)
    assert nets["unext_s"].features == (8, 16, 32, 64, 128)
    assert nets["unext_l"].features == (32, 64, 128, 256, 512)
    assert nets["unext_noshift"].down_4.block.mlp.shift_in.shift_size == 1  # one group moved by 0: no shift
    assert nets["unext"].down_4.block.mlp.shift_in.shift_size == 5
    assert type(nets["unext_conv_stages"]) is ConvStagesUNeXt
    counts = {row: sum(p.numel() for p in net.parameters()) for row, net in nets.items()}
    assert counts["unext"] == 1_471_921 and counts["unext_s"] == 253_561  # the reference's counts
    assert counts["unext_noshift"] == counts["unext"]  # the shift has no weights


@pytest.mark.parametrize("evaluate", [False, True], ids=["training", "evaluation"])
@pytest.mark.parametrize("max_items", [None, 4])
def test_bundle_command_overrides_are_config_entries(evaluate, max_items, monkeypatch):
    """Every --key of a row's command names an entry of its configs (the bundle refuses unknown keys)."""
    schedule = {"epochs": 3, "spatial_size": 128, "seed": 1, "include_normal": False, "max_items": max_items}
    command = compare.bundle_command("unext", evaluate, "/tmp/b", "/data/busi", schedule)
    assert command[:5] == ["python", "-m", "monai.bundle", "run", "evaluating" if evaluate else "training"]
    config_files = json.loads(command[command.index("--config_file") + 1])
    assert config_files == compare.config_files("unext", evaluate)
    assert config_files[-1] == "configs/compare/unext.json"
    assert command[command.index("--include_normal") + 1] == "False"
    assert command[command.index("--spatial_size") + 1] == "[128, 128]"
    assert command[command.index("--seed") + 1] == "1"
    assert ("--max_epochs" in command) is not evaluate
    assert ("--eval_datalist" in command) is (evaluate and max_items is not None)
    assert ("--train_datalist" in command) is (not evaluate and max_items is not None)
    monkeypatch.chdir(ROOT)
    check_command_line([BUNDLE_MAIN] + command[3:])


def test_evaluation_command_scores_the_networks_own_masks():
    """busi.json sets the released UNeXt's post-processing (largest component, a lesion-confidence gate of 0.9): the
    table's evaluation turns it off, or a network less confident than UNeXt scores 0 (it did: unet, unext_s)."""
    post_processing = {"LesionConfidenceGated", "KeepLargestConnectedComponentd", "RemoveSmallObjectsd"}

    def transforms(overrides: dict) -> set[str]:
        parser = ConfigParser()
        parser.read_config([str(ROOT / f) for f in compare.config_files("unet", True)])
        parser.update(overrides)
        return {type(t).__name__ for t in parser.get_parsed_content("validate#postprocessing").transforms}

    assert {"LesionConfidenceGated", "KeepLargestConnectedComponentd"} <= transforms({})  # busi.json's defaults
    schedule = {"epochs": 3, "spatial_size": 256, "seed": 0, "include_normal": False, "max_items": None}
    command = compare.bundle_command("unet", True, "/tmp/b", "/data/busi", schedule)
    overrides = {command[i][2:]: command[i + 1] for i in range(5, len(command), 2)}
    values = {k: json.loads(overrides[k].lower()) for k in ("keep_largest_component", "min_lesion_area",
                                                             "min_lesion_confidence")}
    assert not transforms(values) & post_processing


def test_bundle_command_at_the_default_size_and_seed_has_no_override():
    schedule = {"epochs": 3, "spatial_size": compare.SPATIAL_SIZE, "seed": 0, "include_normal": False,
                "max_items": None}
    command = compare.bundle_command("unet", False, "/tmp/b", "/data", schedule)
    assert "--spatial_size" not in command and "--seed" not in command


def test_result_files(tmp_path):
    (tmp_path / "metrics.csv").write_text("val_mean_dice,0.75\nval_mean_iou,0.625\n")
    assert compare.read_metrics(tmp_path / "metrics.csv") == {"val_mean_dice": 0.75, "val_mean_iou": 0.625}
    with open(tmp_path / "val_metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["epoch", "val_mean_dice", "val_mean_iou"], [1, "nan", "nan"], [2, 0.5, 0.4], [3, 0.7, 0.6],
                     [4, 0.6, 0.5]])
    assert compare.best_selection(tmp_path / "val_metrics.csv") == {"epoch": 3, "dice": 0.7, "iou": 0.6}

    def split(validation):
        items = {"training": ["/a/t1.png", "/a/t2.png"], "selection": ["/a/s.png"], "validation": validation}
        path = tmp_path / "split.json"
        path.write_text(json.dumps({k: [{"image": i, "label": i} for i in v] for k, v in items.items()}))
        return compare.split_summary(path)

    first = split(["/a/v1.png"])
    assert {k: first[k] for k in ("training", "selection", "validation")} == {"training": 2, "selection": 1,
                                                                               "validation": 1}
    assert split(["/a/v1.png"])["digest"] == first["digest"]
    assert split(["/a/v2.png"])["digest"] != first["digest"]


def _row(row: str, max_items=None) -> dict:
    return {
        "row": row, "label": compare.ROWS[row][0], "paper_network": compare.ROWS[row][1],
        "schedule": {"epochs": 2, "spatial_size": 256, "seed": 0, "include_normal": False, "max_items": max_items},
        "commands": {"training": "train " + row, "evaluation": "eval " + row},
        "split": {"training": 352, "selection": 62, "validation": 104, "digest": "d"},
        "validation": {"dice": 0.7, "iou": 0.6, "hd95": 20.0}, "selection_best": {"epoch": 2, "dice": 0.72, "iou": 0.6},
        "params": 1_471_921, "gflops_256": 1.12, "gmacs_256": 0.56, "cpu_ms_1_thread": 22.0,
        "training_throughput": {"images_per_second": 20.0, "precision": "bf16", "threads": 2, "batch": 8,
                                "size": 256, "steps": 5},
        "bundle_epoch_seconds": [30.0, 20.0], "load_average": [1.0, 1.0, 1.0], "machine": "cpu",
        "training_seconds": {"wall": 60.0, "cpu": 100.0}, "evaluation_seconds": {"wall": 10.0, "cpu": 15.0},
        "measurement_seconds": {"wall": 5.0, "cpu": 8.0}, "compare_command": "python benchmarks/compare.py x",
    }


def test_tables_and_document(tmp_path):
    rows = {"unext": _row("unext"), "unet": _row("unet")}
    table = compare.render_table(rows)
    lines = table.splitlines()
    assert lines[2].startswith("| `unet` |") and lines[3].startswith("| `unext` |")  # the ROWS order
    assert "| UNeXt: 1.47 M | 0.57 | 25 | 79.37 ± 0.57 | 66.95 ± 1.22 |" in lines[3]
    assert "| 1.47 M | 0.56 | 22.0 | 20.0 | 20 | 70.00 | 60.00 | 72.00 (2) |" in lines[3]
    doc = tmp_path / "comparison.md"
    doc.write_text(f"intro\n{compare.TABLE_START}\nold table\n{compare.TABLE_END}\nafter\n")
    out = str(tmp_path / "compare")
    compare.write_outputs({"command": "c", "rows": rows}, out, str(doc))
    text = doc.read_text()
    assert "old table" not in text and table in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "- `unext`, by `python benchmarks/compare.py x`:\n  - `train unext`\n  - `eval unext`" in text
    assert json.loads(Path(out + ".json").read_text())["rows"].keys() == rows.keys()

    rows["unext_s"] = _row("unext_s", max_items=4)  # a smoke-test row never reaches the document
    compare.write_outputs({"command": "c", "rows": rows}, out, str(doc))
    assert "unext_s" not in doc.read_text()
    assert "`unext_s` (smoke test, not a result)" in Path(out + ".md").read_text()


def test_plan_from_a_short_run():
    """Row costs: epochs (MONAI's epoch times) + a fixed part (start-up, caching, evaluation, measurements)."""
    unext = {**_row("unext"), "bundle_epoch_seconds": [20.0], "training_seconds": {"wall": 40.0, "cpu": 60.0}}
    unet = {**_row("unet"), "bundle_epoch_seconds": [50.0, 50.0], "training_seconds": {"wall": 110.0, "cpu": 220.0}}
    text = compare.plan({"unext": unext, "unet": unet}, budget_hours=1, cores=2)
    # unext: fixed wall 40 - 20 + 10 + 5 = 35, epoch CPU 60 * 20 / 40 = 30, fixed CPU 60 * 0.5 + 15 + 8 = 53
    assert "| `unext` | 20 | 35 | 30 | 53 |" in text
    # unet: epoch CPU 220 * (100 / 110) / 2 = 100, fixed CPU 220 * 10 / 110 + 15 + 8 = 43
    assert "| `unet` | 50 | 25 | 100 | 43 |" in text
    # (3600 - 60) // 70 = 50 epochs at the wall times; (7200 - 96) // 130 = 54 on 2 idle cores
    assert "| all | 70 | 60 | 130 | 96 |" in text
    assert "Epochs that fit 1 h: 50 at the measured wall times; at most 54 on 2 idle cores" in text


def test_document_without_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        compare.replace_table("no table here", "| a |", "doc.md")


def test_the_repository_document_has_the_table_markers():
    text = (ROOT / "docs" / "comparison.md").read_text()
    assert text.index(compare.TABLE_START) < text.index(compare.TABLE_END)


def test_rows_already_measured_with_the_schedule_are_skipped(tmp_path, monkeypatch):
    ran = []

    def fake_run_row(row, args, schedule):
        ran.append(row)
        row = {**_row(row), "schedule": schedule}
        del row["compare_command"]  # main adds it
        return row

    monkeypatch.setattr(compare, "run_row", fake_run_row)
    out = str(tmp_path / "compare")
    base = ["--dataset_dir", "d", "--work_dir", str(tmp_path), "--out", out, "--doc", "", "--epochs", "2"]
    compare.main(base + ["--rows", "unet", "unext"])
    assert ran == ["unet", "unext"]
    compare.main(base + ["--rows", "unet", "unext", "unext_s"])  # only the new row runs
    assert ran == ["unet", "unext", "unext_s"]
    compare.main(base[:-1] + ["3", "--rows", "unet"])  # another schedule: measured again
    compare.main(base + ["--rows", "unext", "--force"])
    assert ran == ["unet", "unext", "unext_s", "unet", "unext"]
    rows = json.loads(Path(out + ".json").read_text())["rows"]
    assert rows["unet"]["schedule"]["epochs"] == 3 and rows["unext_s"]["schedule"]["epochs"] == 2
    assert rows["unet"]["compare_command"].endswith("--epochs 3 --rows unet")


@pytest.mark.slow
def test_compare_end_to_end_smoke(shared_dir, tmp_path):
    """compare.py on UNeXt-S: the bundle's training and evaluation on 4 images of each BUSI split, then the
    measurements; the row lands in the JSON and the Markdown, marked as a smoke test."""
    out = tmp_path / "compare"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--dataset_dir", str(shared_dir / "data" / "busi"),
         "--work_dir", str(tmp_path / "runs"), "--rows", "unext_s", "--epochs", "1", "--max_items", "4",
         "--out", str(out), "--doc", "", "--latency_runs", "2", "--train_steps", "1"],
        check=True, cwd=tmp_path,
    )
    row = json.loads((tmp_path / "compare.json").read_text())["rows"]["unext_s"]
    assert row["split"]["validation"] > 0 and 0.0 <= row["validation"]["dice"] <= 1.0
    assert row["params"] == 253_561
    assert len(row["bundle_epoch_seconds"]) == 1
    assert (tmp_path / "runs" / "unext_s" / "models" / "model.pt").is_file()
    assert "(smoke test, not a result)" in (tmp_path / "compare.md").read_text()


def test_remeasure_updates_the_cost_columns_only(tmp_path, monkeypatch):
    def fake_run_row(row, args, schedule):
        row = {**_row(row), "schedule": schedule}
        del row["compare_command"]
        return row

    def fake_measure(row, args):
        return {"params": 7, "gflops_256": 2.0, "gmacs_256": 1.0, "cpu_ms_1_thread": 11.0,
                "training_throughput": {**_row(row)["training_throughput"], "threads": args.threads}}

    monkeypatch.setattr(compare, "run_row", fake_run_row)
    monkeypatch.setattr(compare, "measure", fake_measure)
    out = str(tmp_path / "compare")
    doc = tmp_path / "comparison.md"
    doc.write_text(f"{compare.TABLE_START}\n{compare.TABLE_END}\n")
    base = ["--dataset_dir", "d", "--work_dir", str(tmp_path), "--out", out, "--doc", str(doc), "--epochs", "2"]
    compare.main(base + ["--rows", "unet", "unext"])
    before = json.loads(Path(out + ".json").read_text())["rows"]
    compare.main(["--out", out, "--doc", str(doc), "--remeasure", "--threads", "2", "--rows", "unext", "unext_s"])
    rows = json.loads(Path(out + ".json").read_text())["rows"]
    assert "unext_s" not in rows  # never trained: not re-measured into a row
    assert rows["unet"] == before["unet"]
    unext = rows["unext"]
    assert (unext["params"], unext["cpu_ms_1_thread"], unext["training_throughput"]["threads"]) == (7, 11.0, 2)
    assert {k: unext[k] for k in ("validation", "selection_best", "commands", "schedule")} == {
        k: before["unext"][k] for k in ("validation", "selection_best", "commands", "schedule")}
    assert set(unext["measured"]) == {"date", "load_average"}
    assert "Cost columns (params, GMACs, CPU ms, training images/s) measured: unext " in doc.read_text()
