"""The MONAI Label app (unext_monai/monailabel_app) with the real monailabel 0.8.5, in the env .ci/label_env.sh builds:
its tasks in-process (a subprocess of that env's python), then the real server on 127.0.0.1 over HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from packaged_bundle import BUNDLE_NAME, integration_python, released_bundle, run
from PIL import Image

pytestmark = pytest.mark.slow

PROBE = "import monailabel.main, monailabel.transform.post, monailabel.tasks.infer.bundle, unext_monai"
N_LABELLED = 8

# run by the label env's python: the app's infer and train tasks through MONAI Label's own app loader
WORKER = r"""
import json, os, sys, time
from monailabel.interfaces.utils.app import app_instance

args = json.loads(sys.argv[1])
app = app_instance(app_dir=args["app"], studies=args["studies"], conf={"bundle": args["bundle"]})
info = app.info()
name = args["model"]
out = {"models": info["models"], "trainers": sorted(info["trainers"])}
t = time.perf_counter()
res = app.infer({"model": name, "image": args["image"], "device": "cpu"})
out["infer"] = {"file": res["file"], "label_names": res["params"]["label_names"], "seconds": time.perf_counter() - t}
model_pt = os.path.join(args["bundle"], "models", "model.pt")
before = os.stat(model_pt).st_mtime_ns
t = time.perf_counter()
app.train({"model": name, "max_epochs": 1, "device": "cpu", "val_split": 0.25, "multi_gpu": False})
out["train"] = {"seconds": time.perf_counter() - t, "model_pt_updated": os.stat(model_pt).st_mtime_ns != before,
                "models_dir": sorted(os.listdir(os.path.dirname(model_pt)))}
res = app.infer({"model": name, "image": args["image"], "device": "cpu"})
out["infer_after_train"] = {"file": res["file"]}
print("WORKER_RESULT " + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def label_python():
    return integration_python("UNEXT_LABEL_PYTHON", ".venv-label", ".ci/label_env.sh", PROBE)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return released_bundle(tmp_path_factory)


def make_studies(shared_dir: Path, dest: Path) -> list[str]:
    """A MONAI Label datastore: the first ISIC 2018 pictures, each with its ground truth as a final label."""
    root = shared_dir / "data" / "isic2018"
    images = sorted((root / "ISIC2018_Task1-2_Training_Input").glob("ISIC_*.jpg"))[:N_LABELLED]
    (dest / "labels" / "final").mkdir(parents=True)
    for img in images:
        shutil.copy2(img, dest / img.name)
        shutil.copy2(root / "ISIC2018_Task1_Training_GroundTruth" / f"{img.stem}_segmentation.png",
                     dest / "labels" / "final" / f"{img.stem}.png")
    return [img.stem for img in images]


def setup_app(shared_dir: Path, released: dict, base: Path) -> dict:
    """The app copied out of the package (its copy command), a spare copy of the bundle, a datastore."""
    app = base / "app"
    run([sys.executable, "-m", "unext_monai.monailabel_app", app])
    assert (app / "main.py").is_file() and (app / "lib" / "infers.py").is_file()
    bundle = base / BUNDLE_NAME
    shutil.copytree(released["bundle"], bundle)
    ids = make_studies(shared_dir, base / "studies")
    return {"app": app, "bundle": bundle, "studies": base / "studies", "ids": ids}


def pytorch_mask(bundle: Path, image: Path, out: Path) -> np.ndarray:
    """Direct prediction with the bundle's inference.json in the main env (0/255 mask)."""
    from monai.bundle import ConfigWorkflow

    src = out / "in"
    src.mkdir(parents=True)
    shutil.copy2(image, src / image.name)
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                        bundle_root=str(bundle), input_path=str(src), output_dir=str(out / "pred"), overlay=False)
    wf.initialize()
    wf.run()
    wf.finalize()
    return np.asarray(Image.open(out / "pred" / f"{image.stem}_mask.png"))


def check_label(png: Path | bytes, image: Path, reference: np.ndarray | None = None) -> np.ndarray:
    label = np.asarray(Image.open(BytesIO(png) if isinstance(png, bytes) else png))
    w, h = Image.open(image).size
    assert label.shape == (h, w), f"label {label.shape} for a {w}x{h} picture"
    assert set(np.unique(label)) <= {0, 1}, "label indices 0 (background) and 1 (lesion) expected"
    if reference is not None:  # the label env runs another torch build: allow a few pixels at the threshold
        assert np.mean((label * 255) != reference) < 1e-3
    return label


def test_app_tasks_infer_and_train(label_python, released, shared_dir, tmp_path):
    s = setup_app(shared_dir, released, tmp_path)
    image_id = s["ids"][0]
    reference = pytorch_mask(released["bundle"], s["studies"] / f"{image_id}.jpg", tmp_path / "torch")
    args = {"app": str(s["app"]), "studies": str(s["studies"]), "bundle": str(s["bundle"]), "model": BUNDLE_NAME,
            "image": image_id}
    log = run([label_python, "-c", WORKER, json.dumps(args)], cwd=tmp_path, timeout=900)
    result = json.loads(next(line for line in log.splitlines() if line.startswith("WORKER_RESULT "))[14:])
    model = result["models"][BUNDLE_NAME]
    assert model["type"] == "segmentation" and model["dimension"] == 2 and model["labels"] == {"lesion": 1}
    assert result["trainers"] == [BUNDLE_NAME]
    assert result["infer"]["label_names"] == {"lesion": 1}
    label = check_label(Path(result["infer"]["file"]), s["studies"] / f"{image_id}.jpg", reference)
    print(f"infer {image_id}: label {label.shape}, {label.mean():.2%} lesion, {result['infer']['seconds']:.2f} s")
    assert result["train"]["model_pt_updated"], "training did not write models/model.pt"
    print(f"train 1 epoch on {N_LABELLED} labelled images: {result['train']['seconds']:.1f} s, "
          f"models/ now {result['train']['models_dir']}")
    check_label(Path(result["infer_after_train"]["file"]), s["studies"] / f"{image_id}.jpg")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read()


def _multipart(field: str, path: Path, params: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{json.dumps(params)}\r\n".encode(),
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{path.name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_server_info_infer_train(label_python, released, shared_dir, tmp_path):
    s = setup_app(shared_dir, released, tmp_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    cmd = [label_python, "-m", "monailabel.main", "start_server", "--app", str(s["app"]), "--studies",
           str(s["studies"]), "--conf", "bundle", str(s["bundle"]), "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        start = time.perf_counter()
        while True:
            assert server.poll() is None, "server exited:\n" + log_path.read_text()[-3000:]
            assert time.perf_counter() - start < 300, "server not up in 300 s:\n" + log_path.read_text()[-3000:]
            try:
                status, _, body = _request(f"{base}/info/", timeout=10)
                break
            except OSError:
                time.sleep(1)
        print(f"server up on 127.0.0.1:{port} after {time.perf_counter() - start:.1f} s (pid {server.pid})")
        info = json.loads(body)
        assert status == 200 and info["labels"] == {"lesion": 1}
        assert info["models"][BUNDLE_NAME]["dimension"] == 2 and BUNDLE_NAME in info["trainers"]
        print(f"GET /info/ -> 200, models {list(info['models'])}, labels {info['labels']}")

        image_id = s["ids"][1]
        image = s["studies"] / f"{image_id}.jpg"
        t = time.perf_counter()
        status, ctype, png = _request(f"{base}/infer/{BUNDLE_NAME}?image={image_id}&output=image", data=b"")
        assert status == 200 and ctype.startswith("image/png")
        label = check_label(png, image)
        print(f"POST /infer/{BUNDLE_NAME}?image={image_id}&output=image -> 200 {ctype}, {len(png)} bytes, "
              f"label {label.shape[1]}x{label.shape[0]} ({time.perf_counter() - t:.2f} s)")

        upload = shared_dir / "data" / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (4).png"
        body, ctype_in = _multipart("file", upload, {"device": "cpu"})
        status, ctype, png = _request(f"{base}/infer/{BUNDLE_NAME}?output=image", data=body,
                                      headers={"Content-Type": ctype_in})
        label = check_label(png, upload)
        print(f"POST /infer/{BUNDLE_NAME}?output=image with {upload.name} uploaded -> {status} {ctype}, "
              f"label {label.shape[1]}x{label.shape[0]}")

        model_pt = s["bundle"] / "models" / "model.pt"
        before = model_pt.stat().st_mtime_ns
        t = time.perf_counter()
        params = json.dumps({"max_epochs": 1, "device": "cpu", "val_split": 0.25, "multi_gpu": False}).encode()
        status, _, body = _request(f"{base}/train/?run_sync=true", data=params,
                                   headers={"Content-Type": "application/json"}, timeout=900)
        result = json.loads(body)
        assert status == 200 and BUNDLE_NAME in result
        assert model_pt.stat().st_mtime_ns != before, "training did not update models/model.pt"
        print(f"POST /train/?run_sync=true -> {status} {result} ({time.perf_counter() - t:.1f} s); model.pt updated")
        status, _, png = _request(f"{base}/infer/{BUNDLE_NAME}?image={image_id}&output=image", data=b"")
        check_label(png, image)
    finally:
        server.send_signal(signal.SIGTERM)  # stop it by its PID
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    assert server.returncode is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "port still served after the server stopped"
    print(f"server pid {server.pid} stopped (exit {server.returncode})")


def test_app_copy_command_refuses_to_overwrite(tmp_path, capsys):
    from unext_monai.monailabel_app.__main__ import main

    assert main([str(tmp_path / "app")]) == 0
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["lib", "main.py"]
    assert main([str(tmp_path / "app")]) == 1
    assert "already holds an app" in capsys.readouterr().err
    assert main([str(tmp_path / "app"), "--overwrite"]) == 0
