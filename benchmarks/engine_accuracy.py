"""Same answers from the fast inference paths: masks of every engine path against the float32 network's, on the
validation split of each released bundle's data set.

Run from the repository root (real data beside the checkout)::

    .venv/bin/python benchmarks/engine_accuracy.py --data_dir ../shared/data

For each bundle (``bundle/unext_isic2018``, ``bundle/unext_busi``, ``bundle/unext_busi_classes``), the configs of
the repository (``train.json`` + ``evaluate.json`` + the overlays of its data set) give the validation split (the
seeded split recorded in the bundle's ``docs/training_record.json``), the preprocessing and the post-processing of
``evaluate.json`` (sigmoid or softmax, back to the original size, the data set's gating, threshold 0.5 or argmax,
its connected-component rule). Every image is preprocessed once; its logits come from each path; each path's mask
goes through the same post-processing. Recorded per path: the mean per-image Dice between its label map and the
float32 network's (averaged over the classes in either; two empty maps agree: 1), the pixels that differ, and the
data set's mean Dice against the ground truth as ``evaluate.json`` computes it (MONAI's ``DiceMetric`` over the
classes, images without ground-truth lesion left out), beside the float32 network's.

Paths: ``pytorch fp32`` (the released ``model.pt`` in ``unext_monai.UNeXt``: the reference), and ``model.onnx``
through :class:`unext_monai.inferers.EngineInferer`: ONNX Runtime fp32, OpenVINO f32 and, on CPUs with native
bfloat16, OpenVINO bf16 as shipped (the first convolution in float32, the second's weights in two bfloat16 parts),
with the first two, the first alone and none of the convolutions in float32 (``LADDER``), and int8 (NNCF, calibrated
on ``--calibrate`` pictures of the training split, the rest bf16). Writes ``benchmarks/results/engine_accuracy.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai.bundle import ConfigParser  # noqa: E402
from monai.metrics import DiceMetric  # noqa: E402
from monai.networks.utils import one_hot  # noqa: E402

from unext_monai import inferers  # noqa: E402
from unext_monai.release.configs import dataset_layers  # noqa: E402

#: bundle -> (data set folder, the release's --dataset: its overlays are dataset_layers of it)
BUNDLES = {"unext_isic2018": ("isic2018", "isic2018"), "unext_busi": ("busi", "busi"),
           "unext_busi_classes": ("busi", "busi_classes")}


def cpu_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
                .split(":", 1)[1].split())
    wanted = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
    return f"{model}; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)


#: bf16 with other convolutions made precise than ``EngineInferer``'s (name, float32 ones, split ones after them)
LADDER = (("first two convolutions f32", 2, 0), ("first convolution f32", 1, 0), ("every layer", 0, 0))


def _no_onnxruntime(*args):
    raise ImportError  # as where only OpenVINO is installed


class _Int8Inferer:
    """``model.onnx`` quantized after training to int8 by OpenVINO's NNCF (the other layers bfloat16), calibrated on
    ``pictures`` (network inputs, 1 x C x H x W)."""

    def __init__(self, model_onnx: str, pictures: list, spatial_size: list[int]) -> None:
        import nncf
        import openvino as ov
        from openvino._offline_transformations import apply_moc_transformations

        core = ov.Core()
        model = core.read_model(model_onnx)
        model.reshape([1, pictures[0].shape[1], *spatial_size])
        apply_moc_transformations(model, cf=True)  # folds the weights' reshapes, which NNCF needs constant
        model = nncf.quantize(model, nncf.Dataset(pictures), subset_size=len(pictures))
        self.request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                         "INFERENCE_NUM_THREADS": 1}).create_infer_request()
        self.name = f"OpenVINO {ov.__version__.split('-')[0]} int8 (NNCF, {len(pictures)} training pictures), rest bf16"

    def __call__(self, x: torch.Tensor, network) -> torch.Tensor:
        return torch.from_numpy(self.request.infer({0: x.as_subclass(torch.Tensor).numpy()})[0].copy())


def paths(model_onnx: str, spatial_size: list[int], calibration: list) -> dict:
    """The inference paths compared with the network: the engines :class:`EngineInferer` offers and, where the CPU
    computes bfloat16, the same with fewer convolutions kept in float32, and int8 (not offered: measured here)."""
    out = {"onnxruntime fp32": inferers.EngineInferer(model_onnx, "fp32", spatial_size)}
    with mock.patch.object(inferers, "_onnxruntime", _no_onnxruntime):  # fp32 where only OpenVINO is
        out["openvino f32"] = inferers.EngineInferer(model_onnx, "fp32", spatial_size)
    if inferers.native_bf16():
        out["openvino bf16"] = inferers.EngineInferer(model_onnx, "bf16", spatial_size)
        for name, f32, split in LADDER:
            with mock.patch.object(inferers, "_precise_start", functools.partial(inferers._precise_start, f32=f32,
                                                                                 split=split)):
                out[f"openvino bf16, {name}"] = inferers.EngineInferer(model_onnx, "bf16", spatial_size)
        if calibration:
            out["openvino int8"] = _Int8Inferer(model_onnx, calibration, spatial_size)
    for inferer in out.values():
        inferer.checked = True  # compared on every image here
    return out


def mask_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over the classes in either label map of their Dice (two empty maps agree: 1)."""
    values = [v for v in torch.unique(torch.cat([a.flatten(), b.flatten()])).tolist() if v > 0]
    dices = [2 * float(((a == v) & (b == v)).sum()) / int((a == v).sum() + (b == v).sum()) for v in values]
    return sum(dices) / len(dices) if dices else 1.0


def run_bundle(name: str, dataset: str, overlay: str, data_dir: Path, limit: int | None,
               calibrate: int) -> dict:
    parser = ConfigParser()
    layers = [f"{d}.json" for d in dataset_layers(overlay)]
    parser.read_config([str(ROOT / "configs" / f) for f in ("train.json", "evaluate.json", *layers)])
    parser["dataset_dir"] = str(data_dir / dataset)
    parser["bundle_root"] = str(ROOT / "bundle" / name)
    parser["deep_supervision"] = False  # the released weights have no heads; eval mode returns the logits only
    record = json.loads((ROOT / "bundle" / name / "docs" / "training_record.json").read_text())["split"]
    for key in ("seed", "val_fraction", "selection_fraction", "include_normal"):
        parser[key] = record[key]
    items = parser.get_parsed_content("eval_datalist")
    n_split = len(items)  # may differ from the record's where the checks now drop a repeated image
    items = items[:limit] if limit else items
    pre = parser.get_parsed_content("validate#preprocessing")
    post = parser.get_parsed_content("validate#postprocessing")
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(ROOT / "bundle" / name / "models" / "model.pt", map_location="cpu",
                                   weights_only=True))
    calibration = [pre(copy.deepcopy(item))["image"][None].numpy() for item in
                   parser.get_parsed_content("train_datalist")[:calibrate]]
    engines = paths(str(ROOT / "bundle" / name / "models" / "model.onnx"), parser["spatial_size"], calibration)
    names = ["pytorch fp32", *engines]
    classes = parser.get_parsed_content("num_classes")
    dice_gt = {n: DiceMetric(include_background=False, get_not_nans=True) for n in names}  # one-hot, as evaluate.json
    agree = {n: [] for n in names[1:]}
    differ = {n: 0 for n in names[1:]}
    for item in items:
        d = pre(copy.deepcopy(item))
        x = d["image"][None]
        masks = {}
        with torch.inference_mode():
            for n in names:
                logits = net(x) if n == "pytorch fp32" else engines[n](x, net)
                out = post({"image": d["image"], "label": d["label"], "pred": logits[0]})
                pred, label = (torch.as_tensor(out[k]) for k in ("pred", "label"))  # K classes: one-hot already
                masks[n] = pred.argmax(0, keepdim=True) if classes > 1 else pred.long()
                dice_gt[n](y_pred=[pred if classes > 1 else one_hot(masks[n][None], 2)[0]],
                           y=[label if classes > 1 else one_hot(label.long()[None], 2)[0]])
        for n in names[1:]:
            agree[n].append(mask_dice(masks[n], masks["pytorch fp32"]))
            differ[n] += int((masks[n] != masks["pytorch fp32"]).sum())
    rows = {}
    for n in names:
        value, not_nans = dice_gt[n].aggregate()
        rows[n] = {"dice_vs_ground_truth": float(value), "images_scored": int(not_nans)}
        if n in agree:
            rows[n].update(mean_dice_vs_fp32=sum(agree[n]) / len(agree[n]), min_dice_vs_fp32=min(agree[n]),
                           images_identical=sum(a == 1.0 for a in agree[n]), pixels_differing=differ[n])
    reference = rows["pytorch fp32"]["dice_vs_ground_truth"]
    for n in names[1:]:
        rows[n]["dice_change"] = rows[n]["dice_vs_ground_truth"] - reference
        rows[n]["passes"] = rows[n]["mean_dice_vs_fp32"] >= 0.999 and abs(rows[n]["dice_change"]) <= 0.001
    return {"bundle": name, "images": len(items), "validation_split_now": n_split, "split": record,
            "engines": {n: e.name for n, e in engines.items()}, "paths": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None, help="first N validation images only (a smoke run)")
    parser.add_argument("--calibrate", type=int, default=100,
                        help="training pictures to calibrate int8 with (0: no int8 path)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    results = {"command": "python benchmarks/engine_accuracy.py" + (f" --limit {args.limit}" if args.limit else ""),
               "date": time.strftime("%Y-%m-%d"), "cpu": cpu_line(), "torch": torch.__version__,
               "bundles": [run_bundle(n, d, o, args.data_dir, args.limit, args.calibrate)
                           for n, (d, o) in BUNDLES.items()]}
    results["wall_s"] = round(time.time() - start, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "engine_accuracy.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Same answers: fast inference paths against the float32 network", "",
             f"`{results['command']}` ({results['date']}); CPU: {results['cpu']}; torch {results['torch']}. "
             "Validation split of each bundle (its training record's seeded split as the repository's checks give "
             "it today: BUSI 124 images where the record says 125, one image being a repeat now used once), "
             "evaluate.json's preprocessing "
             "and post-processing; Dice vs fp32: mean per-image Dice between the path's mask and the fp32 "
             "network's; Dice vs ground truth: the data set's mean Dice as evaluate.json computes it.", "",
             "| bundle | images | path | engine | mean Dice vs fp32 (min) | images identical | pixels differing | "
             "Dice vs ground truth | change | targets met |", "|---|---|---|---|---|---|---|---|---|---|"]
    for b in results["bundles"]:
        for n, r in b["paths"].items():
            if n == "pytorch fp32":
                lines.append(f"| {b['bundle']} | {b['images']} | {n} | PyTorch | - | - | - | "
                             f"{r['dice_vs_ground_truth']:.4f} | - | - |")
            else:
                lines.append(f"| {b['bundle']} | {b['images']} | {n} | {b['engines'][n]} | "
                             f"{r['mean_dice_vs_fp32']:.5f} ({r['min_dice_vs_fp32']:.4f}) | {r['images_identical']} | "
                             f"{r['pixels_differing']} | {r['dice_vs_ground_truth']:.4f} | {r['dice_change']:+.5f} | "
                             f"{'yes' if r['passes'] else 'NO'} |")
    lines += ["", "Targets: mean Dice vs fp32 >= 0.999 and |change of Dice vs ground truth| <= 0.001.", ""]
    (args.out_dir / "engine_accuracy.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
