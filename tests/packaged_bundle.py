"""Shared by test_release.py, test_monailabel_app.py and test_deploy_app.py (not a test module itself).

- :func:`packaged_bundle` / :func:`released_bundle`: the repository's bundle trained for one epoch on the built-in
  demo set (``python -m monai.bundle run training ... --max_epochs 1``) and packaged by
  ``python -m unext_monai.release``, both as the real commands in subprocesses; built once per pytest session however
  many modules ask for it (and, under pytest-xdist, however many workers: the first builds, the others wait for it
  and use it). With ``dataset="demo_classes"``, the two-class bundle: three epochs (learning rate 0.001)
  on the demo set's two-class variant (``configs/demo_classes.json``: brown, green), released with
  ``--dataset demo_classes`` and ``--card_notes``.
- :func:`integration_python`: the interpreter of one of the extra environments that ``.ci/label_env.sh`` and
  ``.ci/deploy_env.sh`` build, or a skip (a failure with ``UNEXT_REQUIRE_INTEGRATIONS=1``) saying how to build it.
- :func:`real_images`: a few real pictures from ``../shared/data`` (ISIC 2018 JPEG, BUSI PNG).
- :func:`bundle_on_path`: a packaged bundle's configs import its own ``scripts/`` (the model zoo's convention): run
  ``ConfigWorkflow``/``ConfigParser`` on one inside ``with bundle_on_path(bundle):``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unext_monai.bundle_scripts import bundle_on_path

__all__ = ["REPO", "BUNDLE_NAME", "CLASSES_BUNDLE_NAME", "run", "packaged_bundle", "released_bundle",
           "integration_python", "real_images", "bundle_on_path"]

REPO = Path(__file__).resolve().parents[1]
BUNDLE_NAME = "unext_demo"
CLASSES_BUNDLE_NAME = "unext_demo_classes"
_built: dict[str, dict] = {}


def run(cmd: list[str], cwd: Path | str | None = None, timeout: float = 900, env: dict | None = None) -> str:
    """Run a command; fail the test with the tail of its output when it exits non-zero."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    print(f"[{time.perf_counter() - start:.1f} s] {' '.join(map(str, cmd))}")
    return proc.stdout


def packaged_bundle(base: Path, dataset: str = "demo") -> dict:
    """Train on the demo set (``dataset`` ``demo``: one epoch; ``demo_classes``: its two-class variant, three epochs at
    a learning rate of 0.001, after which its label maps hold both classes) under ``base/train`` and release it to
    ``base/bundle/<name>``.

    Returns ``{"bundle": Path, "train_root": Path, "seconds": {"train": s, "release": s}}``; cached per session, and
    in ``base/built.json`` for other processes (call it under a lock, :func:`released_bundle`).
    """
    key, done = str(base), base / "built.json"
    if key in _built and _built[key]["bundle"].is_dir():
        return _built[key]
    if done.is_file():
        built = json.loads(done.read_text())
        _built[key] = {"bundle": Path(built["bundle"]), "train_root": Path(built["train_root"]),
                       "seconds": built["seconds"]}
        return _built[key]
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    train_root = base / "train"
    configs, name, what = [str(REPO / "configs" / "train.json")], BUNDLE_NAME, "one epoch on the demo set"
    train_args, dataset_args = ["--max_epochs", 1], []
    if dataset != "demo":  # the data set's overlay after train.json, as the release layers it; notes for the card
        configs.append(str(REPO / "configs" / f"{dataset}.json"))
        (base / "notes.md").write_text("#### Pixels by class (made-up numbers)\n\n| truth \\ predicted | background | "
                                       "brown | green |\n|---|---|---|---|\n| brown | 1 | 20 | 3 |\n")
        name, what = CLASSES_BUNDLE_NAME, f"three epochs on {dataset}"
        train_args = ["--max_epochs", 3, "--learning_rate", 0.001]
        dataset_args = ["--dataset", dataset, "--card_notes", base / "notes.md"]
    t0 = time.perf_counter()
    run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs[0] if len(configs) == 1
         else str(configs), "--meta_file", REPO / "configs" / "metadata.json", "--bundle_root", train_root,
         *train_args], cwd=base)
    t1 = time.perf_counter()
    bundle = base / "bundle" / name
    run([sys.executable, "-m", "unext_monai.release", "--bundle_root", REPO, "--name", name, *dataset_args,
         "--ckpt", train_root / "models" / "model.pt", "--train_dir", train_root / "eval", "--output", bundle,
         "--changelog", f"test release: {what}"], cwd=base)
    t2 = time.perf_counter()
    _built[key] = {"bundle": bundle, "train_root": train_root, "seconds": {"train": t1 - t0, "release": t2 - t1}}
    done.write_text(json.dumps({**_built[key], "bundle": str(bundle), "train_root": str(train_root)}))
    return _built[key]


def released_bundle(tmp_path_factory, dataset: str = "demo") -> dict:
    """:func:`packaged_bundle` in the session's base temporary folder, which pytest-xdist's workers share (one build
    per session); do not modify it."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root  # the workers' folders lie in the session's
    with open(root / f"packaged_{dataset}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return packaged_bundle(root / f"packaged_{dataset}", dataset)


def integration_python(env_var: str, venv: str, script: str, probe: str) -> str:
    """The python of ``$env_var`` or ``<repo>/<venv>`` when the env is complete; skip (or fail) otherwise."""
    python = os.environ.get(env_var) or str(REPO / venv / "bin" / "python")
    stamp = Path(python).parent.parent / ".unext-env-complete"
    problem = None
    if not os.path.isfile(python):
        problem = f"{python} not found"
    elif not os.environ.get(env_var) and not stamp.is_file():
        problem = f"{stamp} missing (the env is not completely built)"
    else:
        probe_run = subprocess.run([python, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if probe_run.returncode != 0:
            problem = f"{python} cannot run `{probe}`: {probe_run.stdout.strip().splitlines()[-1:]}"
    if problem:
        reason = f"integration env absent: {problem}; build it with `bash {script}` (or set {env_var})"
        if os.environ.get("UNEXT_REQUIRE_INTEGRATIONS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def real_images(shared_dir: Path, dest: Path, n_isic: int = 3, n_busi: int = 2) -> list[Path]:
    """Copy a few real pictures (the first ISIC 2018 JPEGs, the first benign BUSI PNGs) to ``dest``."""
    isic = sorted((shared_dir / "data" / "isic2018" / "ISIC2018_Task1-2_Training_Input").glob("ISIC_*.jpg"))[:n_isic]
    busi_dir = shared_dir / "data" / "busi" / "Dataset_BUSI_with_GT" / "benign"
    busi = [busi_dir / f"benign ({i}).png" for i in range(1, n_busi + 1)]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in [*isic, *busi]:
        if not src.is_file():
            pytest.skip(f"real data missing: {src}")
        out.append(Path(shutil.copy2(src, dest / src.name)))
    return out


def negligible_values(bundle: Path) -> dict[str, int]:
    """Per file of ``bundle/models``, the count of weight values below 1e-30 that are not 0."""
    import onnx
    import torch
    from onnx import numpy_helper

    from unext_monai.networks.weights import NEGLIGIBLE_WEIGHT

    def count(tensors) -> int:
        return sum(int(((t != 0) & (t.abs() < NEGLIGIBLE_WEIGHT)).sum()) for t in tensors if t.is_floating_point())

    graph = onnx.load(str(bundle / "models" / "model.onnx")).graph
    counts = {
        "model.pt": count(torch.load(bundle / "models" / "model.pt", weights_only=True).values()),
        "model.ts": count(torch.jit.load(str(bundle / "models" / "model.ts")).state_dict().values()),
        "model.onnx": count(torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer),
    }
    return {k: v for k, v in counts.items() if v}
