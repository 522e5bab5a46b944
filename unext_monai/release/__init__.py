"""``python -m unext_monai.release --name NAME ...``: package the repository's bundle into a stand-alone model zoo
bundle (options, contents and checks: ``docs/integrations.md``, Release). The folder is built beside the output,
checked (strict weights, ``verify_net_in_out``, TorchScript and ONNX Runtime against PyTorch, the inference config's
parts) and only then renamed into place; a refusal is one ``release: refused: ...`` line, exit status 1, nothing left.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import sys

from unext_monai.bundle_scripts import bundle_on_path
from unext_monai.checkpoint import load_checkpoint_file, same_state
from unext_monai.folders import is_inside, make_build_folder, replace_folder, tidy_build_leftovers
from unext_monai.release.card import model_card
from unext_monai.release.configs import (
    CONFIG_FILES,
    DATASET_CARDS,
    ReleaseError,
    dataset_card,
    dataset_layers,
    load_metrics,
    packaged_classes,
    packaged_configs,
    packaged_metadata,
    training_config,
    zoo_json,
)
from unext_monai.release.vendor import vendored_files

__all__ = ["release", "main", "training_record", "ReleaseError"]

#: the training run's record in a release: read back when the same weights are released again without their run
RECORD_FILE = os.path.join("docs", "training_record.json")
#: the --card_notes text of a release: read back when the same weights are released again without --card_notes
NOTES_FILE = os.path.join("docs", "card_notes.md")
ATOL = 1e-4  # model.ts and model.onnx against PyTorch: where BatchNorm is folded, float rounding differs
OPSET = 18


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _weights(ckpt_file: str) -> dict:
    """The network weights of a training checkpoint (a state dict, ``{"model": state_dict, ...}``, or a state dict
    with MONAI ``CheckpointSaver``'s ``checkpointer`` record), without the deep-supervision heads (``heads.*``), which
    only training uses."""
    import torch

    try:
        ckpt = load_checkpoint_file(ckpt_file, map_location="cpu")
    except (FileNotFoundError, ValueError) as e:
        raise ReleaseError(str(e)) from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    weights = {k: v for k, v in (ckpt.items() if isinstance(ckpt, dict) else ())
               if isinstance(v, torch.Tensor) and not k.startswith("heads.")}
    if not weights:
        raise ReleaseError(f"{ckpt_file}: no network weights in the checkpoint")
    return weights


def training_record(train_dir: str, key: str = "val_mean_dice") -> dict:
    """What the card says of the training run in ``train_dir``: the split's meta and sizes (``split.json``), the
    epochs and the best row of ``val_metrics.csv`` (the row whose ``key`` picked the released ``model.pt``)."""
    record: dict = {}
    split = _read_json(os.path.join(train_dir, "split.json"))
    if split is not None:
        sizes = {f"n_{k}": len(split[k]) for k in ("training", "selection", "validation") if k in split}
        record["split"] = {**split.get("meta", {}), **sizes}
    history = os.path.join(train_dir, "val_metrics.csv")
    if not os.path.isfile(history):
        return record
    with open(history, newline="", encoding="utf-8") as f:
        rows = [{k: int(v) if k == "epoch" else float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    if rows:
        record["epochs"] = max(r["epoch"] for r in rows)
    if any(key in r for r in rows):
        record["best"] = max((r for r in rows if key in r), key=lambda r: r[key])
    return record


def _trained_classes(record: dict) -> list[str]:
    """The classes a training record scores one by one (``val_mean_dice_<class>``: trainings of K classes)."""
    return [k[len("val_mean_dice_"):] for k in record.get("best") or {} if k.startswith("val_mean_dice_")]


def _read_notes(path: str) -> str:
    """The markdown of ``--card_notes``: free text for the card's Performance section, without headings of the card's
    own levels (``#`` to ``###``), which would split its sections."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseError(f"--card_notes {path}: cannot be read as text ({e})") from None
    headings = [i for i, line in enumerate(text.splitlines(), 1) if re.match(r"#{1,3} ", line)]
    if headings:
        raise ReleaseError(f"--card_notes {path}: line {headings[0]} is a heading of the card's own levels (# to ###):"
                           " use #### or bold text")
    return text


def _changelog(meta: dict, previous_meta: dict | None, version: str, entry: str | None, name: str) -> dict[str, str]:
    """The new entry first, then an existing release's entries (else the repository's), newest first."""
    older = dict((previous_meta or meta).get("changelog") or {})
    if previous_meta and version in older and entry and older[version] != entry:
        raise ReleaseError(f"version {version} is already released with another changelog entry: give a new --version")
    text = entry or older.get(version) or f"release {name}"
    return {version: text, **{k: v for k, v in older.items() if k != version}}


def _check_output_apart(output: str, bundle_root: str, train_dir: str, ckpt_dir: str) -> None:
    """Refuse an output whose replacement would delete what the release is made from: one that is or contains the
    bundle root, the training folder or the checkpoint's folder, or lies inside the first two (but for the bundle
    root's ``bundle/`` of releases)."""
    output = os.path.realpath(output)
    releases = os.path.realpath(os.path.join(bundle_root, "bundle"))
    for what, folder, or_inside in (("the bundle root", bundle_root, True), ("the training folder", train_dir, True),
                                     ("the checkpoint's folder", ckpt_dir, False)):
        folder = os.path.realpath(folder)
        inside = or_inside and is_inside(output, folder) and not is_inside(os.path.dirname(output), releases)
        if is_inside(folder, output) or inside:
            raise ReleaseError(f"--output {output} is, contains or lies inside {what} {folder}: choose an output "
                               "apart from it (default: <bundle_root>/bundle/<name>; copy a checkpoint out of the "
                               "output first)")


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _tool(tool, **kwargs) -> None:
    """Run one of MONAI's bundle tools in this process (inside ``bundle_on_path``, so the bundle's ``scripts``
    import); its failure refuses the release, naming the tool."""
    try:
        tool(**kwargs)
    except Exception as e:
        raise ReleaseError(f"{tool.__name__} failed: {type(e).__name__}: {e}") from e


def _max_diff(name: str, run, net, in_channels: int, shapes: list[tuple[int, int, int]], seed: int) -> float:
    """The largest difference between ``run`` and ``net`` on random batches of ``shapes``; over ``ATOL`` refuses."""
    import torch

    g = torch.Generator().manual_seed(seed)
    diff = 0.0
    with torch.no_grad():
        for b, h, w in shapes:
            x = torch.rand(b, in_channels, h, w, generator=g)
            diff = max(diff, float((torch.as_tensor(run(x)) - net(x)).abs().max()))
    if diff > ATOL:
        raise ReleaseError(f"{name}: its output differs from PyTorch's by {diff:.2e} > {ATOL}")
    return diff


def release(
    bundle_root: str = ".",
    name: str = "unext",
    output: str | None = None,
    ckpt: str | None = None,
    dataset: str | None = None,
    dataset_card_file: str | None = None,
    version: str | None = None,
    changelog: str | None = None,
    train_dir: str | None = None,
    metrics: str | None = None,
    card_notes: str | None = None,
    overwrite: bool = False,
) -> str:
    """Build the release folder of the bundle at ``bundle_root`` and return its path; the arguments are the command
    line's options. Raises ``ReleaseError`` for bad arguments or a failed step or check (nothing is left behind)."""
    import torch
    from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

    from unext_monai.networks.export import export_onnx
    from unext_monai.networks.weights import NEGLIGIBLE_WEIGHT, zero_negligible_weights

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ReleaseError(f"name {name!r}: use letters, digits, '.', '_' and '-'")
    bundle_root = os.path.abspath(bundle_root)
    configs_dir = os.path.join(bundle_root, "configs")
    card_file, licence_file = os.path.join(bundle_root, "docs", "README.md"), os.path.join(bundle_root, "LICENSE")
    required = [card_file, licence_file] + [os.path.join(configs_dir, f) for f in ("metadata.json", *CONFIG_FILES)]
    for path in required:
        if not os.path.isfile(path):
            raise ReleaseError(f"{path} not found: --bundle_root must be the repository's bundle folder")
    ckpt = os.path.abspath(ckpt or os.path.join(bundle_root, "models", "model.pt"))
    output = os.path.abspath(output or os.path.join(bundle_root, "bundle", name))
    tidy_build_leftovers(output)  # a release whose replacement was killed midway is back before it is looked at
    if os.path.exists(output) and not overwrite:
        raise ReleaseError(f"{output} exists: pass --overwrite to replace it")
    _check_output_apart(output, bundle_root, train_dir or os.path.join(bundle_root, "eval"), os.path.dirname(ckpt))
    weights = _weights(ckpt)
    zeroed = zero_negligible_weights(weights.values())  # the packaged files run at full float32 speed

    previous = _read_json(os.path.join(output, "configs", "metadata.json"))
    try:  # a damaged earlier release is replaced like any other
        same_weights = bool(previous) and same_state(_weights(os.path.join(output, "models", "model.pt")), weights)
    except ReleaseError:
        same_weights = False
    source = os.path.join(output, RECORD_FILE)  # the same weights' run may be long gone: its record stands
    if same_weights and not train_dir and os.path.isfile(source):
        print(f"release: same weights as {output}: keeping its training record")
        record = _read_json(source)
    else:
        source = os.path.abspath(train_dir or os.path.join(bundle_root, "eval"))
        record = training_record(source)
    recorded = (record.get("split") or {}).get("dataset")
    if dataset and recorded and recorded not in dataset_layers(dataset):
        raise ReleaseError(f"--dataset {dataset}, but {source} says the weights were trained on {recorded}")
    card = dataset_card(dataset or recorded, dataset_card_file)
    dataset = dataset or recorded or "custom"
    meta = _read_json(os.path.join(configs_dir, "metadata.json"))
    version = version or (previous or meta).get("version")
    configs = packaged_configs(configs_dir, dataset)
    class_names, trained = packaged_classes(configs), _trained_classes(record)
    if trained and trained != class_names:
        variants = [d for d in DATASET_CARDS if recorded in dataset_layers(d) and d != recorded]
        raise ReleaseError(f"{source} scores the classes {trained}, but the configs of {dataset} name {class_names}: "
                           f"release with the --dataset whose overlay names them ({', '.join(variants) or 'none'})")
    in_channels = int(json.loads(configs["inference.json"]).get("in_channels", 3))
    evaluation = load_metrics(metrics) if metrics else (previous.get("eval_metrics") if same_weights else None)
    notes_file = os.path.join(output, NOTES_FILE)
    notes = _read_notes(card_notes) if card_notes else (_read_notes(notes_file) if same_weights and
                                                        os.path.isfile(notes_file) else "")
    meta = packaged_metadata(meta, card=card, version=version, in_channels=in_channels, metrics=evaluation,
                             changelog=_changelog(meta, previous, version, changelog, name), class_names=class_names)
    files = {
        **vendored_files(text for f, text in configs.items() if f.endswith(".json")),
        **{f"configs/{f}": text for f, text in configs.items()},
        "configs/metadata.json": zoo_json(meta),
        RECORD_FILE: json.dumps(record, indent=2) + "\n",
        **({NOTES_FILE: notes + "\n"} if notes else {}),
        "docs/data_license.txt": "Data licence of the model weights in models/ (model.pt, model.ts, model.onnx)\n\n"
                                 f"Trained on: {dataset}\n\n{card['data_terms']}",
    }
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ReleaseError("ONNX export needs onnx and onnxruntime: pip install 'unext-monai[onnx]'") from e

    tmp = make_build_folder(output)
    try:
        for rel, text in files.items():
            _write(os.path.join(tmp, rel), text)
        shutil.copyfile(licence_file, os.path.join(tmp, "LICENSE"))
        config_file, meta_file = (os.path.join(tmp, "configs", f) for f in ("inference.json", "metadata.json"))
        pt_file, ts_file, onnx_file = (os.path.join(tmp, "models", f"model.{ext}") for ext in ("pt", "ts", "onnx"))
        with bundle_on_path(tmp):
            parser = ConfigParser()
            parser.read_config(config_file)
            parser.read_meta(meta_file)
            parser["bundle_root"] = tmp
            net = parser.get_parsed_content("network_def")
            try:
                net.load_state_dict(weights, strict=True)
            except RuntimeError as e:
                raise ReleaseError(f"{ckpt} does not fit inference.json's network_def: {e}") from None
            net.eval()
            os.makedirs(os.path.dirname(pt_file))
            torch.save(weights, pt_file)
            tool_args = dict(net_id="network_def", meta_file=meta_file, config_file=config_file, bundle_root=tmp)
            _tool(verify_net_in_out, **tool_args)  # the metadata's promise about shapes before any export
            _tool(ckpt_export, filepath=ts_file, ckpt_file=pt_file, **tool_args)
            ts = torch.jit.load(ts_file, map_location="cpu")
            ts_diff = _max_diff("model.ts", ts, net, in_channels, [(1, 256, 256), (2, 192, 256)], seed=0)
            export_onnx(net, onnx_file, in_channels=in_channels, spatial_dims=2, opset=OPSET)
            session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
            onnx_diff = _max_diff("model.onnx", lambda x: session.run(None, {"image": x.numpy()})[0], net, in_channels,
                                  [(1, 256, 256), (2, 192, 320)], seed=1)
            for key in ("preprocessing", "postprocessing", "inferer"):
                parser.get_parsed_content(key)
            if not os.path.isfile(os.path.join(parser.get_parsed_content("ckpt_dir"), "model.pt")):
                raise ReleaseError(f"inference.json's ckpt_dir does not hold the packaged model.pt ({pt_file})")
            n_params = sum(p.numel() for p in net.parameters())
        checks = {"date": datetime.date.today().isoformat(), "ts_diff": ts_diff, "onnx_diff": onnx_diff,
                  "opset": OPSET, "onnxruntime": ort.__version__, "zeroed": zeroed, "zeroed_below": NEGLIGIBLE_WEIGHT}
        with open(card_file, encoding="utf-8") as f:
            text = model_card(f.read(), meta, name=name, card=card, dataset=dataset, record=record, checks=checks,
                              train=training_config(configs_dir, dataset), n_params=n_params, notes=notes,
                              inference=json.loads(configs["inference.json"]))
        _write(os.path.join(tmp, "docs", "README.md"), text)
        try:
            replace_folder(tmp, output)
        except OSError as e:
            raise ReleaseError(f"could not put the release in place: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m unext_monai.release",
        description="Package the bundle into bundle/<name>/ (configs for one data set, scripts/, model.pt/.ts/.onnx, "
        "model card, licences), verified before it appears.",
    )
    ap.add_argument("--bundle_root", default=".", help="the repository's bundle folder (default: .)")
    ap.add_argument("--name", required=True, help="release folder name")
    ap.add_argument("--output", default=None, help="output folder (default: <bundle_root>/bundle/<name>)")
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: <bundle_root>/models/model.pt)")
    ap.add_argument("--dataset", default=None, choices=sorted(DATASET_CARDS),
                    help="training data set, or a variant of it (busi_classes for busi) (default: the one in "
                         "<train_dir>/split.json)")
    ap.add_argument("--dataset_card", dest="dataset_card_file", default=None,
                    help="JSON file with the card of a data set without a built-in one")
    ap.add_argument("--version", default=None, help="release version (default: the existing release's)")
    ap.add_argument("--changelog", default=None, help="changelog entry for this version")
    ap.add_argument("--train_dir", default=None,
                    help="training output folder with split.json and val_metrics.csv (default: <bundle_root>/eval)")
    ap.add_argument("--metrics", default=None, help="evaluation metrics.csv (or flat JSON) for eval_metrics")
    ap.add_argument("--card_notes", default=None,
                    help="markdown put as it is into the card's Performance section (tables, per-class scores); "
                         "default: the existing release's, for the same weights")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = ap.parse_args(argv)
    try:
        out = release(**vars(args))
    except ReleaseError as e:
        print("release: refused: " + re.sub(r"\s*\n\s*", " ", str(e)), file=sys.stderr)
        return 1
    print(f"release: wrote {out}")
    return 0
