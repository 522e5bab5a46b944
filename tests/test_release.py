"""The release step: configs for one data set, the vendored scripts/, true metadata, the model card; and a bundle
trained one epoch on the demo set, packaged, and loaded back with monai.bundle (slow)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from packaged_bundle import (
    BUNDLE_NAME,
    REPO,
    bundle_on_path,
    negligible_values,
    real_images,
    released_bundle,
)
from PIL import Image

import unext_monai
import unext_monai.release.configs as release_configs
from unext_monai.io import umask_mode
from unext_monai.release import ReleaseError, training_record
from unext_monai.release import main as release_main
from unext_monai.release.card import model_card
from unext_monai.release.configs import (
    CARD_FIELDS,
    DATASET_CARDS,
    dataset_card,
    dataset_layers,
    packaged_classes,
    packaged_configs,
    packaged_metadata,
    training_config,
    zoo_json,
)
from unext_monai.release.vendor import vendored_files
from unext_monai.transforms import OVERLAY_COLOURS, write_segmentation

ZOO_SECTIONS = ["# Model Overview", "## Data", "## Training configuration", "### Input", "### Output",
                "## Performance", "## MONAI Bundle Commands", "## References", "## License"]


def _config_texts(folder: Path) -> list[str]:
    return [p.read_text() for p in sorted(folder.glob("*.json")) if p.name != "metadata.json"]


def _repo_meta() -> dict:
    return json.loads((REPO / "configs" / "metadata.json").read_text())


def _section(card: str, heading: str) -> str:
    """The text under ``heading`` of a model card, up to the next heading (``####`` command titles are text)."""
    return re.split(r"\n#{1,3} ", ("\n" + card).split(f"\n{heading}\n", 1)[1], maxsplit=1)[0]


def _unmarked(template: str) -> str:
    """The repository's card as a binary release states the sections that card.md repeats word for word."""
    return re.sub(r"<!-- /?release:\w+ -->\n", "", template)


# ---- fast: the pieces -------------------------------------------------------------------------------------------


def test_packaged_configs_are_the_zoo_configs_with_their_overlay_s_values():
    """The packaged configs are bundle_configs/'s, MONAI parts and the scripts copy only, with the data set's overlay
    values for the entries they define (augmentation, post-processing, classes) and nothing of its layout."""
    texts = packaged_configs(str(REPO / "configs"), "busi")
    assert sorted(texts) == ["evaluate.json", "inference.json", "logging.conf", "multi_gpu_train.json",
                             "train.json"]  # no overlay file of its own, nor the other data set's
    train, inference = json.loads(texts["train.json"]), json.loads(texts["inference.json"])
    overlay = json.loads((REPO / "configs" / "busi.json").read_text())
    assert train["max_epochs"] == overlay["max_epochs"] and "dataset_name" not in train and "split" not in train
    assert train["pretrained_checkpoint"] == "$@ckpt_dir + '/model.pt'"  # fine-tuning starts from the released weights
    assert train["train"]["random_transforms"] == overlay["train#random_transforms"]
    shared = [k for k in overlay if k in inference]
    assert "min_lesion_confidence" in shared and {k: inference[k] for k in shared} == {k: overlay[k] for k in shared}
    assert "max_epochs" not in inference
    targets = set()
    for name, text in texts.items():
        if name.endswith(".json"):
            assert "unext_monai" not in text and zoo_json(json.loads(text)) == text, name
            targets |= set(re.findall(r'"_target_": "([\w.]+)"', text))
    own = sorted(t for t in targets if t.startswith("scripts"))
    assert own == ["scripts.UNeXt", "scripts.inferers.EngineInferer", "scripts.transforms.LesionConfidenceGated",
                   "scripts.transforms.LoadMaskd", "scripts.transforms.SavePredictiond",
                   "scripts.transforms.ToModelChannelsd"]


def test_vendored_scripts_are_the_package_with_relative_imports():
    files = vendored_files(t for f, t in packaged_configs(str(REPO / "configs"), "isic2018").items()
                           if f.endswith(".json"))
    assert sorted(files) == ["scripts/__init__.py", "scripts/console.py", "scripts/inferers.py", "scripts/io.py",
                             "scripts/networks/__init__.py", "scripts/networks/blocks/__init__.py",
                             "scripts/networks/blocks/shifted_mlp.py", "scripts/networks/blocks/unext_blocks.py",
                             "scripts/networks/nets/__init__.py", "scripts/networks/nets/unext.py",
                             "scripts/transforms.py"]
    assert sum(text.count("\n") for text in files.values()) <= 1200
    for path, text in files.items():
        package = path.rpartition("/")[0].split("/")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.split(".")[0] in ("unext_monai", "scripts")], path
            elif isinstance(node, ast.ImportFrom) and node.level:  # every relative import is in the copy
                target = "/".join(package[: len(package) - node.level + 1] + (node.module or "").split("."))
                assert {f"{target.rstrip('/')}.py", f"{target.rstrip('/')}/__init__.py"} & set(files), (path, node)
            elif isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] not in ("unext_monai", "scripts"), path
        # the same file as the package's but for the import statements (and the package's first line)
        source = REPO / "unext_monai" / path[len("scripts/"):]
        if path == "scripts/__init__.py":
            header, _, text = text.partition("\n")
            assert header.startswith("# This package is generated from unext_monai")
        src_lines, lines = source.read_text().splitlines(), text.splitlines()
        assert len(src_lines) == len(lines)
        assert [a for a, b in zip(src_lines, lines) if a != b and "unext_monai" not in a] == []
    assert "from .io import NIFTI_SUFFIXES, file_stem, write_atomic" in files["scripts/transforms.py"]


def test_the_copy_imports_only_declared_packages():
    """The model zoo installs MONAI (with PyTorch and NumPy) and the packages metadata.json's
    required_packages_version lists: every other module the vendored code imports must come from one of them."""
    import importlib.metadata

    def dist(name: str) -> str:
        return name.lower().replace("_", "-")

    declared = {dist(d) for d in _repo_meta()["required_packages_version"]} | {"monai", "torch", "numpy"}
    owners = importlib.metadata.packages_distributions()
    texts = [t for f, t in packaged_configs(str(REPO / "configs"), "isic2018").items() if f.endswith(".json")]
    modules = set()
    for text in vendored_files(texts).values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    # the inference engines are optional: without them EngineInferer runs the network (tests/test_inferers.py)
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "onnxruntime", "openvino"}
    assert {"torch", "monai", "PIL", "scipy"} <= third_party
    undeclared = {m: owners.get(m, [m]) for m in third_party if not {dist(d) for d in owners.get(m, [m])} & declared}
    assert not undeclared


def test_packaged_metadata_states_installed_versions_and_the_data_set():
    import importlib.metadata

    meta = _repo_meta()
    card = DATASET_CARDS["busi"]
    out = packaged_metadata(meta, card=card, version="1.2.3", changelog={"1.2.3": "x"}, in_channels=1,
                            metrics={"val_mean_dice": 0.5})
    assert list(out)[: len(meta)] == list(meta)  # the zoo's key order
    assert out["required_packages_version"] == {d: importlib.metadata.version(d)
                                                for d in meta["required_packages_version"] if d != "unext-monai"}
    assert (out["name"], out["task"], out["data_source"]) == (card["name"], card["task"], card["data_source"])
    assert out["references"][1:] == card["references"] and out["eval_metrics"] == {"val_mean_dice": 0.5}
    image = out["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["channel_def"] == {"0": "gray"}
    with pytest.raises(ReleaseError):
        packaged_metadata({**meta, "required_packages_version": {"no-such-package-here": "1.0"}}, card=card,
                          version="1.2.3", changelog={"1.2.3": "x"}, in_channels=3, metrics=None)
    with pytest.raises(ReleaseError):
        packaged_metadata(meta, card=card, version="1.2", changelog={"1.2": "x"}, in_channels=3, metrics=None)


def test_packaged_metadata_states_the_classes():
    """One class name: the repository's binary output, named; K names: K+1 logits (background first) and a label map
    of the values 0..K after post-processing, in the repository's key order."""
    meta, card = _repo_meta(), DATASET_CARDS["busi"]
    args = dict(card=card, version="1.2.3", changelog={"1.2.3": "x"}, in_channels=3, metrics=None)
    binary = packaged_metadata(meta, **args)
    assert binary == packaged_metadata(meta, class_names=["lesion"], **args)
    assert binary["pred_classes"] == meta["pred_classes"]
    fmt = binary["network_data_format"]
    assert {k: fmt[k] for k in ("outputs", "post_processed_outputs")} == {
        k: meta["network_data_format"][k] for k in ("outputs", "post_processed_outputs")}
    named = packaged_metadata(meta, class_names=["tumour"], **args)["network_data_format"]
    assert named["outputs"]["pred"]["channel_def"] == named["post_processed_outputs"]["pred"]["channel_def"] == {
        "0": "tumour"}

    classes = packaged_metadata(meta, class_names=["benign", "malignant"], **args)
    assert list(classes) == list(binary) and list(classes["network_data_format"]) == list(fmt)
    pred, post = (classes["network_data_format"][k]["pred"] for k in ("outputs", "post_processed_outputs"))
    assert list(pred) == list(fmt["outputs"]["pred"]) and list(post) == list(fmt["post_processed_outputs"]["pred"])
    assert pred["num_channels"] == 3 and pred["value_range"] == []
    assert pred["channel_def"] == {"0": "background", "1": "benign", "2": "malignant"}
    assert post["num_channels"] == len(post["channel_def"]) == 1 and post["value_range"] == [0, 2]
    assert "softmax" in classes["pred_classes"] and "2 is malignant" in classes["pred_classes"]


def test_a_variant_layers_its_overlay_after_its_data_set_s():
    """busi_classes is BUSI labelled by diagnosis: busi.json's values with busi_classes.json's (class names, class
    key, its post-processing) on top; its card is BUSI's but for what it says itself. A variant's data set is
    a built-in one that is no variant itself, and every card resolves to the whole set of fields."""
    for name, entry in DATASET_CARDS.items():
        assert entry.get("variant_of") in (None, *[d for d, e in DATASET_CARDS.items() if "variant_of" not in e]), name
        assert set(CARD_FIELDS) <= set(dataset_card(name)) <= {*CARD_FIELDS, "references"}, name
    assert dataset_layers("busi_classes") == ["busi", "busi_classes"] and dataset_layers("busi") == ["busi"]
    classes, busi = (packaged_configs(str(REPO / "configs"), d) for d in ("busi_classes", "busi"))
    overlay = json.loads((REPO / "configs" / "busi_classes.json").read_text())
    assert (overlay["class_names"], overlay["class_key"]) == (["benign", "malignant"], "class")
    for name in ("train.json", "inference.json", "evaluate.json"):  # the overlay's values for the entries they define
        mine, base = json.loads(classes[name]), json.loads(busi[name])
        assert mine == {**base, **{k: v for k, v in overlay.items() if k in base}}, name
    assert [classes[f] == busi[f] for f in ("multi_gpu_train.json", "logging.conf")] == [True] * 2
    assert packaged_classes(classes) == ["benign", "malignant"] and packaged_classes(busi) == ["lesion"]
    card, busi_card = dataset_card("busi_classes"), dataset_card("busi")
    own = set(DATASET_CARDS["busi_classes"]) - {"variant_of"}
    assert {"name", "task", "description", "label_classes"} <= own
    assert {k: v for k, v in card.items() if k not in own} == {k: v for k, v in busi_card.items() if k not in own}
    assert all(card[k] != busi_card[k] for k in own)


def test_packaged_classes_must_agree():
    configs = packaged_configs(str(REPO / "configs"), "demo_classes")
    assert packaged_classes(configs) == ["brown", "green"]
    inference = json.loads(configs["inference.json"])
    with pytest.raises(ReleaseError, match="inference.json"):
        packaged_classes({**configs, "inference.json": json.dumps({**inference, "class_names": ["lesion"]})})


def test_the_card_names_the_overlay_colours(tmp_path):
    """The card's legend is the overlay's: each class value tinted with its colour (0.4 of it over a black picture),
    the colours repeating after the last, every outline yellow."""
    Image.fromarray(np.zeros((140, 160, 3), np.uint8)).save(tmp_path / "black.png")
    labels = np.zeros((140, 160), np.uint8)  # the legend of 6 classes takes the top 90 rows
    for value in range(1, 7):
        labels[110:130, 25 * value - 20:25 * value] = value
    write_segmentation(labels, str(tmp_path / "black.png"), str(tmp_path / "mask.png"), str(tmp_path / "overlay.png"),
                       class_names=[str(v) for v in range(1, 7)])
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    for value in range(1, 7):
        name, rgb = OVERLAY_COLOURS[(value - 1) % len(OVERLAY_COLOURS)]
        assert overlay[120, 25 * value - 10].tolist() == np.rint(0.4 * np.array(rgb)).tolist(), (value, name)
        assert overlay[110, 25 * value - 10].tolist() == [255, 255, 0]
    assert overlay[0, 0].tolist() == [0, 0, 0]


def _card(template: str, record: dict, zeroed: int = 0, metrics: dict | None = None,
          class_names: tuple[str, ...] = ("lesion",), notes: str = "") -> tuple[str, dict, dict]:
    meta = packaged_metadata(_repo_meta(), card=DATASET_CARDS["busi"], version="1.2.3", changelog={"1.2.3": "x"},
                             in_channels=3, metrics=metrics, class_names=class_names)
    train = training_config(str(REPO / "configs"), "busi")
    checks = {"date": "2030-01-02", "ts_diff": 1e-6, "onnx_diff": 2e-5, "opset": 18, "onnxruntime": "9.9",
              "zeroed": zeroed, "zeroed_below": 1e-30}
    card = model_card(template, meta, name="x", card=DATASET_CARDS["busi"], dataset="busi", train=train,
                      record=record, checks=checks, n_params=1234567, notes=notes)
    return card, meta, train


def test_model_card_has_the_zoo_sections_and_the_release_values():
    template = (REPO / "docs" / "README.md").read_text()
    record = {"split": {"dataset": "busi", "seed": 0, "n_training": 417, "n_selection": 5, "n_validation": 6},
              "epochs": 123, "best": {"epoch": 7, "val_mean_dice": 0.8123, "val_mean_iou": 0.7}}
    card, meta, train = _card(template, record, zeroed=321, metrics={"val_mean_dice": 0.6543, "n_images": 6})
    positions = [card.index(h + "\n") for h in ZOO_SECTIONS]
    assert positions == sorted(positions)
    assert "<!--" not in card and not re.search(r"{\w+[^}]*}", card)  # every field filled
    assert not [line for line in card.splitlines() if line != line.rstrip()]
    assert _section(card, "## Intended use and limits") == _section(_unmarked(template), "## Intended use and limits")
    assert DATASET_CARDS["busi"]["layout"] in _section(card, "## Data")
    assert "417" in _section(card, "## Data") and "123" in _section(card, "## Training configuration")
    assert f"`{train['max_epochs']}`" in _section(card, "## Training configuration")
    performance = _section(card, "## Performance")
    for value in ("0.8123", "0.6543", "2030-01-02", "2.0e-05", "321", "9.9"):
        assert value in performance, value
    for reference in meta["references"]:
        assert reference in _section(card, "## References")
    assert "1,234,567" in _section(card, "# Model Overview")
    commands = _section(card, "## MONAI Bundle Commands")
    for command in ("configs/train.json --datalist", "configs/multi_gpu_train.json", "configs/evaluate.json",
                    "configs/inference.json --input_path", "ckpt_export network_def", "verify_net_in_out"):
        assert command in commands, command
    unmarked = template.replace("<!-- release:data -->\n", "", 1).replace("<!-- /release:data -->\n", "", 1)
    with pytest.raises(ReleaseError):
        _card(unmarked, record)


def test_model_card_of_classes_and_its_notes():
    """K classes: the output section says softmax, argmax and the label map's values with their overlay colours, the
    limits name the classes; the notes stand as written (braces too) in the Performance section, before the checks."""
    template = (REPO / "docs" / "README.md").read_text()
    notes = ("#### Confusion on the validation part (pixels)\n\n| truth \\ predicted | background | benign | "
             "malignant |\n|---|---|---|---|\n| benign | 9 | 80 | 11 |\n\nDice: {benign} 0.81, {malignant} 0.65")
    card, _, _ = _card(template, {}, class_names=("benign", "malignant"), notes=notes)
    positions = [card.index(h + "\n") for h in ZOO_SECTIONS]
    assert positions == sorted(positions) and "<!--" not in card
    output = _section(card, "### Output")
    for row in ("| 0 | background |", "| 1 | benign | red |", "| 2 | malignant | blue |"):
        assert row in output, row
    assert "(3, 256, 256)" in output and "softmax" in output and "argmax" in output and "sigmoid" not in output
    assert "2 classes (benign, malignant)" in _section(card, "## Intended use and limits")
    performance = _section(card, "## Performance")
    assert notes in performance and performance.index(notes) < performance.index("Checked at release")
    binary, _, _ = _card(template, {})
    assert _section(binary, "### Output") == _section(_card(template, {}, notes="")[0], "### Output")
    assert "sigmoid" in _section(binary, "### Output") and "| 1 |" not in binary


def test_zoo_json_is_what_the_zoo_pre_commit_leaves():
    meta = (REPO / "configs" / "metadata.json").read_text()
    assert zoo_json(json.loads(meta)) == meta
    expected = '{\n    "a": [\n        1,\n        2\n    ],\n    "b": "\\u2013"\n}\n'
    assert zoo_json({"a": [1, 2], "b": "\u2013"}) == expected


def test_repository_metadata_is_true():
    meta = json.loads((REPO / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    for part in ("inputs", "outputs", "post_processed_outputs"):
        for tensor in fmt[part].values():
            assert len(tensor["channel_def"]) == tensor["num_channels"]
    assert fmt["outputs"]["pred"]["value_range"] == []  # logits: unbounded
    assert fmt["post_processed_outputs"]["pred"]["value_range"] == [0, 1]


# ---- slow: a real release ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return released_bundle(tmp_path_factory)


@pytest.mark.slow
def test_release_layout_and_metadata(released):
    bundle = released["bundle"]
    print(f"trained in {released['seconds']['train']:.1f} s, released in {released['seconds']['release']:.1f} s")
    for rel in ["configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                "configs/logging.conf", "models/model.pt", "models/model.ts", "models/model.onnx",
                "docs/README.md", "docs/data_license.txt", "LICENSE", "scripts/__init__.py"]:
        assert (bundle / rel).is_file(), rel
    assert not list(bundle.parent.glob(f".{BUNDLE_NAME}.*")), "temporary build folders left behind"
    assert stat.S_IMODE(bundle.stat().st_mode) == umask_mode(0o777), "not a plain folder's permissions"
    assert not [p.name for p in (bundle / "configs").iterdir() if p.stem in ("isic2018", "busi", "demo")]
    assert (bundle / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] == json.loads((REPO / "configs" / "metadata.json").read_text())["version"]
    assert list(meta["changelog"])[0] == meta["version"]
    assert meta["changelog"][meta["version"]] == "test release: one epoch on the demo set"
    assert "unext-monai" not in meta["required_packages_version"]
    assert meta["name"] == "UNeXt lesion segmentation (synthetic demo weights)"
    assert meta["monai_version"] == __import__("monai").__version__
    for path in (bundle / "configs").glob("*.json"):
        assert zoo_json(json.loads(path.read_text())) == path.read_text(), path.name
        assert path.name == "metadata.json" or "unext_monai" not in path.read_text(), path.name
    # the copy of the code is what the package gives today
    shipped = {str(p.relative_to(bundle)): p.read_text() for p in (bundle / "scripts").rglob("*.py")}
    assert shipped == vendored_files(_config_texts(bundle / "configs"))
    # model.pt is a plain state dict that loads strictly into the packaged network_def
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    unext_monai.UNeXt(spatial_dims=2, in_channels=3, out_channels=1).load_state_dict(state, strict=True)


@pytest.mark.slow
def test_model_card_and_licences(released):
    """The card states this release's recipe, record and checks; the data licence is the data set's terms."""
    bundle = released["bundle"]
    card = (bundle / "docs" / "README.md").read_text()
    positions = [card.index(h + "\n") for h in ZOO_SECTIONS]
    assert positions == sorted(positions)
    assert "<!--" not in card and not [line for line in card.splitlines() if line != line.rstrip()]
    template = (REPO / "docs" / "README.md").read_text()
    assert _section(card, "## Intended use and limits") == _section(_unmarked(template), "## Intended use and limits")
    train = json.loads((bundle / "configs" / "train.json").read_text())
    assert f"`{train['learning_rate']}`" in _section(card, "## Training configuration")
    record = json.loads((bundle / "docs" / "training_record.json").read_text())
    assert f"{record['best']['val_mean_dice']:.4f}" in _section(card, "## Performance")
    assert str(record["split"]["n_training"]) in _section(card, "## Data")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in _section(card, "# Model Overview")
    assert (bundle / "docs" / "data_license.txt").read_text().endswith(DATASET_CARDS["demo"]["data_terms"])


@pytest.mark.slow
def test_model_ts_embeds_configs_and_matches_pytorch(released):
    bundle = released["bundle"]
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(
        (bundle / "configs" / "metadata.json").read_text())["version"]
    assert json.loads(extra["inference.json"]) == json.loads((bundle / "configs" / "inference.json").read_text())
    from monai.bundle import load

    with bundle_on_path(bundle):
        net = load(BUNDLE_NAME, bundle_dir=str(bundle.parent), workflow_type="inference", device="cpu").eval()
        x = torch.rand(2, 3, 256, 256)
        with torch.no_grad():
            assert torch.allclose(ts(x), net(x), atol=1e-4)


@pytest.mark.slow
def test_model_onnx_matches_pytorch(released):
    import onnxruntime as ort

    bundle = released["bundle"]
    ts = torch.jit.load(str(bundle / "models" / "model.ts"))
    session = ort.InferenceSession(str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 256, 256), (3, 3, 160, 224)]:
        x = torch.rand(*shape)
        (out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            diff = np.abs(out - ts(x).numpy()).max()
        print(f"ONNX Runtime vs PyTorch {shape}: max abs diff {diff:.2e}")
        assert diff < 1e-4


@pytest.mark.slow
def test_packaged_inference_config_runs_on_real_images(released, shared_dir, tmp_path):
    """The packaged inference.json, run as a ConfigWorkflow with the bundle's scripts/, writes a mask per picture at
    the picture's size."""
    from monai.bundle import ConfigWorkflow

    bundle = released["bundle"]
    images = real_images(shared_dir, tmp_path / "in", n_isic=2, n_busi=1)
    out = tmp_path / "out"
    with bundle_on_path(bundle):
        wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="inference",
                            bundle_root=str(bundle), dataset_dir=str(tmp_path / "in"), output_dir=str(out))
        wf.initialize()
        wf.run()
        wf.finalize()
    for img in images:
        mask = Image.open(out / f"{img.stem}_mask.png")
        assert mask.size == Image.open(img).size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


@pytest.fixture(scope="module")
def released_classes(tmp_path_factory):
    return released_bundle(tmp_path_factory, "demo_classes")


@pytest.mark.slow
def test_release_of_classes(released_classes, tmp_path):
    """The two-class demo bundle (trained with configs/demo_classes.json, released with --dataset demo_classes though
    its split.json says demo): metadata, configs, network and card per class, and its notes; its inference writes
    label maps of the class values."""
    from monai.bundle import ConfigWorkflow

    bundle = released_classes["bundle"]
    print(f"trained in {released_classes['seconds']['train']:.1f} s, released in "
          f"{released_classes['seconds']['release']:.1f} s")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    pred, post = (meta["network_data_format"][k]["pred"] for k in ("outputs", "post_processed_outputs"))
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "background", "1": "brown", "2": "green"}
    assert post["num_channels"] == 1 and post["value_range"] == [0, 2]
    assert {k: meta[k] for k in ("name", "label_classes")} == {k: DATASET_CARDS["demo_classes"][k]
                                                               for k in ("name", "label_classes")}
    for name in ("train.json", "inference.json"):
        assert json.loads((bundle / "configs" / name).read_text())["class_names"] == ["brown", "green"], name
    assert json.loads((bundle / "docs" / "training_record.json").read_text())["split"]["dataset"] == "demo"
    assert (bundle / "docs" / "data_license.txt").read_text().endswith(DATASET_CARDS["demo"]["data_terms"])
    with torch.no_grad():
        assert torch.jit.load(str(bundle / "models" / "model.ts"))(torch.rand(1, 3, 256, 256)).shape == (1, 3, 256, 256)
    card = (bundle / "docs" / "README.md").read_text()
    assert "| 2 | green | blue |" in _section(card, "### Output")
    assert (bundle / "docs" / "card_notes.md").read_text().strip() in _section(card, "## Performance")

    demo = sorted((released_classes["train_root"] / "eval" / "demo_data_2_classes" / "images").glob("*.png"))[:2]
    (tmp_path / "in").mkdir()
    images = [Path(shutil.copy(image, tmp_path / "in" / image.name)) for image in demo]
    with bundle_on_path(bundle):
        wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="inference",
                            bundle_root=str(bundle), input_path=str(tmp_path / "in"), output_dir=str(tmp_path / "out"))
        wf.initialize()
        wf.run()
        wf.finalize()
    values = set()
    for image in images:
        labels = np.asarray(Image.open(tmp_path / "out" / f"{image.stem}_mask.png"))
        assert labels.shape == np.asarray(Image.open(image)).shape[:2]
        assert (tmp_path / "out" / f"{image.stem}_overlay.png").is_file()
        values |= set(np.unique(labels).tolist())
    assert values == {0, 1, 2}


@pytest.mark.slow
def test_release_refuses_class_weights_with_binary_configs(released_classes, tmp_path, capsys):
    """Weights trained for brown and green (their val_metrics.csv scores each) released as the demo set's binary
    bundle: refused, naming the variant whose configs fit them."""
    out = tmp_path / "x"
    message = _release_refused(["--bundle_root", REPO, "--name", "x", "--output", out, "--ckpt",
                                released_classes["bundle"] / "models" / "model.pt", "--train_dir",
                                released_classes["train_root"] / "eval"], capsys)
    assert "['brown', 'green']" in message.splitlines()[-1] and "demo_classes" in message.splitlines()[-1]
    assert not out.exists()


def _source_copy(tmp_path, edit=None):
    """A copy of the repository's bundle sources (configs, the card template, LICENSE) to edit."""
    root = tmp_path / "src_bundle"
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "docs").mkdir()
    shutil.copy(REPO / "docs" / "README.md", root / "docs" / "README.md")
    shutil.copy(REPO / "LICENSE", root / "LICENSE")
    if edit:
        edit(root)
    return root


def _release_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "unext_monai.release", *map(str, args)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _release_refused(args, capsys) -> str:
    """Run the release command line in this process (a refusal needs no fresh one); its message, which it must give
    with exit status 1."""
    capsys.readouterr()
    assert release_main([str(a) for a in args]) == 1
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.slow
def test_release_of_a_grayscale_network_trained_with_deep_supervision(tmp_path):
    """in_channels 1 in the configs and a one-channel training checkpoint with deep-supervision heads: every check
    runs with one-channel inputs; the release holds inference.json's network (no heads), which its train.json
    fine-tunes. Its weight values below 1e-30 (units that weight
    decay switched off) are 0 in the packaged files, and the card says how many there were."""

    def gray_deep(root):
        for name in ("train.json", "inference.json"):
            config = json.loads((root / "configs" / name).read_text())
            config["in_channels"] = 1
            if name == "train.json":
                config["deep_supervision"] = True
            (root / "configs" / name).write_text(json.dumps(config))

    root = _source_copy(tmp_path, gray_deep)
    torch.manual_seed(0)
    trained = unext_monai.UNeXt(2, 1, 1, deep_supervision=True)
    with torch.no_grad():
        trained.up_4.block.mlp.fc1.weight[:2] = 1e-36
        trained.up_4.conv_up.conv.weight[:3] = 1e-15  # BatchNorm folded into this convolution (ONNX): 1e-35
        trained.up_4.conv_up.norm.weight[:3] = 1e-20
    torch.save({"model": trained.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    out = tmp_path / "bundle" / "gray"
    proc = _release_cli(["--bundle_root", root, "--name", "gray", "--output", out, "--ckpt", tmp_path / "checkpoint.pt",
                         "--dataset", "busi", "--train_dir", tmp_path / "none"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    image = json.loads((out / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["channel_def"] == {"0": "gray"}
    ts = torch.jit.load(str(out / "models" / "model.ts"))
    assert ts(torch.rand(1, 1, 256, 256)).shape == (1, 1, 256, 256)

    released = torch.load(out / "models" / "model.pt", weights_only=True)
    assert not [k for k in released if k.startswith("heads.")]
    assert torch.equal(released["final_conv.weight"], trained.final_conv.weight)
    fc1 = released["up_4.block.mlp.fc1.weight"]
    assert not fc1[:2].any() and torch.equal(fc1[2:], trained.up_4.block.mlp.fc1.weight[2:])
    assert str(fc1[:2].numel()) in _section((out / "docs" / "README.md").read_text(), "## Performance")
    assert not negligible_values(out)
    packaged = json.loads((out / "configs" / "train.json").read_text())
    assert packaged["in_channels"] == 1 and "deep_supervision" not in packaged["network_def"]  # fine-tunes headless


@pytest.mark.slow
@pytest.mark.parametrize("check", ["verify_net_in_out", "ckpt_dir"])
def test_release_refuses_a_bundle_failing_its_checks(released, tmp_path, capsys, monkeypatch, check):
    """metadata.json promising 2 output channels for a 1-channel network fails verify_net_in_out; a packaged
    inference.json whose ckpt_dir is not the packaged models/ would run without the released weights: refused,
    nothing appears."""

    def edit(root):
        if check == "verify_net_in_out":
            meta = json.loads((root / "configs" / "metadata.json").read_text())
            meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 2
            (root / "configs" / "metadata.json").write_text(json.dumps(meta))
        else:
            templates = Path(shutil.copytree(release_configs.BUNDLE_CONFIGS, tmp_path / "bundle_configs"))
            inference = json.loads((templates / "inference.json").read_text())
            inference["ckpt_dir"] = "$@bundle_root + '/elsewhere'"
            (templates / "inference.json").write_text(json.dumps(inference))
            monkeypatch.setattr(release_configs, "BUNDLE_CONFIGS", str(templates))

    root = _source_copy(tmp_path, edit)
    out = tmp_path / "bundle" / "bad"
    message = _release_refused(["--bundle_root", root, "--name", "bad", "--output", out,
                                "--ckpt", released["bundle"] / "models" / "model.pt",
                                "--train_dir", released["train_root"] / "eval"], capsys)
    assert check in message.splitlines()[-1], message[-600:]
    assert not out.exists() and not list(out.parent.iterdir())


@pytest.mark.slow
def test_release_refuses_mismatched_checkpoint_and_existing_output(released, tmp_path, capsys):
    ckpt = tmp_path / "other.pt"
    torch.save(unext_monai.UNeXt(2, 3, 2).state_dict(), ckpt)  # two output channels
    out = tmp_path / "bundle" / "x"
    message = _release_refused(["--bundle_root", REPO, "--name", "x", "--output", out, "--ckpt", ckpt,
                                "--train_dir", released["train_root"] / "eval"], capsys)
    assert str(ckpt) in message.splitlines()[-1]
    assert not out.exists() and not list(out.parent.iterdir())
    before = _files(released["bundle"])
    message = _release_refused(["--bundle_root", REPO, "--name", BUNDLE_NAME, "--output", released["bundle"],
                                "--ckpt", released["bundle"] / "models" / "model.pt"], capsys)
    assert str(released["bundle"]) in message.splitlines()[-1] and _files(released["bundle"]) == before


@pytest.mark.slow
def test_release_with_metrics_and_card_file_refuses_a_reused_version(released, tmp_path, capsys):
    """Unknown training data needs a data set card; --metrics fills eval_metrics; a re-release over an existing
    bundle refuses to reuse its version for other text."""
    ckpt = released["bundle"] / "models" / "model.pt"
    out = tmp_path / "bundle" / "y"
    base = ["--bundle_root", REPO, "--name", "y", "--output", out, "--ckpt", ckpt, "--train_dir", tmp_path / "none"]
    assert "--dataset_card" in _release_refused(base, capsys).splitlines()[-1] and not out.exists()
    card = {"name": "UNeXt on X", "task": "segment X", "description": "UNeXt trained on X.", "data_source": "X",
            "data_type": "png", "image_classes": "RGB", "label_classes": "0/255", "layout": "`images/`",
            "data_terms": "Private data set X, internal use only.\n"}
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "eval").mkdir()
    metrics = tmp_path / "eval" / "metrics.csv"  # as evaluate.json's MetricsSaver writes it
    metrics.write_text("val_mean_dice,0.81\nval_mean_iou,0.7\nval_hd95,nan\n")
    (tmp_path / "eval" / "val_mean_dice_raw.csv").write_text("filename,class0,mean\na.png,0.8,0.8\nb.png,0.82,0.82\n")
    proc = _release_cli([*base, "--dataset_card", tmp_path / "card.json", "--version", "0.2.0", "--changelog",
                         "first X", "--metrics", metrics], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "internal use only" in (out / "docs" / "data_license.txt").read_text()
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["name"] == "UNeXt on X" and meta["eval_metrics"] == {"val_mean_dice": 0.81, "val_mean_iou": 0.7,
                                                                      "n_images": 2}
    assert "0.8100" in _section((out / "docs" / "README.md").read_text(), "## Performance")
    again = [*base, "--dataset_card", tmp_path / "card.json", "--overwrite"]
    message = _release_refused([*again, "--version", "0.2.0", "--changelog", "other text"], capsys)
    assert "0.2.0" in message.splitlines()[-1]
    assert json.loads((out / "configs" / "metadata.json").read_text()) == meta  # the release refused stands


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["the bundle root", "its parent", "the checkpoint's folder", "in the training folder",
                                   "the bundle root's configs"])
def test_release_refuses_an_output_over_what_it_is_made_from(tmp_path, capsys, where):
    """--overwrite replaces the output whole: an output that is, holds or lies in the bundle root (but for its
    bundle/ folder of releases), the training run or the checkpoint's folder would take them (in a repository: .git)
    with it."""
    root = _source_copy(tmp_path)
    (root / "models").mkdir()
    torch.save(unext_monai.UNeXt(2, 3, 1).state_dict(), root / "models" / "model.pt")
    (root / "eval").mkdir()
    (root / "eval" / "val_metrics.csv").write_text("epoch,val_mean_dice\n1,0.5\n")
    (root / "bundle" / "earlier").mkdir(parents=True)
    (root / "bundle" / "earlier" / "notes.txt").write_text("an earlier release")
    output = {"the bundle root": root, "its parent": tmp_path, "the checkpoint's folder": root / "models",
              "in the training folder": root / "eval" / "release", "the bundle root's configs": root / "configs"}[where]
    before = _files(tmp_path)
    message = _release_refused(["--bundle_root", root, "--name", "x", "--output", output, "--dataset", "demo",
                                "--overwrite"], capsys)
    assert f"--output {output}" in message.splitlines()[-1]
    assert _files(tmp_path) == before


@pytest.mark.parametrize("bad", ["name", "version", "dataset", "variant", "card", "notes", "notes heading"])
def test_release_refuses_bad_input_naming_it(tmp_path, capsys, bad):
    """A name that is no folder name, a version that is not MAJOR.MINOR.PATCH, a --dataset that the training record
    contradicts (the card and the data licence would be another data set's), also a variant of another data set, a data
    set card with missing fields, card notes that cannot be read or have a heading of the card's own levels: exit
    status 1, the last line names the input, nothing is written."""
    torch.save(unext_monai.UNeXt(2, 3, 1).state_dict(), tmp_path / "model.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "split.json").write_text(json.dumps({"meta": {"dataset": "demo"}, "training": []}))
    (tmp_path / "card.json").write_text(json.dumps({"name": "X", "task": "x"}))
    (tmp_path / "heading.md").write_text("Scores per class:\n\n## Results\n")
    args = {"--bundle_root": REPO, "--name": "x", "--output": tmp_path / "out" / "x", "--ckpt": tmp_path / "model.pt",
            "--train_dir": tmp_path / "run", "--version": "1.0.0"}
    option, value, named = {"name": ("--name", "../x", "../x"), "version": ("--version", "1.0", "'1.0'"),
                            "dataset": ("--dataset", "busi", str(tmp_path / "run")),
                            "variant": ("--dataset", "busi_classes", str(tmp_path / "run")),
                            "card": ("--dataset_card", tmp_path / "card.json", str(tmp_path / "card.json")),
                            "notes": ("--card_notes", tmp_path / "none.md", str(tmp_path / "none.md")),
                            "notes heading": ("--card_notes", tmp_path / "heading.md",
                                              str(tmp_path / "heading.md"))}[bad]
    message = _release_refused([str(a) for kv in {**args, option: value}.items() for a in kv], capsys)
    assert named in message.splitlines()[-1]
    assert not list((tmp_path / "out").glob("**/*"))


def test_release_names_the_file_it_cannot_read(tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    torch.save(unext_monai.UNeXt(2, 3, 1).state_dict(), tmp_path / "weights" / "model.pt")
    (tmp_path / "files").mkdir()
    passwd = tmp_path / "files" / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    base = ["--bundle_root", REPO, "--name", "x", "--output", tmp_path / "out", "--dataset", "demo",
            "--train_dir", tmp_path / "none"]
    message = _release_refused([*base, "--ckpt", tmp_path / "weights" / "model.pt", "--metrics", passwd], capsys)
    assert str(passwd) in message.splitlines()[-1]
    message = _release_refused([*base, "--ckpt", passwd], capsys)
    assert str(passwd) in message.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_training_record_names_the_released_epoch(tmp_path):
    """The card states the selection row of the weights released: the best row."""
    (tmp_path / "val_metrics.csv").write_text("epoch,val_mean_dice,val_mean_iou\n1,0.5,0.4\n2,0.8,0.7\n3,0.7,0.6\n")
    (tmp_path / "split.json").write_text(json.dumps({"meta": {"dataset": "busi", "seed": 3}, "training": [{}] * 4,
                                                     "selection": [{}] * 2, "validation": [{}]}))
    record = training_record(str(tmp_path))
    assert record["best"] == {"epoch": 2, "val_mean_dice": 0.8, "val_mean_iou": 0.7} and record["epochs"] == 3
    assert record["split"] == {"dataset": "busi", "seed": 3, "n_training": 4, "n_selection": 2, "n_validation": 1}


@pytest.mark.slow
def test_re_release_of_the_same_weights_keeps_the_training_record(released, tmp_path, dead_pid, capsys):
    """New scripts for released weights whose training run is gone (no --train_dir): the card still says how they
    were trained, read back from the existing release's docs/training_record.json, and its notes (--card_notes of an
    earlier release, docs/card_notes.md) stand; the changelog gains the new version on top of the older entries. The
    existing release here is one whose last replacement was killed between its two renames (it lies aside in a dead
    process's ``.old-`` folder): it is put back before the release looks at the output, so it is refused without
    --overwrite and its changelog is kept with it."""
    out = tmp_path / "bundle" / BUNDLE_NAME
    aside = tmp_path / "bundle" / f".{BUNDLE_NAME}.old-{dead_pid}-abc"
    shutil.copytree(released["bundle"], aside / BUNDLE_NAME)
    notes = "| class | Dice |\n|---|---|\n| lesion | 0.1234 |"
    (aside / BUNDLE_NAME / "docs" / "card_notes.md").write_text(notes + "\n")
    args = ["--bundle_root", REPO, "--name", BUNDLE_NAME, "--output", out, "--ckpt",
            released["bundle"] / "models" / "model.pt", "--version", "9.9.9", "--changelog", "scripts regenerated"]
    assert str(out) in _release_refused(args, capsys).splitlines()[-1]
    assert not aside.exists() and (out / "models" / "model.pt").is_file()
    record = json.loads((out / "docs" / "training_record.json").read_text())
    assert record["epochs"] == 1 and record["split"]["dataset"] == "demo" and record["best"]["epoch"] == 1
    old_card = (out / "docs" / "README.md").read_text()
    old_log = json.loads((out / "configs" / "metadata.json").read_text())["changelog"]
    proc = _release_cli([*args, "--overwrite"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert json.loads((out / "docs" / "training_record.json").read_text()) == record
    card = (out / "docs" / "README.md").read_text()
    for heading in ("## Data", "## Training configuration"):
        assert _section(card, heading) == _section(old_card, heading), heading
    assert str(record["split"]["n_training"]) in _section(card, "## Data")
    assert f"{record['best']['val_mean_dice']:.4f}" in _section(card, "## Performance")
    assert notes in _section(card, "## Performance") and (out / "docs" / "card_notes.md").read_text() == notes + "\n"
    log = json.loads((out / "configs" / "metadata.json").read_text())["changelog"]
    assert list(log.items()) == [("9.9.9", "scripts regenerated"), *old_log.items()]
