"""A bundle's ``scripts``: its own copy beside its model, the installed package's for a model.ts on its own."""

from __future__ import annotations

import importlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from monai.bundle import ConfigParser

import unext_monai.transforms
from unext_monai.bundle_scripts import bundle_folder_of, bundle_on_path, bundle_scripts, scripts_from_package


def _bundle(root: Path, marker: str) -> Path:
    (root / "scripts").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "scripts" / "__init__.py").write_text(f"MARKER = {marker!r}\n")
    (root / "scripts" / "transforms.py").write_text("def read_picture(path):\n    return 'copy'\n")
    (root / "models" / "model.ts").write_bytes(b"")
    return root


def test_bundle_on_path_imports_that_bundles_scripts_only(tmp_path: Path) -> None:
    one, two = _bundle(tmp_path / "one", "one"), _bundle(tmp_path / "two", "two")
    with bundle_on_path(one):
        assert importlib.import_module("scripts").MARKER == "one"
    with bundle_on_path(two):  # not the first bundle's, imported before
        assert importlib.import_module("scripts").MARKER == "two"
    assert str(two) not in sys.path


def test_scripts_from_package_serves_the_installed_modules() -> None:
    with scripts_from_package():
        import scripts.transforms  # noqa: F401  (the name a bundle's configs use)

        assert sys.modules["scripts.transforms"] is unext_monai.transforms
        config = {"imports": ["$import scripts", "$import scripts.transforms"],
                  "r": "$scripts.transforms.read_picture"}
        reader = ConfigParser(config).get_parsed_content("r")
        assert reader is unext_monai.transforms.read_picture


def test_bundle_scripts_prefers_the_bundles_own_copy(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", "own")
    assert bundle_folder_of(bundle / "models" / "model.ts") == bundle
    with bundle_scripts(bundle / "models" / "model.ts"):
        assert importlib.import_module("scripts.transforms").read_picture(None) == "copy"

    alone = tmp_path / "packaged" / "unext" / "model.ts"  # a MONAI Application Package's models/<name>/model.ts
    alone.parent.mkdir(parents=True)
    alone.write_bytes(b"")
    assert bundle_folder_of(alone) is None
    with bundle_scripts(alone):
        assert importlib.import_module("scripts.transforms") is unext_monai.transforms


def test_bundle_on_path_in_threads(tmp_path: Path) -> None:
    """MONAI Label's epistemic scoring runs infer tasks in threads: each block sees its bundle's scripts whole."""
    bundles = [_bundle(tmp_path / f"b{i}", f"b{i}") for i in range(4)]

    def parse(i: int) -> str:
        with bundle_on_path(bundles[i % 4]):
            importlib.import_module("scripts.transforms")
            return importlib.import_module("scripts").MARKER

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(parse, range(32))) == [f"b{i % 4}" for i in range(32)]


def test_the_aliased_modules_keep_their_own_identity() -> None:
    with scripts_from_package():
        importlib.import_module("scripts.transforms")
    spec = unext_monai.transforms.__spec__
    assert spec.name == "unext_monai.transforms" and spec.origin == unext_monai.transforms.__file__
