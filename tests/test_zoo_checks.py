"""The MONAI model zoo's checks on each packaged bundle under bundle/, in an environment with MONAI and the bundle's
listed packages only (no unext_monai): directory, version, metadata against the zoo's schema, no side effects of
loading, verify_net_in_out, TorchScript export, and the zoo's train / train+evaluate / infer workflow checks
overriding only dataset_dir, max_epochs and num_workers; and on the two-class demo bundle the tests release. The checks
themselves are in tests/zoo_checks.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaged_bundle import REPO, integration_python, released_bundle

pytestmark = pytest.mark.slow

BUNDLES = sorted(p.name for p in (REPO / "bundle").iterdir() if (p / "configs" / "metadata.json").is_file())
CHECKS = ["directory", "version", "metadata", "no_side_effects", "net_in_out", "torchscript", "train", "evaluate",
          "infer"]


@pytest.fixture(scope="module")
def zoo_python() -> str:
    return integration_python("UNEXT_ZOO_PYTHON", ".venv-zoo", ".ci/zoo_env.sh",
                              "import monai.bundle, jsonschema, fire")


def _zoo_checks(python: str, bundle: Path, shared_dir: Path, tmp_path: Path) -> None:
    schema = shared_dir / "zoo" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip(f"the zoo's metadata schema is not in {schema}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, str(REPO / "tests" / "zoo_checks.py"), str(bundle), "--schema", str(schema),
                           "--work", str(tmp_path / "work")],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900)
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASS ")]
    print("\n".join(passed))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [line.split()[1].rstrip(":") for line in passed] == CHECKS
    assert not list(bundle.glob("eval")) + list(bundle.glob("runs")), "the checks wrote into the bundle they check"


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_passes_the_zoo_checks_without_unext_monai(name, zoo_python, shared_dir, tmp_path):
    _zoo_checks(zoo_python, REPO / "bundle" / name, shared_dir, tmp_path)


def test_bundle_of_classes_passes_the_zoo_checks(zoo_python, shared_dir, tmp_path, tmp_path_factory):
    """The two-class demo bundle: its label maps of class values train, evaluate and infer in the zoo's checks."""
    _zoo_checks(zoo_python, released_bundle(tmp_path_factory, "demo_classes")["bundle"], shared_dir, tmp_path)


def test_zoo_checks_refuse_an_environment_with_unext_monai(tmp_path):
    """The script stops where unext_monai can be imported (here, the development environment): its passes prove
    nothing there."""
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "zoo_checks.py"), str(REPO / "bundle" / BUNDLES[0]),
                           "--schema", "unused", "--work", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert proc.returncode != 0 and "unext_monai is importable here" in proc.stdout
    assert not Path(tmp_path / "bundles").exists()
