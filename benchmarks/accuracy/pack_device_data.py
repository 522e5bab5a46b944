"""Copy ISIC 2018 and BUSI (benign + malignant) into an ignored folder small enough to travel to a GPU machine.

The device tool sends at most 64 MiB. ISIC's JPEGs are copied as they are; BUSI's RGB PNGs whose three channels are
equal (611 of 624 here) are re-encoded as 8-bit grayscale PNGs, which the bundle's ``ToModelChannelsd`` turns back
into the same three-channel tensor, so training sees identical inputs. Masks are copied unchanged.

Usage: python benchmarks/accuracy/pack_device_data.py ../shared/data .device/data
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
from PIL import Image


def main(src: str, dst: str) -> None:
    isic_src = os.path.join(src, "isic2018")
    shutil.copytree(isic_src, os.path.join(dst, "isic2018"), dirs_exist_ok=True)
    for cls in ("benign", "malignant"):
        folder = os.path.join(src, "busi", "Dataset_BUSI_with_GT", cls)
        out = os.path.join(dst, "busi", "Dataset_BUSI_with_GT", cls)
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if "_mask" in name:
                shutil.copy2(path, os.path.join(out, name))
                continue
            rgb = np.asarray(Image.open(path).convert("RGB"))
            gray = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
            Image.fromarray(rgb[..., 0] if gray else rgb).save(os.path.join(out, name), format="PNG", optimize=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
