"""The MONAI model zoo's checks of a packaged bundle, run with MONAI and the bundle's listed packages only.

Not a test module: ``tests/test_zoo_checks.py`` runs it with the Python of the environment ``.ci/zoo_env.sh`` builds
(MONAI, PyTorch, NumPy and the packages the bundles' ``metadata.json`` list, no ``unext_monai``)::

    python tests/zoo_checks.py bundle/unext_isic2018 --schema ../shared/zoo/meta_schema_20240725.json --work /tmp/w

It imports nothing of this repository. The bundle is copied to ``--work`` first (training writes into the bundle
folder, as in the zoo), its folder put on ``sys.path`` as the zoo's tools do, and these checks run; each prints
``PASS <check>: ...`` or stops the script with the error:

- ``directory``: ``LICENSE``, ``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``;
- ``version``: the version has a changelog entry;
- ``metadata``: ``monai.bundle.verify_metadata`` against the zoo's schema;
- ``no_side_effects``: ``monai.bundle.load`` of the network (the train workflow, as MONAI loads it) and parsing every
  config write no file, in the bundle nor in the working directory;
- ``net_in_out``: ``monai.bundle.verify_net_in_out``;
- ``torchscript``: ``monai.bundle.ckpt_export`` of ``model.pt`` gives the outputs of the shipped ``model.ts``;
- ``train``, ``evaluate``, ``infer``: the zoo's unit-test pattern, ``ConfigWorkflow`` + ``check_properties`` for
  ``train.json``, ``train.json + evaluate.json`` and ``inference.json``, overriding only ``dataset_dir``,
  ``max_epochs`` and ``num_workers``, on a small synthetic data set with its ``datalist.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image


def _blob_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(h, w)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)
    image = (rng.integers(0, 60, (h, w, 3)) + mask[..., None] * 150).clip(0, 255).astype(np.uint8)
    return image, mask


def make_dataset(root: str, class_names: list[str], class_key: str | None, n: int = 12) -> list[str]:
    """A small synthetic data set and its ``datalist.json`` (MONAI's datalist: ``training`` and ``validation`` lists
    of ``{"image", "label"}`` paths relative to it) in ``root``: binary masks 0/255, with several classes label maps
    of the class numbers, or with a ``class_key`` binary masks and each item's class name. Returns the image paths."""
    rng = np.random.default_rng(0)
    items, images = [], []
    for i in range(n):
        image, mask = _blob_pair(rng, 96, 128)
        item = {"image": f"images/case_{i:03d}.png", "label": f"masks/case_{i:03d}_mask.png"}
        if class_key:
            item[class_key] = class_names[i % len(class_names)]
        mask = mask * (255 if len(class_names) == 1 or class_key else i % len(class_names) + 1)
        for rel, array in ((item["image"], image), (item["label"], mask.astype(np.uint8))):
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            Image.fromarray(array).save(os.path.join(root, rel))
        items.append(item)
        images.append(os.path.join(root, item["image"]))
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump({"training": items[: n - 4], "validation": items[n - 4:]}, f, indent=1)
    return images


def _files(*folders: str) -> set[str]:
    out = set()
    for folder in folders:
        for base, _, names in os.walk(folder):
            out |= {os.path.join(base, n) for n in names if "__pycache__" not in base}
    return out


def _workflow(bundle: str, configs: list[str], workflow_type: str, **override):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=[os.path.join(bundle, "configs", c) for c in configs],
        logging_file=os.path.join(bundle, "configs", "logging.conf"),
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        bundle_root=bundle,
        **override,
    )
    wf.initialize()
    missing = wf.check_properties()
    if missing:
        raise AssertionError(f"{configs}: check_properties failed: {missing}")
    wf.run()
    wf.finalize()
    return wf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--schema", required=True, help="the zoo's metadata schema (a local copy: nothing is downloaded)")
    ap.add_argument("--work", required=True, help="an empty folder for the bundle's copy, data and outputs")
    args = ap.parse_args(argv)
    if "unext_monai" in sys.modules or __import__("importlib").util.find_spec("unext_monai") is not None:
        raise SystemExit("unext_monai is importable here: the zoo's checks need an environment without it")
    from monai.bundle import ConfigParser, ckpt_export, load, verify_metadata, verify_net_in_out

    name = os.path.basename(os.path.abspath(args.bundle))
    os.makedirs(args.work, exist_ok=True)
    bundle = os.path.join(os.path.abspath(args.work), "bundles", name)
    shutil.copytree(args.bundle, bundle, ignore=shutil.ignore_patterns("__pycache__", "eval", "runs"))
    sys.path.insert(0, bundle)  # the zoo's verify_bundle.py and unit tests do the same for a bundle's scripts/
    meta_file = os.path.join(bundle, "configs", "metadata.json")
    meta = json.load(open(meta_file))

    for rel in ("LICENSE", "configs/metadata.json", "configs/inference.json", "models/model.pt"):
        if not os.path.isfile(os.path.join(bundle, rel)):
            raise AssertionError(f"{rel} missing")
    print("PASS directory")
    if meta["version"] not in meta.get("changelog", {}):
        raise AssertionError(f"version {meta['version']} has no changelog entry")
    print(f"PASS version: {meta['version']}")
    schema = os.path.join(args.work, "schema.json")
    shutil.copyfile(args.schema, schema)
    verify_metadata(meta_file=meta_file, filepath=schema)
    print("PASS metadata")

    cwd = tempfile.mkdtemp(dir=args.work, prefix="cwd-")
    before = _files(bundle, cwd)
    os.chdir(cwd)
    net = load(name, bundle_dir=os.path.dirname(bundle), workflow_type="train", device="cpu")
    for configs in (["inference.json"], ["train.json"], ["train.json", "evaluate.json"],
                    ["train.json", "multi_gpu_train.json"]):
        parser = ConfigParser()
        parser.read_config([os.path.join(bundle, "configs", c) for c in configs])
        parser.read_meta(meta_file)
        parser.parse()
    os.chdir(args.work)
    written = sorted(_files(bundle, cwd) - before)
    if written:
        raise AssertionError(f"loading or parsing the bundle wrote {written}")
    print(f"PASS no_side_effects: monai.bundle.load gave a {type(net).__name__} and wrote nothing")

    verify_net_in_out(net_id="network_def", meta_file=meta_file,
                      config_file=os.path.join(bundle, "configs", "inference.json"), bundle_root=bundle)
    print("PASS net_in_out")
    exported = os.path.join(args.work, "verify_model.ts")
    ckpt_export(net_id="network_def", filepath=exported, ckpt_file=os.path.join(bundle, "models", "model.pt"),
                meta_file=meta_file, config_file=os.path.join(bundle, "configs", "inference.json"),
                bundle_root=bundle)
    shipped = torch.jit.load(os.path.join(bundle, "models", "model.ts"))
    fresh = torch.jit.load(exported)
    image = meta["network_data_format"]["inputs"]["image"]
    x = torch.rand(2, image["num_channels"], *image["spatial_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((shipped(x) - fresh(x)).abs().max())
    if diff > 1e-5:
        raise AssertionError(f"ckpt_export of model.pt differs from the shipped model.ts by {diff}")
    print(f"PASS torchscript: export of model.pt vs shipped model.ts max abs difference {diff:.1e}")

    train = json.load(open(os.path.join(bundle, "configs", "train.json")))
    dataset_dir = os.path.join(args.work, "data")
    images = make_dataset(dataset_dir, train.get("class_names", ["lesion"]), train.get("class_key"))
    override = {"dataset_dir": dataset_dir, "max_epochs": 1, "num_workers": 0}
    _workflow(bundle, ["train.json"], "train", **override)
    runs = glob.glob(os.path.join(bundle, "runs", "*", "models"))
    if len(runs) != 1 or not {"model.pt", "checkpoint_epoch=1.pt"} <= set(os.listdir(runs[0])):
        raise AssertionError(f"training wrote no run folder with model.pt and its checkpoint: {runs}")
    print(f"PASS train: 8 training, 4 validation images, 1 epoch into {os.path.relpath(runs[0], bundle)}")
    _workflow(bundle, ["train.json", "evaluate.json"], "train", **override)
    with open(os.path.join(bundle, "eval", "evaluation", "val_mean_dice_raw.csv")) as f:
        scored = len(f.read().splitlines()) - 1  # MONAI's MetricsSaver: a header, then one row per image
    print(f"PASS evaluate: {scored} validation images scored")

    out = os.path.join(args.work, "predictions")
    records = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger("scripts").addHandler(Collect())  # the logger of the bundle's code
    _workflow(bundle, ["inference.json"], "infer", dataset_dir=os.path.join(dataset_dir, "images"), output_dir=out)
    expected = {os.path.join(out, os.path.basename(i)[: -len(".png")] + s) for i in images
                for s in ("_mask.png", "_overlay.png")}
    if set(glob.glob(os.path.join(out, "*"))) != expected:
        raise AssertionError(f"inference wrote {sorted(os.listdir(out))}, expected a mask and an overlay per image")
    if not any(out in r for r in records):
        raise AssertionError("inference did not log where it wrote")
    print(f"PASS infer: {len(images)} images segmented from dataset_dir")
    return 0


if __name__ == "__main__":
    sys.exit(main())
