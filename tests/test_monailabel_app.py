"""The MONAI Label app (unext_monai/monailabel_app) with the real monailabel 0.8.5, in the env .ci/label_env.sh builds:
the real server on 127.0.0.1 over HTTP with the released ISIC 2018 bundle (bundle/unext_isic2018), and the Monte
Carlo dropout task in-process (a subprocess of that env's python)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from packaged_bundle import REPO, bundle_on_path, integration_python, run
from PIL import Image

PROBE = "import monailabel.main, monailabel.tasks.infer.basic_infer, monailabel.tasks.scoring.epistemic_v2, unext_monai"
BUNDLE = REPO / "bundle" / "unext_isic2018"
MODEL = "isic"  # the served copy's folder name, hence the model's name
N_LABELLED, N_UNLABELLED = 8, 3


@pytest.fixture(scope="module")
def label_python():
    return integration_python("UNEXT_LABEL_PYTHON", ".venv-label", ".ci/label_env.sh", PROBE)


def make_studies(shared_dir: Path, dest: Path) -> tuple[list[str], list[str]]:
    """A MONAI Label datastore of ISIC 2018 pictures: the first ones with their ground truth as final labels, the
    next ones unlabelled. Returns (labelled ids, unlabelled ids)."""
    root = shared_dir / "data" / "isic2018"
    images = sorted((root / "ISIC2018_Task1-2_Training_Input").glob("ISIC_*.jpg"))[: N_LABELLED + N_UNLABELLED]
    (dest / "labels" / "final").mkdir(parents=True)
    for img in images:
        shutil.copy2(img, dest / img.name)
    for img in images[:N_LABELLED]:
        shutil.copy2(root / "ISIC2018_Task1_Training_GroundTruth" / f"{img.stem}_segmentation.png",
                     dest / "labels" / "final" / f"{img.stem}.png")
    return [i.stem for i in images[:N_LABELLED]], [i.stem for i in images[N_LABELLED:]]


def setup_app(shared_dir: Path, base: Path) -> dict:
    """The app copied out of the package (its copy command), a spare copy of the bundle, a datastore."""
    app = base / "app"
    run([sys.executable, "-m", "unext_monai.monailabel_app", app])
    bundle = base / MODEL
    shutil.copytree(BUNDLE, bundle)
    labelled, unlabelled = make_studies(shared_dir, base / "studies")
    return {"app": app, "bundle": bundle, "studies": base / "studies", "labelled": labelled, "unlabelled": unlabelled}


def pytorch_mask(bundle: Path, image: Path, out: Path) -> np.ndarray:
    """Direct prediction with the bundle's inference.json in the main env, as `monai.bundle run` makes it (0/255)."""
    from monai.bundle import ConfigWorkflow

    src = out / "in"
    src.mkdir(parents=True)
    shutil.copy2(image, src / image.name)
    with bundle_on_path(bundle):
        wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                            meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                            bundle_root=str(bundle), input_path=str(src), output_dir=str(out / "pred"), overlay=False)
        wf.initialize()
        wf.run()
        wf.finalize()
    return np.asarray(Image.open(out / "pred" / f"{image.stem}_mask.png"))


def check_label(png: bytes, image: Path) -> np.ndarray:
    label = np.asarray(Image.open(BytesIO(png)))
    w, h = Image.open(image).size
    assert label.shape == (h, w), f"label {label.shape} for a {w}x{h} picture"
    assert set(np.unique(label)) <= {0, 1}, "label indices 0 (background) and 1 (lesion) expected"
    return label


def write_dicom(path: Path) -> None:
    """A small valid single-frame DICOM (what the bundle's PydicomReader would read for a folder '.')."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 48, 64, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600):
    """(status, content type, body) for a GET (``data`` None) or POST, 4xx/5xx answers included."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def _json(url: str, data: bytes | None = None, timeout: float = 600):
    status, _, body = _request(url, data, {"Content-Type": "application/json"}, timeout)
    assert status == 200, f"{url} -> {status} {body[:500]!r}"
    return json.loads(body)


def _multipart(path: Path, params: dict) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = b"".join([
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{json.dumps(params)}\r\n".encode(),
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ])
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    """``python -m monailabel.main start_server`` on 127.0.0.1:<free port>, stopped by its PID (SIGTERM)."""

    def __init__(self, python: str, s: dict, cwd: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "server.log"
        cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(s["app"]), "--studies",
               str(s["studies"]), "--conf", "bundle", str(s["bundle"]), "--host", "127.0.0.1", "--port", str(self.port)]
        # scoring runs when the test asks for it, not in the background after each request
        env = {**os.environ, "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        start = time.perf_counter()
        while True:
            assert self.process.poll() is None, "server exited:\n" + self.log.read_text()[-3000:]
            assert time.perf_counter() - start < 300, "server not up in 300 s:\n" + self.log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{self.base}/info/", timeout=10).close()
                break
            except OSError:
                time.sleep(1)
        print(f"server up on 127.0.0.1:{self.port} after {time.perf_counter() - start:.1f} s (pid {self.process.pid})")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            assert sock.connect_ex(("127.0.0.1", self.port)) != 0, "port still served after the server stopped"


@pytest.mark.slow
def test_server(label_python, shared_dir, tmp_path):
    s = setup_app(shared_dir, tmp_path)
    (s["bundle"] / "models" / "checkpoint_epoch=2.pt").write_bytes((s["bundle"] / "models" / "model.pt").read_bytes())
    write_dicom(tmp_path / "stray.dcm")  # in the server's working directory
    server = Server(label_python, s, tmp_path)
    base = server.base
    try:
        info = _json(f"{base}/info/")
        assert info["labels"] == {"lesion": 1} and list(info["models"]) == [MODEL] and list(info["trainers"]) == [MODEL]
        assert info["models"][MODEL]["dimension"] == 2 and info["models"][MODEL]["type"] == "segmentation"
        assert {"random", "epistemic"} <= set(info["strategies"]) and list(info["scoring"]) == ["epistemic"]
        assert "checkpoint_epoch" not in json.dumps(info), "an intermediate checkpoint is offered as a model"
        assert info["train_stats"] == {MODEL: {}}

        # inference by id: the label of `monai.bundle run`, pixel for pixel
        image_id = s["unlabelled"][0]
        image = s["studies"] / f"{image_id}.jpg"
        status, ctype, png = _request(f"{base}/infer/{MODEL}?image={image_id}&output=image", data=b"")
        assert status == 200 and ctype.startswith("image/png")
        label = check_label(png, image)
        reference = pytorch_mask(BUNDLE, image, tmp_path / "torch")
        differing = int(((label * 255) != reference).sum())
        truth = np.asarray(Image.open(shared_dir / "data" / "isic2018" / "ISIC2018_Task1_Training_GroundTruth"
                                      / f"{image_id}_segmentation.png")) > 0
        dice = 2 * (truth & (label > 0)).sum() / (truth.sum() + (label > 0).sum())
        print(f"POST /infer/{MODEL}?image={image_id} -> 200 {ctype}, {label.shape[1]}x{label.shape[0]}, "
              f"{differing} pixels differing from monai.bundle run, Dice vs ground truth {dice:.3f}")
        assert differing <= 0.001 * label.size  # the label env's torch may round a threshold pixel differently
        assert label.any()

        # an uploaded picture of another size
        upload = shared_dir / "data" / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (4).png"
        body, headers = _multipart(upload, {"device": "cpu"})
        status, ctype, png = _request(f"{base}/infer/{MODEL}?output=image", data=body, headers=headers)
        assert status == 200
        check_label(png, upload)

        # bad requests: a 4xx naming the problem, never a label
        (tmp_path / "notes.txt").write_text("not a picture")
        (tmp_path / "empty.png").write_bytes(b"")
        (tmp_path / "cut.jpg").write_bytes(image.read_bytes()[:2000])
        bad = [
            (f"infer/{MODEL}?image=NO_SUCH_ID&output=image", None, 404, "no image 'NO_SUCH_ID' in the datastore"),
            (f"infer/{MODEL}?image=.&output=image", None, 422, "not a file"),
            (f"infer/no_such_model?image={image_id}&output=image", None, 404, "no model 'no_such_model'"),
            (f"infer/{MODEL}?output=image", tmp_path / "notes.txt", 422, "uploaded .txt file cannot be segmented"),
            (f"infer/{MODEL}?output=image", tmp_path / "empty.png", 422, "file is empty"),
            (f"infer/{MODEL}?output=image", tmp_path / "cut.jpg", 422, "corrupt or truncated image"),
            ("train/no_such_model", None, 404, "no model 'no_such_model'"),
            ("activelearning/no_such_strategy", None, 404, "no strategy 'no_such_strategy'"),
            ("scoring/no_such_method?run_sync=true", None, 404, "no scoring method 'no_such_method'"),
        ]
        for url, upload, want, words in bad:
            body, headers = _multipart(upload, {}) if upload else (b"", {})
            status, ctype, answer = _request(f"{base}/{url}", data=body, headers=headers)
            print(f"POST /{url}{' with ' + upload.name if upload else ''} -> {status} {answer.decode()[:160]}")
            assert status == want and ctype.startswith("application/json"), (url, status, ctype)
            assert words in json.loads(answer)["detail"]

        # active learning: MONAI Label's random strategy, then epistemic scores (Monte Carlo dropout) and strategy
        pick = _json(f"{base}/activelearning/random", data=b"{}")
        assert pick["id"] in s["unlabelled"]
        summary = _json(f"{base}/scoring/epistemic?run_sync=true", data=b"{}")
        assert summary["executed"] == N_UNLABELLED and summary["total"] == N_UNLABELLED
        scores = {i: _json(f"{base}/datastore/image/info?image={i}")["epistemic_entropy"] for i in s["unlabelled"]}
        print(f"POST /activelearning/random -> {pick['id']}; POST /scoring/epistemic -> {summary}; scores {scores}")
        assert all(v > 0 for v in scores.values()) and len(set(scores.values())) == N_UNLABELLED
        ranked = sorted(scores, key=scores.get, reverse=True)
        first = _json(f"{base}/activelearning/epistemic", data=b"{}")
        second = _json(f"{base}/activelearning/epistemic", data=b"{}")  # the first is now recently served
        assert [first["id"], second["id"]] == ranked[:2]
        assert first["epistemic_entropy"] == scores[first["id"]]

        # training: its statistics in the answer and in /info/, model.pt updated, no intermediate checkpoint
        model_pt = s["bundle"] / "models" / "model.pt"
        before = model_pt.stat().st_mtime_ns
        t = time.perf_counter()
        params = json.dumps({"max_epochs": 1, "device": "cpu", "val_split": 0.25}).encode()
        stats = _json(f"{base}/train/{MODEL}?run_sync=true", data=params, timeout=900)
        print(f"POST /train/{MODEL}?run_sync=true -> {json.dumps(stats)} ({time.perf_counter() - t:.1f} s)")
        assert stats["total_epochs"] == 1 and stats["eval"]["key_metric_name"] == "val_mean_dice"
        assert 0 < stats["eval"]["metrics"]["val_mean_dice"] <= 1 and stats["eval"]["best_metric_epoch"] == 1
        assert _json(f"{base}/info/")["train_stats"] == {MODEL: stats}
        assert model_pt.stat().st_mtime_ns != before, "training did not update models/model.pt"
        assert sorted(p.name for p in (s["bundle"] / "models").glob("*.pt")) == ["checkpoint_epoch=2.pt", "model.pt"]
        run_dir = Path(stats["run"])  # the run's own folder in the app's model folder keeps the replaced model
        assert run_dir.parent == s["app"] / "model" / MODEL / "runs" and stats["published"] == str(model_pt)
        assert (run_dir / "replaced_model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()
        assert (run_dir / "models" / "model.pt").read_bytes() == model_pt.read_bytes()
        status, _, png = _request(f"{base}/infer/{MODEL}?image={image_id}&output=image", data=b"")
        assert status == 200
        check_label(png, image)
        no_labels = _request(f"{base}/train/{MODEL}?run_sync=true", data=json.dumps({"val_split": 0.0}).encode(),
                             headers={"Content-Type": "application/json"})
        assert no_labels[0] == 422 and "no validation images" in json.loads(no_labels[2])["detail"]
    finally:
        server.stop()
    print(f"server pid {server.process.pid} stopped (exit {server.process.returncode})")


# run by the label env's python: the Monte Carlo dropout task the epistemic scoring uses, and the plain one
DROPOUT_WORKER = r"""
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from lib.infers import UNeXtDropoutInferTask, UNeXtInferTask

bundle, image = sys.argv[2], sys.argv[3]
request = {"image": image, "device": "cpu"}
plain = UNeXtInferTask(bundle, skip_writer=True)
plain.post_transforms = lambda data=None: []
mc = UNeXtDropoutInferTask(bundle, dropout=0.2)
logits = plain(request)[1]["pred"]
samples = [mc(request)[1]["pred"] for _ in range(4)]
net = mc._get_network("cpu", None)
out = {
    "dropout_p": sorted({m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)}),
    "dropout_training": sorted({m.training for m in net.modules() if isinstance(m, torch.nn.Dropout)}),
    "batchnorm_training": sorted({m.training for m in net.modules()
                                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}),
    "sample_spread": float(torch.stack(samples).std(0).mean()),
    "mean_vs_plain": float((torch.stack(samples).mean(0) - torch.sigmoid(logits)).abs().mean()),
    "range": [float(min(s.min() for s in samples)), float(max(s.max() for s in samples))],
}
print("WORKER_RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_dropout_task_samples_around_the_plain_prediction(label_python, shared_dir, tmp_path):
    image = sorted((shared_dir / "data" / "isic2018" / "ISIC2018_Task1-2_Training_Input").glob("ISIC_*.jpg"))[0]
    log = run([label_python, "-c", DROPOUT_WORKER, REPO / "unext_monai" / "monailabel_app", BUNDLE, image],
              cwd=tmp_path, timeout=600)
    result = json.loads(next(line for line in log.splitlines() if line.startswith("WORKER_RESULT "))[14:])
    print(result)
    assert result["dropout_p"] == [0.2] and result["dropout_training"] == [True]
    assert result["batchnorm_training"] in ([], [False])  # dropout only: normalisation keeps its trained statistics
    assert 0 <= result["range"][0] and result["range"][1] <= 1  # probabilities
    assert result["sample_spread"] > 1e-3  # each call draws a new dropout mask (0.006 measured)
    assert result["mean_vs_plain"] < 0.05  # around the network's own prediction (0.008 measured)


def test_app_copy_command_refuses_to_overwrite(tmp_path, capsys):
    from unext_monai.monailabel_app.__main__ import main

    assert main([str(tmp_path / "app")]) == 0
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["lib", "main.py", "requirements.txt"]
    assert main([str(tmp_path / "app")]) == 1
    assert "already holds an app" in capsys.readouterr().err
    assert main([str(tmp_path / "app"), "--overwrite"]) == 0
