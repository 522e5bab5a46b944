"""The built-in synthetic demo set: skin-toned pictures with one or two darker, irregular blobs, the mask the blobs, in
the UNeXt-pytorch layout (``images/demo_000.png``, ``masks/0/demo_000.png``); a small network learns it in a few
epochs, with nothing downloaded."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from unext_monai.folders import make_build_folder, replace_folder, tidy_build_leftovers

__all__ = ["make_demo_dataset", "existing_demo_dataset", "DEMO_VERSION"]

logger = logging.getLogger("unext_monai")

#: bumped whenever the generator's output changes, so that stale demo folders are rebuilt
DEMO_VERSION = 1

_MARKER = "demo_dataset.json"


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Noise in [-1, 1] that varies over about ``size / cells`` pixels (a bicubic upsampling of a coarse grid)."""
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """Soft membership in [0, 1] of one irregular elliptical blob (0.5 on its boundary)."""
    radius = float(rng.uniform(0.10, 0.22)) * size
    cy, cx = (float(c) * size for c in rng.uniform(0.3, 0.7, 2))
    angle = float(rng.uniform(0.0, np.pi))
    aspect = float(rng.uniform(0.6, 1.0))
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    dist = np.hypot(u, v)
    theta = np.arctan2(v, u)
    # an irregular outline: the radius wobbles with a few low angular frequencies
    outline = np.ones_like(theta)
    for k in range(2, 6):
        outline += float(rng.uniform(0.0, 0.25 / k)) * np.cos(k * theta + float(rng.uniform(0.0, 2 * np.pi)))
    softness = float(rng.uniform(1.0, 3.0))
    return 1.0 / (1.0 + np.exp(np.clip((dist - radius * outline) / softness, -40.0, 40.0)))


def _make_case(rng: np.random.Generator, size: int, classes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One ``(H, W, 3)`` uint8 RGB image and its ``(H, W)`` uint8 mask: 0/255, or with ``classes`` > 1 each blob's
    class number (class ``c`` has its own pigment hue)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    skin = (np.array([225.0, 180.0, 155.0]) + rng.uniform(-20.0, 20.0, 3)).astype(np.float32)
    tone = float(rng.uniform(-30.0, 25.0))  # lighter or darker brown, hue kept
    lesion_color = (np.array([115.0, 70.0, 55.0]) + tone + rng.uniform(-8.0, 8.0, 3)).astype(np.float32)
    shading = 12.0 * _smooth_noise(rng, size, 4)
    image = skin[None, None, :] + shading[..., None]

    blobs = [_blob(rng, yy, xx, size) for _ in range(int(rng.integers(1, 3)))]
    kinds = [int(rng.integers(1, classes + 1)) for _ in blobs] if classes > 1 else [1] * len(blobs)
    noise = 20.0 * _smooth_noise(rng, size, 12)[..., None]  # mottled pigment inside the lesion
    mask = np.zeros((size, size), np.uint8)
    for kind in sorted(set(kinds)):
        alpha = np.max([b for b, k in zip(blobs, kinds) if k == kind], axis=0)
        pigment = np.roll(lesion_color, kind - 1)[None, None, :] + noise
        image = image * (1.0 - alpha[..., None]) + pigment * alpha[..., None]
        mask[alpha > 0.5] = 255 if classes == 1 else kind
    image += 6.0 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor grain
    return np.clip(image, 0, 255).astype(np.uint8), mask


def existing_demo_dataset(directory: str) -> dict | None:
    """The arguments of the complete demo set in ``directory`` (made by this version), or ``None`` if there is none."""
    try:
        with open(os.path.join(directory, _MARKER), encoding="utf-8") as f:
            params = json.load(f)
        names = [f"demo_{i:03d}.png" for i in range(params["num_images"])]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    complete = params.get("version") == DEMO_VERSION and all(os.path.isfile(os.path.join(directory, sub, n))
                                                             for n in names for sub in ("images", "masks/0"))
    return params if complete else None


def make_demo_dataset(directory: str, num_images: int | None = None, size: int = 256, seed: int = 0,
                      classes: int = 1) -> str:
    """Write the synthetic demo set to ``directory`` and return it: ``images/demo_NNN.png`` (RGB),
    ``masks/0/demo_NNN.png`` (0/255; with ``classes`` > 1 the class numbers 1..classes) and ``demo_dataset.json`` (the
    arguments). Image ``i`` depends only on ``(seed, i)``. A complete set of the same arguments (without
    ``num_images``: of any size, else 40 images) is used as it is; otherwise the set is built beside ``directory`` and
    renamed into place, replacing an earlier demo set. A non-empty folder that is no demo set: ``FileExistsError``."""
    if num_images is None:
        existing = existing_demo_dataset(directory)
        if existing is not None and existing.get("classes", 1) == classes:
            return os.path.abspath(directory)
        num_images = 40
    if num_images < 1 or size < 16:
        raise ValueError(f"make_demo_dataset needs num_images >= 1 and size >= 16, got {num_images} and {size}")
    directory = os.path.abspath(directory)
    params = {"num_images": int(num_images), "size": int(size), "seed": int(seed), "version": DEMO_VERSION,
              **({"classes": int(classes)} if classes > 1 else {})}
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    # one process at a time (a lock on the parent folder): the ranks of a training make the same set, and a second
    # rename would move the set aside while the first rank reads it
    parent = os.open(os.path.dirname(directory), os.O_RDONLY)
    try:
        fcntl.flock(parent, fcntl.LOCK_EX)
        return _make(directory, params)
    finally:
        os.close(parent)


def _make(directory: str, params: dict) -> str:
    tidy_build_leftovers(directory)  # a set whose replacement was killed midway is back before it is looked at
    if existing_demo_dataset(directory) == params:
        return directory
    if os.path.isdir(directory) and os.listdir(directory) and not os.path.isfile(os.path.join(directory, _MARKER)):
        raise FileExistsError(f"{directory} exists and is not a demo set made by make_demo_dataset: choose another")

    tmp = make_build_folder(directory)
    try:
        os.makedirs(os.path.join(tmp, "images"))
        os.makedirs(os.path.join(tmp, "masks", "0"))
        for i in range(params["num_images"]):
            rng = np.random.default_rng([params["seed"], i])
            image, mask = _make_case(rng, params["size"], params.get("classes", 1))
            name = f"demo_{i:03d}.png"
            Image.fromarray(image, mode="RGB").save(os.path.join(tmp, "images", name), compress_level=1)
            Image.fromarray(mask, mode="L").save(os.path.join(tmp, "masks", "0", name))
        with open(os.path.join(tmp, _MARKER), "w", encoding="utf-8") as f:
            json.dump(params, f)
        replace_folder(tmp, directory)  # over a stale or incomplete demo set, or an empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"wrote the synthetic demo set ({params['num_images']} images, {params['size']}x{params['size']}, "
                f"seed {params['seed']}) to {directory}")
    return directory
