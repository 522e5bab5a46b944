"""Sizes of the paper's UNeXt in 2D and of its 3D variant: parameters and multiply-adds, and one forward pass each.

Run ``python benchmarks/sizes.py``.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from unext_monai import UNEXT_S_FEATURES, UNeXt


def describe(net: UNeXt, shape: tuple[int, ...]) -> str:
    """One line: parameters, multiply-adds (convolutions and matrix products, as FlopCounterMode counts / 2) and
    the time of one forward pass of an input of ``shape`` on this machine."""
    net = net.eval()
    x = torch.rand(*shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(x)
    start = time.perf_counter()
    with torch.no_grad():
        net(x)
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in net.parameters())
    return (f"{params:>10,} parameters  {counter.get_total_flops() / 2e9:7.3f} G multiply-adds  "
            f"input {tuple(shape)} -> {tuple(out.shape)}  {elapsed * 1000:7.1f} ms")


def main() -> None:
    torch.manual_seed(0)
    print("UNeXt   2D:", describe(UNeXt(2, 3, 1), (1, 3, 256, 256)))
    print("UNeXt-S 2D:", describe(UNeXt(2, 3, 1, features=UNEXT_S_FEATURES), (1, 3, 256, 256)))
    print("UNeXt   3D:", describe(UNeXt(3, 1, 1), (1, 1, 64, 80, 96)))
    print("UNeXt-S 3D:", describe(UNeXt(3, 1, 1, features=UNEXT_S_FEATURES), (1, 1, 64, 80, 96)))


if __name__ == "__main__":
    main()
