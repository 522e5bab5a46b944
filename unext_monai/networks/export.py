"""Export of UNeXt to ONNX with dynamic batch and spatial size."""

from __future__ import annotations

import os

import torch

__all__ = ["export_onnx"]


def export_onnx(
    net: torch.nn.Module, path: str | os.PathLike, in_channels: int, spatial_dims: int = 2, opset: int = 18
) -> str:
    """Write ``net`` (in eval mode) to an ONNX file whose input ``image`` (B, in_channels, *spatial) and output
    ``pred`` have dynamic batch and spatial sizes.

    The file is written to a temporary name and renamed, so a failed export leaves nothing behind.
    Returns the path written.
    """
    path = os.fspath(path)
    net = net.eval()
    names = ["batch"] + [f"spatial_{i}" for i in range(spatial_dims)]
    example = torch.rand(1, in_channels, *([64] * spatial_dims))
    axes = {0: names[0], **{2 + i: names[1 + i] for i in range(spatial_dims)}}
    tmp = f"{path}.tmp"
    try:
        with torch.no_grad():
            torch.onnx.export(
                net,
                (example,),
                tmp,
                input_names=["image"],
                output_names=["pred"],
                dynamic_axes={"image": axes, "pred": axes},
                opset_version=opset,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
