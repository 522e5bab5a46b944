"""Export of UNeXt to ONNX with dynamic batch and spatial size."""

from __future__ import annotations

import os
import warnings

import torch
from monai.networks.utils import convert_to_onnx

from unext_monai.io import write_atomic
from unext_monai.networks.weights import zero_negligible_weights

__all__ = ["export_onnx"]


def _zero_negligible_constants(onnx_file: str) -> None:
    """:func:`zero_negligible_weights` on the floating-point initializers of ``onnx_file``, rewritten in place."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_file)
    changed = False
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init).copy()
        if array.dtype.kind == "f" and zero_negligible_weights([torch.from_numpy(array)]):
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            changed = True
    if changed:
        onnx.save(model, onnx_file)


def export_onnx(
    net: torch.nn.Module, path: str | os.PathLike, in_channels: int, spatial_dims: int = 2, opset: int = 18
) -> str:
    """Write ``net`` (put in eval mode) atomically to an ONNX file whose input ``image`` (B, in_channels, *spatial)
    and output ``pred`` have dynamic batch and spatial sizes (any, down to 1x1), with MONAI's ``convert_to_onnx`` and
    PyTorch's TorchScript-based exporter (``dynamo=True`` specialises the example's batch); returns the path. The
    exporter folds BatchNorm into the convolutions: folded constants below 1e-30 are set to 0 as in the weights
    (:func:`~unext_monai.networks.weights.zero_negligible_weights`), so ONNX Runtime computes no subnormals."""
    names = ["batch"] + [f"spatial_{i}" for i in range(spatial_dims)]
    axes = {0: names[0], **{2 + i: names[1 + i] for i in range(spatial_dims)}}
    example = torch.rand(2, in_channels, *([64] * spatial_dims))

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # the legacy exporter is chosen (see above); the input check and the memory-format choice of forward()
            # are constants of the traced graph, as they should be
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message="The feature will be removed")
            convert_to_onnx(net, [example], input_names=["image"], output_names=["pred"], opset_version=opset,
                            dynamic_axes={"image": axes, "pred": axes}, filename=tmp, dynamo=False)
        _zero_negligible_constants(tmp)

    return write_atomic(path, write)
