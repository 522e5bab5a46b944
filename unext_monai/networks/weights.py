"""Trained weights that run at full float32 speed on CPUs."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["NEGLIGIBLE_WEIGHT", "negligible_values", "zero_negligible_weights"]

#: magnitude below which a weight value is set to 0 by :func:`zero_negligible_weights`
NEGLIGIBLE_WEIGHT = 1e-30


def zero_negligible_weights(tensors: Iterable[torch.Tensor], below: float = NEGLIGIBLE_WEIGHT) -> int:
    """Set the values of the floating-point ``tensors`` smaller in magnitude than ``below`` (but not 0, read from the
    bits: also where subnormals are flushed) to 0, in place; return how many there were.

    Weight decay shrinks the weights of units that stopped learning far below float32's smallest normal number, and
    products with them are subnormal numbers, many times slower on x86 CPUs (``benchmarks/results/
    fp32_subnormal_training.md``). Below 1e-30 a value is 23 orders of magnitude under float32's resolution of
    anything it is added to, so outputs do not change."""
    count = 0
    with torch.no_grad():
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            negligible = negligible_values(tensor, below)
            found = int(negligible.sum())
            if found:
                tensor.masked_fill_(negligible, 0)
                count += found
    return count


#: integer dtype of each floating-point element size, to read a float's bits
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def negligible_values(tensor: torch.Tensor, below: float = NEGLIGIBLE_WEIGHT) -> torch.Tensor:
    """Boolean mask, the shape of the floating-point ``tensor``: its values that are not 0 as stored and smaller in
    magnitude than ``below`` (``torch.finfo(dtype).tiny`` for the subnormal ones). Read from the bits, so a process
    that flushes subnormal numbers (where they compare equal to 0) counts them too."""
    nonzero = (tensor.view(_BITS[tensor.element_size()]) << 1) != 0  # the shift drops the sign bit
    return nonzero & (tensor.abs() < below)
