"""The checks a release passes before it appears: the model zoo's tools, TorchScript and ONNX parity, the configs."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["ReleaseError", "run_tool", "check_torchscript", "export_and_check_onnx",
           "check_inference_config", "TS_ATOL", "ONNX_ATOL"]

ONNX_ATOL = 1e-4
TS_ATOL = 1e-4  # the eager path folds BatchNorm on the fly in eval: float rounding differs from TorchScript


class ReleaseError(RuntimeError):
    """A release that cannot be built or fails one of its checks."""


def run_tool(name: str, bundle_dir: str, **kwargs: Any) -> None:
    """Run MONAI's bundle tool ``monai.bundle.<name>`` (``verify_net_in_out``, ``ckpt_export``) on the bundle in
    ``bundle_dir`` with ``kwargs`` as its arguments, in this process; call it inside ``bundle_on_path(bundle_dir)``, so
    that the bundle's own ``scripts`` import. (A fresh interpreter per tool cost MONAI's import again, about 5 s, and
    checked nothing more: it had ``unext_monai`` too. The tools' run without it is ``tests/test_zoo_checks.py``.)

    Raises:
        ReleaseError: the tool failed; the message names it and says why.
    """
    import monai.bundle

    tool = getattr(monai.bundle, name)
    try:
        tool(bundle_root=bundle_dir, **kwargs)
    except Exception as e:
        raise ReleaseError(f"{name} failed on {bundle_dir}: {type(e).__name__}: {e}") from e


def _inputs(in_channels: int, shapes: list[tuple[int, int, int]], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, in_channels, h, w, generator=g) for b, h, w in shapes]


def check_torchscript(ts_file: str, net: torch.nn.Module, in_channels: int, embedded: list[str]) -> float:
    """``ts_file`` embeds ``metadata.json`` and ``embedded`` and matches ``net``; returns the max abs difference."""
    extra = {"metadata.json": "", **{c: "" for c in embedded}}
    ts = torch.jit.load(ts_file, map_location="cpu", _extra_files=extra)
    missing = [k for k, v in extra.items() if not v]
    if missing:
        raise ReleaseError(f"{ts_file}: embedded configs missing: {missing}")
    diff = 0.0
    with torch.no_grad():
        for x in _inputs(in_channels, [(1, 256, 256), (2, 192, 256)], seed=0):
            diff = max(diff, float((ts(x) - net(x)).abs().max()))
    if diff > TS_ATOL:
        raise ReleaseError(f"{ts_file}: TorchScript output differs from PyTorch by {diff:.2e} > {TS_ATOL}")
    return diff


def export_and_check_onnx(net: torch.nn.Module, onnx_file: str, in_channels: int) -> tuple[float, list, int]:
    """Export ``net`` to ``onnx_file`` and compare ONNX Runtime with PyTorch; returns (max abs diff, shapes, opset)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ReleaseError("ONNX export needs onnx and onnxruntime: pip install 'unext-monai[onnx]'") from e
    from unext_monai.networks.export import export_onnx

    opset = 18
    export_onnx(net, onnx_file, in_channels=in_channels, spatial_dims=2, opset=opset)
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    shapes = [(1, 256, 256), (2, 192, 320)]
    diff = 0.0
    with torch.no_grad():
        for x in _inputs(in_channels, shapes, seed=1):
            (out,) = session.run(None, {"image": x.numpy()})
            diff = max(diff, float(abs(out - net(x).numpy()).max()))
    if diff > ONNX_ATOL:
        raise ReleaseError(f"{onnx_file}: ONNX Runtime output differs from PyTorch by {diff:.2e} > {ONNX_ATOL}")
    return diff, [[b, in_channels, h, w] for b, h, w in shapes], opset


def check_inference_config(bundle_dir: str) -> None:
    """The packaged inference config resolves from the bundle folder: its components instantiate and its checkpoint
    path points into the bundle (call inside :func:`bundle_on_path`)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "inference.json"))
    parser.read_meta(os.path.join(bundle_dir, "configs", "metadata.json"))
    parser["bundle_root"] = bundle_dir
    for key in ("preprocessing", "postprocessing", "inferer"):
        parser.get_parsed_content(key)
    ckpt = os.path.join(parser.get_parsed_content("ckpt_dir"), "model.pt")
    if not os.path.isfile(ckpt):
        raise ReleaseError(f"inference.json's ckpt_dir does not hold the packaged model.pt ({ckpt})")
