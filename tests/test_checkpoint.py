"""Checkpoints: safe loading with clear errors (ModelCheckpointLoader), crash-proof writing (AtomicCheckpointSaver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigWorkflow

from unext_monai import UNEXT_S_FEATURES, UNeXt
from unext_monai.checkpoint import AtomicCheckpointSaver, NamedCheckpointLoader, load_checkpoint_file
from unext_monai.networks.weights import NEGLIGIBLE_WEIGHT, zero_negligible_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def messages(exc: BaseException) -> str:
    """The text of an exception and of every exception it was raised from (ConfigParser wraps errors)."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def load_into(net: torch.nn.Module, path: Path, loader_cls=NamedCheckpointLoader, **load_dict) -> None:
    engine = Engine(lambda e, b: None)
    loader_cls(load_path=str(path), load_dict=load_dict or {"model": net}).attach(engine)
    engine.run([0], max_epochs=1)


def small(in_channels: int = 3, out_channels: int = 1, **kw) -> UNeXt:
    return UNeXt(2, in_channels, out_channels, features=UNEXT_S_FEATURES, **kw)


def test_zero_negligible_weights_clears_only_tiny_floats():
    values = [0.0, 1e-39, -1e-40, 1e-31, -5e-33, 2 * NEGLIGIBLE_WEIGHT, 1e-20, 1.0, float("nan"), float("-inf")]
    weights = torch.tensor(values)
    half = torch.tensor([1e-6, 1e-3, 0.0], dtype=torch.float16)
    counts = torch.tensor([1, 0, 3])
    assert zero_negligible_weights([weights, half, counts, torch.empty(0)]) == 4
    assert weights[:5].tolist() == [0.0] * 5
    assert weights[5:8].tolist() == torch.tensor(values[5:8]).tolist()
    assert weights[8].isnan() and weights[9].isinf()
    assert zero_negligible_weights([half], below=1e-4) == 1 and half.tolist()[0] == 0.0 and half.tolist()[1] != 0.0
    assert counts.tolist() == [1, 0, 3]


def test_zero_negligible_weights_in_a_process_that_flushes_subnormals():
    # training sets torch.set_flush_denormal(True); there a stored subnormal compares equal to 0 but is still stored
    subnormal_bits = torch.tensor([713624, -2147483648 + 713624, 0], dtype=torch.int32)  # +1e-39, -1e-39, +0
    weights = subnormal_bits.clone().view(torch.float32)
    torch.set_flush_denormal(True)  # the conftest fixture turns it off again
    assert zero_negligible_weights([weights]) == 2
    assert weights.view(torch.int32).tolist() == [0, 0, 0]


@pytest.mark.parametrize("ckpt_kw, net_kw, names", [
    ({"in_channels": 1}, {"in_channels": 3}, ["down_1.conv.weight"]),
    ({"out_channels": 3}, {}, ["final_conv.weight"]),
    ({"features": (16, 32, 128, 160, 256)}, {}, ["down_1.conv.weight"]),
])
def test_a_checkpoint_of_another_network_is_refused_naming_the_file_and_the_layers(tmp_path, ckpt_kw, net_kw, names):
    kw = {"features": UNEXT_S_FEATURES, **ckpt_kw}
    torch.save(UNeXt(2, kw.pop("in_channels", 3), kw.pop("out_channels", 1), **kw).state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError) as err:
        load_into(small(**net_kw), tmp_path / "m.pt")
    assert str(tmp_path / "m.pt") in str(err.value) and all(n in str(err.value) for n in names)


def test_deep_supervision_heads_are_dropped_for_inference_and_started_afresh_for_fine_tuning(tmp_path):
    src = small(deep_supervision=True)
    torch.save({"model": src.state_dict(), "optimizer": {}}, tmp_path / "checkpoint_epoch=3.pt")
    dst = small()
    load_into(dst, tmp_path / "checkpoint_epoch=3.pt")  # a full training checkpoint serves inference too
    assert torch.equal(dst.final_conv.weight, src.final_conv.weight)
    torch.save(dst.state_dict(), tmp_path / "model.pt")  # released weights: the inference network, no heads
    tuned = small(deep_supervision=True)
    heads = {k: v.clone() for k, v in tuned.state_dict().items() if k.startswith("heads.")}
    load_into(tuned, tmp_path / "model.pt")
    assert torch.equal(tuned.final_conv.weight, src.final_conv.weight)
    assert heads and all(torch.equal(tuned.state_dict()[k], v) for k, v in heads.items())


def test_not_a_unext_checkpoint(tmp_path):
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), tmp_path / "conv.pt")
    with pytest.raises(ValueError, match=r"conv\.pt"):
        load_into(small(), tmp_path / "conv.pt")
    reference = {"encoder1.weight": torch.zeros(16, 3, 3, 3), "final.weight": torch.zeros(1, 16, 1, 1)}
    torch.save(reference, tmp_path / "ref.pt")
    with pytest.raises(ValueError, match=r"ref\.pt.*from_unext_pytorch"):
        load_into(small(), tmp_path / "ref.pt")


def test_damaged_files_are_named(tmp_path):
    net = small()
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        load_checkpoint_file(tmp_path / "nothing.pt")
    torch.save(net.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    for name in ("empty.pt", "cut.pt", "text.pt"):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            load_into(net, tmp_path / name)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            load_checkpoint_file(tmp_path / name)
    torch.save(net.state_dict(), tmp_path / "model.pt")  # resuming needs more than a model-only state dict
    with pytest.raises(ValueError, match=r"model\.pt"):
        load_into(net, tmp_path / "model.pt", model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1))


class _Payload:
    """Unpickling this runs os.mkdir(path): a stand-in for arbitrary code in a model file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    state = small().state_dict()
    probe = tmp_path / "probe_marker"
    torch.save({**state, "x": _Payload(str(probe))}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)  # the payload really runs when unpickled unsafely
    assert probe.is_dir()
    marker = tmp_path / "marker"
    torch.save({**state, "x": _Payload(str(marker))}, tmp_path / "evil.pt")
    for load in (lambda: load_into(small(), tmp_path / "evil.pt"), lambda: load_checkpoint_file(tmp_path / "evil.pt")):
        with pytest.raises(ValueError, match=r"evil\.pt"):
            load()
    assert not marker.exists(), "loading the checkpoint ran code from it"


def test_inference_config_names_a_checkpoint_of_another_network(tmp_path):
    from PIL import Image

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.save(UNeXt(2, 1, 1).state_dict(), root / "models" / "model.pt")
    (root / "in").mkdir()
    Image.new("RGB", (40, 30), (90, 120, 150)).save(root / "in" / "a.png")
    wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"),
                        workflow_type="infer", bundle_root=str(root), input_path=str(root / "in"),
                        output_dir=str(root / "out"), spatial_size=[64, 64])
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert str(root / "models" / "model.pt") in messages(err.value)
    assert not (root / "out" / "a_mask.png").exists()


# --- writing: a real SIGKILL in the middle of torch.save -------------------------------------------------------------

_KILL_SCRIPT = r"""
import io, json, os, signal, sys
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver
from unext_monai.checkpoint import AtomicCheckpointSaver


def scenario(save_dir, saver_kind, what):
    cls = AtomicCheckpointSaver if saver_kind == "atomic" else CheckpointSaver
    net = torch.nn.Linear(64, 64)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics = {"dice": float(e.state.epoch)}
        with torch.no_grad():
            net.weight.fill_(e.state.epoch)  # the saved weights tell the epoch

    if what == "interval":
        saver = cls(save_dir=save_dir, save_dict={"model": net}, save_interval=1, n_saved=1, epoch_level=True)
    else:
        saver = cls(save_dir=save_dir, save_dict={"model": net}, save_key_metric=True, key_metric_name="dice",
                    key_metric_filename="model.pt")
    saver.attach(engine)
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        if engine.state.epoch < 2:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        fh = f if hasattr(f, "write") else open(f, "wb")
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # killed half-way through writing the epoch-2 file

    torch.save = save_then_die
    engine.run([0], max_epochs=3)


results = {}
for saver_kind in ("atomic", "monai"):
    for what in ("interval", "key_metric"):
        save_dir = os.path.join(sys.argv[1], f"{saver_kind}_{what}")
        pid = os.fork()
        if pid == 0:  # the child is killed inside torch.save; it never returns
            try:
                scenario(save_dir, saver_kind, what)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        results[f"{saver_kind}_{what}"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def killed_while_saving(tmp_path_factory) -> Path:
    """Folders ``<saver>_<what>`` whose writer was SIGKILLed half-way through saving its epoch-2 file (one subprocess
    that forks a child per case)."""
    folder = tmp_path_factory.mktemp("killed")
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(folder)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    signals = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(signals.values()) == {9}, signals
    return folder


def _loadable(save_dir: Path) -> dict[str, float]:
    """``{file name: epoch}`` of every .pt file that loads; asserts that every .pt file loads."""
    out = {}
    for f in sorted(save_dir.glob("*.pt")):
        state = torch.load(f, weights_only=True)
        state = state.get("model", state)
        out[f.name] = float(state["weight"][0, 0])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("what", ["interval", "key_metric"])
def test_atomic_saver_survives_sigkill_while_writing(killed_while_saving, what):
    save_dir = killed_while_saving / f"atomic_{what}"
    expected = {"model_epoch=1.pt": 1.0} if what == "interval" else {"model.pt": 1.0}
    assert _loadable(save_dir) == expected  # the epoch-1 file is intact and still there
    assert len(list(save_dir.glob(".*.part"))) == 1  # the half-written temp file, never under a .pt name


@pytest.mark.parametrize("what, left", [("interval", "model_epoch=2.pt"), ("key_metric", "model.pt")])
def test_monai_saver_loses_the_checkpoint_when_killed_while_writing(killed_while_saving, what, left):
    """Why the configs need AtomicCheckpointSaver: MONAI's CheckpointSaver deletes the previous file (epoch 1's
    checkpoint, or the best model.pt) and then writes the new one in place; killed half-way, no loadable checkpoint is
    left. (If this starts failing, MONAI writes atomically now.)"""
    save_dir = killed_while_saving / f"monai_{what}"
    assert [f.name for f in save_dir.glob("*.pt")] == [left]
    with pytest.raises((RuntimeError, OSError, EOFError)):  # a truncated zip archive
        torch.load(save_dir / left, weights_only=True)


def test_atomic_saver_replaces_and_removes_after_writing(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=2)
    saver.attach(engine)
    (tmp_path / ".model_epoch=3.pt.0123abcd.part").write_bytes(b"left by a killed run")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "model_epoch=30.pt")  # an older run's: resume must not pick it
    (tmp_path / "model_epoch=30.pt.bak").write_bytes(b"not ours")
    engine.run([0], max_epochs=4)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model_epoch=3.pt", "model_epoch=30.pt.bak",
                                                          "model_epoch=4.pt"]
    mode = (tmp_path / "model_epoch=4.pt").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_failed_save_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """A full disk fails inside torch.save with a message that names neither the file nor the problem (as on a 64 KiB
    tmpfs: "[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 790")."""
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=1).attach(engine)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if engine.state.epoch == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 790")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError) as err:
        engine.run([0], max_epochs=3)
    assert str(tmp_path / "model_epoch=2.pt") in str(err.value)
    assert [f.name for f in tmp_path.iterdir()] == ["model_epoch=1.pt"]  # kept, and no temporary file left
    torch.load(tmp_path / "model_epoch=1.pt", weights_only=True)


def test_a_file_that_is_no_pickle_is_not_called_a_pickle_that_holds_code(tmp_path):
    for name, data in [("settings.json", b'{"lr": 0.1}'), ("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(64))]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as err:
            load_into(small(), tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "code" not in str(err.value), str(err.value)
