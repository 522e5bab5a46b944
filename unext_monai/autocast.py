"""Mixed precision on any device, which MONAI's engines lack (their ``amp`` autocasts CUDA only): the network under
``torch.autocast`` (:class:`AutocastInferer`), and the precision a device trains fastest in."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import SimpleInferer

from unext_monai.inferers import native_bf16

__all__ = ["AutocastInferer", "PRECISIONS", "default_precision"]

#: the precisions :class:`AutocastInferer` takes: float32 as is, or bfloat16 autocast
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def default_precision(device: torch.device | str) -> str:
    """``"bf16"`` on CPUs that compute it natively (``benchmarks/results/train_speed.md``), else ``"fp32"``."""
    device = torch.device(device)
    return "bf16" if device.type == "cpu" and native_bf16() else "fp32"


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (list, tuple)):  # deep supervision
        return type(output)(_to_float32(o) for o in output)
    return output


class AutocastInferer(SimpleInferer):
    """``SimpleInferer`` under ``torch.autocast`` in ``precision`` (``"fp32"``: none; ``"bf16"``) on the input's device
    type, returning float32 (a tensor or the deep-supervision list): MONAI's engines autocast on CUDA only."""

    def __init__(self, precision: str = "fp32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.dtype = PRECISIONS[precision]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if self.dtype is None:
            return network(inputs, *args, **kwargs)
        with torch.autocast(device_type=inputs.device.type, dtype=self.dtype):
            output = network(inputs, *args, **kwargs)
        return _to_float32(output)
