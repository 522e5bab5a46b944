# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Inferers: the network in a chosen floating-point precision (CPU as GPU), and flip test-time augmentation.

MONAI's engines take ``amp=True`` for mixed precision, but they autocast on CUDA only (``torch.autocast("cuda")``), so
on a CPU they run in float32 whatever the setting. :class:`AutocastInferer` is MONAI's ``SimpleInferer`` under
``torch.autocast`` on the input's own device type: bfloat16 doubles the training throughput of UNeXt on CPUs with
native bfloat16 arithmetic (``benchmarks/results/train_speed.md``), and the returned logits are float32 so that losses,
activations and metrics run in full precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import SimpleInferer

__all__ = ["AutocastInferer", "FlipTTAInferer", "PRECISIONS", "default_precision", "native_bf16"]

#: the precisions :class:`AutocastInferer` takes: float32 as is, or bfloat16 autocast
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CPU with AVX-512 BF16 or AMX (oneDNN's bf16 kernels), or a
    CUDA device that supports bf16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def default_precision(device: torch.device | str) -> str:
    """``"bf16"`` on CPUs with native bfloat16 arithmetic, where it was measured to train UNeXt about twice as fast to
    the same accuracy; ``"fp32"`` elsewhere (CPUs without it emulate bf16 slowly; on GPUs choose it yourself, or use
    MONAI's ``amp``)."""
    device = torch.device(device)
    return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (list, tuple)):  # deep supervision
        return type(output)(_to_float32(o) for o in output)
    return output


class AutocastInferer(SimpleInferer):
    """``SimpleInferer`` that runs the network under ``torch.autocast`` in ``precision`` on the input's device type.

    Use as the ``inferer`` of MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``: the backward pass follows the
    autocast forward, and the output (a tensor, or the deep-supervision list) is returned in float32. With
    ``precision="fp32"`` it is exactly ``SimpleInferer``.

    Args:
        precision: ``"fp32"`` or ``"bf16"`` (see :data:`PRECISIONS` and :func:`default_precision`).
    """

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


class FlipTTAInferer(SimpleInferer):
    """Test-time augmentation with flips: the mean of the network's logits over flipped copies of the input, each
    flipped back. Deterministic and invertible, so it slots in wherever ``SimpleInferer`` does (evaluation,
    inference); MONAI's ``TestTimeAugmentation`` draws random transforms per item through its own DataLoader to
    estimate uncertainty, which is another job.

    Args:
        flips: the spatial axes to flip, one tuple per pass; ``()`` is the input as is. The default, no flip, each
            axis, and both, costs four forward passes for 2D inputs.

    Shapes: ``inputs`` (B, C, *spatial) -> the network's output shape (a list for deep supervision is not supported:
    use the network in eval mode).
    """

    def __init__(self, flips: Sequence[Sequence[int]] = ((), (0,), (1,), (0, 1))) -> None:
        super().__init__()
        self.flips = [tuple(int(a) for a in f) for f in flips]
        if not self.flips:
            raise ValueError("flips must name at least one pass, e.g. [[], [0], [1]]")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = None
        for axes in self.flips:
            dims = [2 + a for a in axes]
            x = torch.flip(inputs, dims) if dims else inputs
            y = network(x, *args, **kwargs)
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"FlipTTAInferer needs a network that returns one tensor, got {type(y).__name__}")
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
        return total / len(self.flips)
