"""A short demonstration: build the paper's UNeXt, report its size, and segment one synthetic image.

Run ``python -m unext_monai.demo``.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from unext_monai import UNeXt


def main() -> None:
    net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1).eval()
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        logits = net(image)
    start = time.perf_counter()
    with torch.no_grad():
        net(image)
    elapsed = time.perf_counter() - start
    print(f"UNeXt: {sum(p.numel() for p in net.parameters()):,} parameters, "
          f"{counter.get_total_flops() / 1e9:.3f} GFLOP per 256x256 image")
    print(f"logits {tuple(logits.shape)}, one forward pass {elapsed * 1000:.1f} ms")


if __name__ == "__main__":
    main()
