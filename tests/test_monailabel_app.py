"""The MONAI Label app (unext_monai/monailabel_app) with the real monailabel 0.8.5, in the env .ci/label_env.sh builds:
the real server on 127.0.0.1 over HTTP with the released ISIC 2018 bundle (bundle/unext_isic2018) and with the
two-class demo bundle the tests release, and the Monte Carlo dropout task in-process (a subprocess of that env's
python)."""

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
import urllib.parse
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from packaged_bundle import REPO, bundle_on_path, integration_python, released_bundle, run
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
    run([sys.executable, "-m", "unext_monai.monailabel_app", app], cwd=REPO)
    bundle = base / MODEL
    shutil.copytree(BUNDLE, bundle)
    labelled, unlabelled = make_studies(shared_dir, base / "studies")
    return {"app": app, "bundle": bundle, "studies": base / "studies", "labelled": labelled, "unlabelled": unlabelled}


def pytorch_mask(bundle: Path, image: Path, out: Path) -> np.ndarray:
    """Direct prediction with the bundle's inference.json in the main env, as `monai.bundle run` makes it (0/255; with
    K classes their values 0..K)."""
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


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600,
             method: str | None = None):
    """(status, content type, body) for a GET (``data`` None) or POST (or ``method``), 4xx/5xx answers included."""
    method = method or ("POST" if data is not None else "GET")
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def _json(url: str, data: bytes | None = None, timeout: float = 600):
    status, _, body = _request(url, data, {"Content-Type": "application/json"}, timeout)
    assert status == 200, f"{url} -> {status} {body[:500]!r}"
    return json.loads(body)


def _multipart(path: Path | None, params: dict, field: str = "file", filename: str | None = None,
               content: bytes | None = None) -> tuple[bytes, dict]:
    """A form with ``params`` and, unless ``path`` and ``content`` are None, one file (``content`` or ``path``'s bytes,
    named ``filename`` or ``path``'s name) in ``field``."""
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{json.dumps(params)}\r\n"
             .encode()]
    if path is not None or content is not None:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"{filename or path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
                     + (content if content is not None else path.read_bytes()) + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    """``python -m monailabel.main start_server`` on 127.0.0.1:<free port>, stopped by its PID (SIGTERM)."""

    def __init__(self, python: str, s: dict, cwd: Path, conf: dict | None = None, env: dict | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "server.log"
        cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(s["app"]), "--studies",
               str(s["studies"]), "--conf", "bundle", str(s["bundle"]), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += [a for k, v in (conf or {}).items() for a in ("--conf", k, str(v))]
        # scoring runs when the test asks for it, not in the background after each request; this checkout's
        # unext_monai first on the path (the label env may have another one installed)
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "PYTHONPATH": pythonpath, **(env or {})}
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

        # bad requests: a 4xx whose detail names what is wrong, never a label
        (tmp_path / "notes.txt").write_text("not a picture")
        (tmp_path / "empty.png").write_bytes(b"")
        (tmp_path / "cut.jpg").write_bytes(image.read_bytes()[:2000])
        bad = [  # (request, upload, status, what the detail names)
            (f"infer/{MODEL}?image=NO_SUCH_ID&output=image", None, 404, "'NO_SUCH_ID'"),
            (f"infer/{MODEL}?image=.&output=image", None, 404, "'.'"),
            (f"infer/no_such_model?image={image_id}&output=image", None, 404, "'no_such_model'"),
            (f"infer/{MODEL}?output=image", tmp_path / "notes.txt", 422, "upload"),
            (f"infer/{MODEL}?output=image", tmp_path / "empty.png", 422, "upload"),
            (f"infer/{MODEL}?output=image", tmp_path / "cut.jpg", 422, "upload"),
            ("train/no_such_model", None, 404, "'no_such_model'"),
            ("activelearning/no_such_strategy", None, 404, "'no_such_strategy'"),
            ("scoring/no_such_method?run_sync=true", None, 404, "'no_such_method'"),
        ]
        for url, upload, want, named in bad:
            body, headers = _multipart(upload, {}) if upload else (b"", {})
            status, ctype, answer = _request(f"{base}/{url}", data=body, headers=headers)
            print(f"POST /{url}{' with ' + upload.name if upload else ''} -> {status} {answer.decode()[:160]}")
            assert status == want and ctype.startswith("application/json"), (url, status, ctype)
            assert named in json.loads(answer)["detail"]

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
        assert no_labels[0] == 422 and json.loads(no_labels[2])["detail"]
    finally:
        server.stop()
    print(f"server pid {server.process.pid} stopped (exit {server.process.returncode})")


@pytest.mark.slow
def test_server_of_classes(label_python, tmp_path, tmp_path_factory):
    """A two-class bundle served: /info lists its class names as labels with their values, and /infer answers a label
    map of those values, the one `monai.bundle run` writes."""
    built = released_bundle(tmp_path_factory, "demo_classes")
    s = {"app": tmp_path / "app", "bundle": tmp_path / "demo", "studies": tmp_path / "studies"}
    run([sys.executable, "-m", "unext_monai.monailabel_app", s["app"]], cwd=REPO)
    shutil.copytree(built["bundle"], s["bundle"])
    (s["studies"] / "labels" / "final").mkdir(parents=True)
    images = sorted((built["train_root"] / "eval" / "demo_data_2_classes" / "images").glob("*.png"))[:2]
    for image in images:
        shutil.copy2(image, s["studies"] / image.name)
    server = Server(label_python, s, tmp_path)
    try:
        info = _json(f"{server.base}/info/")
        assert info["labels"] == {"brown": 1, "green": 2} and info["models"]["demo"]["labels"] == info["labels"]
        values = set()
        for image in images:
            status, ctype, png = _request(f"{server.base}/infer/demo?image={image.stem}&output=image", data=b"")
            assert status == 200 and ctype.startswith("image/png")
            label = np.asarray(Image.open(BytesIO(png)))
            reference = pytorch_mask(s["bundle"], image, tmp_path / image.stem)
            differing = int((label != reference).sum())
            print(f"POST /infer/demo?image={image.stem} -> values {np.unique(label).tolist()}, {differing} pixels "
                  "differing from monai.bundle run")
            assert label.shape == reference.shape and differing <= 0.001 * label.size
            values |= set(np.unique(label).tolist())
        assert values == {0, 1, 2}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def attack_server(label_python, shared_dir, tmp_path_factory):
    """One server for the attacks of issue 36, with files outside its studies folder to aim at: ``outside/victim.png``
    (bytes to overwrite), ``outside/picture.png`` (a real picture to segment), symlinks to both in the studies folder,
    its own temporary folder (where uploads land), a session folder and an upload limit of 1 MiB."""
    base = tmp_path_factory.mktemp("attacks")
    s = setup_app(shared_dir, base)
    outside = base / "outside"
    outside.mkdir()
    (outside / "victim.png").write_bytes(b"victim: not to be overwritten\n")
    shutil.copy2(shared_dir / "data" / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (4).png",
                 outside / "picture.png")
    (s["studies"] / "link.png").symlink_to(outside / "victim.png")
    (s["studies"] / "link_picture.png").symlink_to(outside / "picture.png")
    tmp = base / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "MONAI_LABEL_SESSION_PATH": str(base / "sessions")}
    server = Server(label_python, s, base, conf={"max_upload_mb": "1"}, env=env)
    yield {**s, "base": base, "outside": outside, "tmp": tmp, "url": server.base}
    server.stop()


class Attacks:
    """Each attack's answer and whether its outcome is the wanted one; printed, then asserted all together (so one run
    shows every attack's answer, on the old code too)."""

    def __init__(self, srv: dict) -> None:
        self.srv, self.failed = srv, []

    def send(self, name: str, path: str, want: int, method: str = "POST", upload=None, params: dict | None = None,
             data=None, headers: dict | None = None) -> int:
        """``upload``: (field, filename, bytes), sent as a form with ``params``; ``data``: a raw body."""
        if upload or params is not None:
            field, filename, content = upload or ("file", None, None)
            data, headers = _multipart(None, params or {}, field, filename, content)
        before = self.temp_files()
        status, _, body = _request(f"{self.srv['url']}/{path}", data, headers, timeout=120, method=method)
        self.check(name, status == want, f"{method} /{path} -> {status} (want {want}) {body[:100]!r}")
        self.no_leftovers(name, before)
        return status

    def send_raw(self, name: str, path: str, want: int, method: str, body: bytes, headers: dict,
                 chunked: bool = False) -> None:
        """A request with ``Expect: 100-continue`` (as curl sends large bodies), its body sent after the server's
        100 only (as is or chunked), its answer read even when the server stops reading and closes (which
        http.client reports as a broken pipe only)."""
        host, port = self.srv["url"].split("//")[1].split(":")
        size = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if chunked:
            parts = [body[i:i + 65536] for i in range(0, len(body), 65536)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in parts) + b"0\r\n\r\n"
        before = self.temp_files()
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(f"{method} /{path} HTTP/1.1\r\nHost: {host}\r\n{head}{size}\r\nExpect: 100-continue\r\n\r\n"
                         .encode())
            answer = sock.recv(65536)
            if answer.startswith(b"HTTP/1.1 100"):
                answer = answer.split(b"\r\n\r\n", 1)[1]
                try:
                    sock.sendall(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered and closed before the end of the body
                try:
                    while b"\r\n" not in answer and (data := sock.recv(65536)):
                        answer += data
                except ConnectionResetError:
                    pass
        status = int(answer.split()[1]) if answer else 0
        self.check(name, status == want, f"{method} /{path} -> {status} (want {want}) {answer[:100]!r}")
        self.no_leftovers(name, before)

    def temp_files(self) -> set[str]:
        return set(os.listdir(self.srv["tmp"]))

    def no_leftovers(self, name: str, before: set[str]) -> None:
        for _ in range(20):  # files a successful request queues for removal go after its answer
            left = self.temp_files() - before
            if not left:
                return
            time.sleep(0.25)
        self.check(name, False, f"left in the temporary folder: {sorted(left)}")

    def check(self, name: str, ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {what}")
        if not ok:
            self.failed.append(f"{name}: {what}")

    def done(self) -> None:
        assert not self.failed, "\n".join(self.failed)


@pytest.mark.slow
def test_attack_writes_stay_in_the_studies_folder(attack_server):
    """Issue 36.1: uploads and labels named with paths (encoded, plain, absolute, through a symlink, by tag) write
    nothing outside the studies folder, and no request replaces the served model."""
    srv, a = attack_server, Attacks(attack_server)
    outside, studies, base = srv["outside"], srv["studies"], srv["base"]
    victim = outside / "victim.png"
    original = victim.read_bytes()
    png = (outside / "picture.png").read_bytes()
    model_pt = srv["bundle"] / "models" / "model.pt"
    model_bytes = model_pt.read_bytes()
    config = (studies / "datastore_v2.json").read_bytes()
    q = urllib.parse.quote
    for name, image_id in [("encoded ../", q("../outside/victim", safe="")), ("plain ../", "../outside/victim"),
                           ("absolute", q(str(outside / "victim"), safe="")), ("symlinked", "link")]:
        victim.write_bytes(original)  # each variant against the original (MONAI Label's own DELETE removes it)
        a.send(f"upload image={name}", f"datastore/?image={image_id}", 422, "PUT", ("file", "x.png", png))
        a.send(f"upload image={name} (/image route)", f"datastore/image?image={image_id}", 422, "PUT",
               ("file", "x.png", png))
        a.check(f"upload image={name}", victim.is_file() and victim.read_bytes() == original, "victim.png unchanged")
        a.send(f"download image={name}", f"datastore/image?image={image_id}", 404, "GET")
        a.send(f"delete image={name}", f"datastore/image?id={image_id}", 404, "DELETE")
        a.check(f"delete image={name}", victim.is_file() and victim.read_bytes() == original, "victim.png still there")
    a.send("upload evil.pt as ../<bundle>/models/model", f"datastore/?image={q('../isic/models/model', safe='')}",
           422, "PUT", ("file", "evil.pt", b"not a model"))
    a.send("PUT /model/<model>", f"model/{MODEL}", 405, "PUT", ("file", "evil.pt", b"not a model"))
    a.send("DELETE /model/<model>", f"model/{MODEL}", 405, "DELETE")
    a.check("model", model_pt.is_file() and model_pt.read_bytes() == model_bytes, "served model.pt byte-identical")
    a.send("infer after the model attacks", f"infer/{MODEL}?image={srv['unlabelled'][0]}&output=json", 200)
    a.send("upload x.json as the datastore's config", "datastore/image?image=datastore_v2", 422, "PUT",
           ("file", "x.json", b"{}"))
    a.check("datastore config", (studies / "datastore_v2.json").read_bytes() == config, "datastore_v2.json unchanged")

    image_id = srv["labelled"][0]
    image = studies / f"{image_id}.jpg"
    picture = image.read_bytes()
    label = (studies / "labels" / "final" / f"{image_id}.png").read_bytes()
    for name, tag in [("encoded ../", q("../../outside/tag_rel", safe="")), ("plain ../", "../../outside/tag_rel"),
                      ("absolute", q(str(base / "tag_abs"), safe="")), ("..", ".."), (".", ".")]:
        a.send(f"label tag={name}", f"datastore/label?image={image_id}&tag={tag}", 422, "PUT",
               ("label", f"{image_id}.jpg", png))
    victim.write_bytes(original)
    a.send("label image=../victim", f"datastore/label?image={q('../outside/victim', safe='')}&tag=final", 404, "PUT",
           ("label", "x.png", png))
    a.send("infer save_label with label_tag=../", f"infer/{MODEL}?image={image_id}&output=json", 422,
           params={"save_label": True, "label_tag": "../../outside/tag_infer"})
    created = sorted(p.name for p in [outside / "tag_rel", base / "tag_abs", outside / "tag_infer"] if p.exists())
    a.check("label tags", not created, f"no folder created outside: {created}")
    a.check("label tags", image.read_bytes() == picture, "the image is not overwritten by tag '..'")
    a.check("label tags", (studies / "labels" / "final" / f"{image_id}.png").read_bytes() == label, "label unchanged")
    a.check("label image", victim.is_file() and victim.read_bytes() == original, "victim.png unchanged")
    a.send("session upload", "session/", 406, "PUT", ("files", "x.png", png))
    a.check("session upload", not (base / "sessions").exists(), "nothing written to the session folder")
    a.done()


@pytest.mark.slow
def test_attack_infer_reads_only_datastore_ids(attack_server):
    """Issue 36.2: /infer segments datastore ids and this request's own upload only; every other name (absolute,
    relative to the server's folder, through a symlink, in params, a session) gets the same 404 whatever exists."""
    srv, a = attack_server, Attacks(attack_server)
    q = urllib.parse.quote
    picture = srv["outside"] / "picture.png"
    a.send("infer a datastore id", f"infer/{MODEL}?image={srv['unlabelled'][0]}&output=json", 200)
    for name, image in [("absolute path of a picture", q(str(picture), safe="")),
                        ("/etc/shadow", q("/etc/shadow", safe="")),
                        ("missing absolute path", q(str(picture.with_name("missing.png")), safe="")),
                        ("path relative to the server's folder", "outside/picture.png"),
                        ("symlinked picture", "link_picture"), ("the server's folder '.'", "."),
                        ("encoded ../", q(f"../{srv['base'].name}/outside/picture.png", safe="")),
                        ("NO_SUCH_ID", "NO_SUCH_ID")]:
        a.send(f"infer image={name}", f"infer/{MODEL}?image={image}&output=image", 404)
        a.send(f"download image={name}", f"datastore/image?image={image}", 404, "GET")
    upload = srv["studies"] / f"{srv['unlabelled'][1]}.jpg"
    a.send("upload with params naming another image", f"infer/{MODEL}?output=image", 422,
           upload=("file", upload.name, upload.read_bytes()), params={"image": str(picture)})
    a.send("infer session_id=../outside", f"infer/{MODEL}?session_id={q('../outside', safe='')}&output=json", 406)
    a.done()


@pytest.mark.slow
def test_attack_uploads_are_removed_and_limited(attack_server):
    """Issue 36.3: refused uploads leave nothing in the temporary folder, and bodies over ``max_upload_mb`` (1 MiB
    here) get 413 without being stored."""
    srv, a = attack_server, Attacks(attack_server)
    junk = os.urandom(900 * 1024)
    for i in range(3):
        a.send(f"non-image upload {i + 1} (0.9 MiB)", f"infer/{MODEL}?output=image", 422,
               upload=("file", f"junk{i}.png", junk))
    body, headers = _multipart(None, {}, "file", "big.png", os.urandom(2 * 1024 * 1024))
    a.send_raw("2 MiB upload to /infer", f"infer/{MODEL}?output=image", 413, "POST", body, headers)
    a.send_raw("2 MiB chunked upload to the datastore", "datastore/image?image=big", 413, "PUT", body, headers,
               chunked=True)
    a.check("chunked upload", not list(srv["studies"].glob("big*")), "not stored")
    upload = srv["studies"] / f"{srv['unlabelled'][1]}.jpg"
    a.send("good upload", f"infer/{MODEL}?output=image", 200, upload=("file", upload.name, upload.read_bytes()))
    # MONAI Label's POST /reload (no authentication) builds a new app: the same guards
    a.send("POST /reload", "reload", 200, data=b"")
    a.send("good upload after /reload", f"infer/{MODEL}?output=image", 200,
           upload=("file", upload.name, upload.read_bytes()))
    a.send_raw("2 MiB upload after /reload", f"infer/{MODEL}?output=image", 413, "POST", body, headers)
    a.send("non-image upload after /reload", f"infer/{MODEL}?output=image", 422, upload=("file", "junk.png", junk))
    a.send("upload image=../ after /reload", "datastore/image?image=..%2Foutside%2Fvictim", 422, "PUT",
           ("file", "x.png", upload.read_bytes()))
    a.done()


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
probabilities = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, 0)
out = {
    "channels": [int(logits.shape[0]), int(samples[0].shape[0])],
    "sums": [float(torch.stack(samples).sum(1).min()), float(torch.stack(samples).sum(1).max())],
    "dropout_p": sorted({m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)}),
    "dropout_training": sorted({m.training for m in net.modules() if isinstance(m, torch.nn.Dropout)}),
    "batchnorm_training": sorted({m.training for m in net.modules()
                                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}),
    "sample_spread": float(torch.stack(samples).std(0).mean()),
    "mean_vs_plain": float((torch.stack(samples).mean(0) - probabilities).abs().mean()),
    "range": [float(min(s.min() for s in samples)), float(max(s.max() for s in samples))],
}
print("WORKER_RESULT " + json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("classes", [False, True], ids=["isic", "classes"])
def test_dropout_task_samples_around_the_plain_prediction(label_python, shared_dir, tmp_path, tmp_path_factory,
                                                          classes):
    """Samples of the lesion probability, or with K classes of the class probabilities (softmax: they sum to 1)."""
    image = sorted((shared_dir / "data" / "isic2018" / "ISIC2018_Task1-2_Training_Input").glob("ISIC_*.jpg"))[0]
    bundle = BUNDLE
    if classes:  # on a picture of its own data set
        built = released_bundle(tmp_path_factory, "demo_classes")
        bundle = built["bundle"]
        image = built["train_root"] / "eval" / "demo_data_2_classes" / "images" / "demo_000.png"
    log = run([label_python, "-c", DROPOUT_WORKER, REPO / "unext_monai" / "monailabel_app", bundle, image],
              cwd=tmp_path, timeout=600)
    result = json.loads(next(line for line in log.splitlines() if line.startswith("WORKER_RESULT "))[14:])
    print(result)
    assert result["channels"] == ([3, 3] if classes else [1, 1])
    if classes:
        assert abs(result["sums"][0] - 1) < 1e-4 and abs(result["sums"][1] - 1) < 1e-4
    assert result["dropout_p"] == [0.2] and result["dropout_training"] == [True]
    assert result["batchnorm_training"] in ([], [False])  # dropout only: normalisation keeps its trained statistics
    assert 0 <= result["range"][0] and result["range"][1] <= 1  # probabilities
    # each call draws a new dropout mask (measured: 0.006; the two-class weights of three epochs, near uniform, 0.001)
    assert result["sample_spread"] > (1e-4 if classes else 1e-3)
    assert result["mean_vs_plain"] < 0.05  # around the network's own prediction (0.008 measured)


def test_app_copy_command_refuses_to_overwrite(tmp_path, capsys):
    from unext_monai.monailabel_app.__main__ import main

    assert main([str(tmp_path / "app")]) == 0
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["lib", "main.py", "requirements.txt"]
    capsys.readouterr()
    assert main([str(tmp_path / "app")]) == 1
    assert str(tmp_path / "app") in capsys.readouterr().err
    assert main([str(tmp_path / "app"), "--overwrite"]) == 0
