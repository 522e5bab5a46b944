"""The one way pictures and masks are read and results written: the pre-flight check, training, evaluation,
inference, MONAI Label and MONAI Deploy all use these, so no check can pass what a loader then reads differently.

What a mask means (:func:`mask_labels`): its stored values (a palette PNG's indices, not its colours; gray values; an
RGB(A) mask with equal channels as gray). With one class, 0 is background and the one other value present (1, 255,
...) is lesion; with K classes, values are the class numbers 0..K. Anything else (several lesion values in a binary
mask, values outside 0..K, colour or fractional masks) is refused with the file and its values named: never guessed.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import struct
import zlib
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, ITKReader, MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImage, MapTransform
from monai.transforms.utils import get_largest_connected_component_mask
from monai.utils import optional_import
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from .io import NIFTI_SUFFIXES, file_stem, write_atomic

__all__ = ["IMAGE_SUFFIXES", "NOT_INPUTS", "picture_readers", "ToModelChannelsd", "mask_labels", "LoadMaskd",
           "read_picture", "pictures_in", "LesionConfidenceGated", "OVERLAY_COLOURS", "output_files",
           "write_segmentation", "SavePredictiond"]

logger = logging.getLogger(__name__.split(".")[0])

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: every file type the bundle reads: PIL pictures, ITK (NRRD, MetaImage), DICOM, NIfTI
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *ITK_SUFFIXES, ".dcm", *NIFTI_SUFFIXES)
#: file stems that are no input: ground-truth masks (``case_mask``, BUSI's ``case_mask_1``, ISIC's
#: ``case_segmentation``) and outputs (``case_overlay``, the Deploy app's ``case_seg``)
NOT_INPUTS = re.compile(r"_(mask(_\d+)?|segmentation|overlay|seg)$", re.IGNORECASE)


def _intensities(image: Image.Image) -> Image.Image:
    """Palette and CMYK pictures as RGB(A) intensities (PIL would give palette indices, four CMYK channels)."""
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    return image.convert("RGB") if image.mode == "CMYK" else image


class _SuffixOnly:
    """A MONAI reader of its own file types only (``LoadImage`` tries every reader on every file: ITK would read
    NIfTI without nibabel's orientation, a damaged PNG be reported as bad DICOM)."""

    suffixes: tuple[str, ...] = ()

    def verify_suffix(self, filename: Any) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(str(n).lower().endswith(self.suffixes) for n in names)

    def read(self, data: Any, **kwargs: Any) -> Any:
        if not self.verify_suffix(data):
            raise ValueError(f"{data}: not a {'/'.join(self.suffixes)} file")
        return super().read(data, **kwargs)


class _PILPictureReader(PILReader):
    """MONAI's PIL reader naming a damaged file (PIL decodes it in ``get_data``, where MONAI names no file)."""

    def get_data(self, img: Any) -> Any:
        try:
            return super().get_data(img)
        except OSError as e:
            raise ValueError(f"{getattr(img, 'filename', 'a picture')}: damaged or cut short ({e})") from None


class _ITKPictureReader(_SuffixOnly, ITKReader):
    """NRRD / MetaImage, copied out of ITK's buffer (MONAI returns a view that is overwritten once ITK frees it)."""

    suffixes = ITK_SUFFIXES

    def _get_array_data(self, img: Any) -> np.ndarray:
        return np.array(super()._get_array_data(img), copy=True)


class _DicomReader(_SuffixOnly, PydicomReader):
    suffixes = (".dcm",)


def picture_readers(dicom: bool = True, masks: bool = False) -> list[ImageReader]:
    """Readers for ``LoadImage(d)`` giving 2D files in (H, W[, C]) order: PIL (PNG, JPEG, BMP, TIFF), pydicom
    (``dicom``), ITK for NRRD/MetaImage when ``itk`` is installed; NIfTI goes to MONAI's default nibabel reader.
    ``masks`` keeps PIL's stored values (palette indices) instead of intensities."""
    readers: list[ImageReader] = [_ITKPictureReader(reverse_indexing=True)] if optional_import("itk")[1] else []
    if dicom:
        readers.append(_DicomReader(swap_ij=False))
    return readers + [_PILPictureReader(reverse_indexing=False, converter=None if masks else _intensities)]


class ToModelChannelsd(MapTransform):
    """Pictures as read, channel-first (C, H, W), to float32 network input (channels, H, W) in [0, 1]: 8-bit ones
    divided by 255, 16-bit ones by 65535, other data (DICOM, NIfTI) min-max scaled (MONAI's ``ScaleIntensityd`` would
    scale every picture by its own range); alpha dropped; gray repeated for 3 channels, RGB to luminance for 1."""

    def __init__(self, keys: KeysCollection, channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.dim() == 4 and img.shape[0] == 1 and img.shape[-1] in (3, 4) and _source(img).endswith(".dcm"):
                img = img[0].movedim(-1, 0)  # RGB DICOM: MONAI's reader gives no channel axis
            c = img.shape[0] - (img.shape[0] in (2, 4))  # without alpha
            if c not in (1, 3):
                raise ValueError(f"{_source(img)}: expected a gray, RGB or RGBA picture, got {img.shape[0]} channels.")
            img = img[:c]
            if img.dtype == torch.uint8:
                img = img.float() / 255.0
            elif img.dtype in (torch.uint16, torch.int32):  # 16-bit PNG as PIL reads it
                img = img.float() / 65535.0
            else:
                img = img.float()
                lo, hi = img.min(), img.max()
                if lo < 0 or hi > 1:
                    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
            if c == 1 and self.channels == 3:
                img = img.repeat(3, *([1] * (img.dim() - 1)))
            elif c == 3 and self.channels == 1:
                img = (img * torch.tensor([0.299, 0.587, 0.114]).view(3, *([1] * (img.dim() - 1)))).sum(0, True)
            d[key] = img
        return d


def _shown(values: np.ndarray) -> str:
    more = f", ... ({len(values)} values)" if len(values) > 8 else ""
    return "[" + ", ".join(f"{v:g}" for v in values[:8]) + more + "]"


def mask_labels(mask: np.ndarray, source: str, num_classes: int = 1) -> np.ndarray:
    """The label map (H, W) uint8 of a mask as read, by the module's rule (0/1 with one class, 0..K with K); raises
    ``ValueError`` naming ``source`` for anything else (colour, fractional, not 2D, other values)."""
    a = np.asarray(mask)
    a = a.astype(np.uint8) if a.dtype == bool else a
    if a.ndim == 3 and a.shape[-1] in (2, 3, 4):
        a = a[..., : 3 if a.shape[-1] >= 3 else 1]  # alpha ignored
        if a.shape[-1] == 3 and not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
            raise ValueError(f"{source}: a colour mask; save masks as gray or palette label maps (0 background)")
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{source}: a mask of shape {a.shape}; a 2D mask is expected")
    values = np.unique(a)
    if not np.array_equal(values, np.round(values)):
        raise ValueError(f"{source}: mask values {_shown(values)} are not whole numbers")
    lesion = values[values != 0]
    if num_classes == 1 and len(lesion) > 1:
        raise ValueError(f"{source}: mask values {_shown(values)}; a binary mask holds 0 and one lesion value")
    if num_classes > 1 and (lesion.min(initial=1) < 1 or lesion.max(initial=0) > num_classes):
        raise ValueError(f"{source}: mask values {_shown(values)} outside the class numbers 0..{num_classes}")
    return (a != 0).astype(np.uint8) if num_classes == 1 else a.astype(np.uint8)


class LoadMaskd(MapTransform):
    """Mask files (one path, or several to merge: BUSI's one per lesion) -> a label map (1, H, W) uint8 by
    :func:`mask_labels`, with the first file's metadata; masks of another size than ``image_key``'s are refused.

    Args:
        class_names: the foreground classes, in class-number order (one: binary lesion / background).
        class_key: the item's key naming its class (BUSI's folder): the masks are then binary and their lesion
            pixels get that class's number; an item of a class not in ``class_names`` must have no lesion.
    """

    def __init__(self, keys: KeysCollection, class_names: Sequence[str] = ("lesion",), class_key: str | None = None,
                 image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.class_names, self.class_key, self.image_key = list(class_names), class_key, image_key
        self.loader = LoadImage(reader=picture_readers(masks=True), image_only=True, dtype=None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            paths = [d[key]] if isinstance(d[key], (str, os.PathLike)) else list(d[key])
            if not paths:
                raise ValueError(f"{d.get(self.image_key, key)}: no mask file given")
            by_class = self.class_key is not None
            first, union = None, None
            for path in paths:
                m = self.loader(path)
                labels = mask_labels(np.asarray(m), str(path), 1 if by_class else len(self.class_names))
                if union is not None and labels.shape != union.shape:
                    raise ValueError(f"{path}: mask size {labels.shape} differs from {paths[0]}'s {union.shape}")
                first, union = first if first is not None else m, labels if union is None else np.maximum(union, labels)
            if by_class:
                name = d.get(self.class_key)
                value = self.class_names.index(name) + 1 if name in self.class_names else 0
                if value == 0 and union.any():
                    raise ValueError(f"{paths[0]}: a lesion in an image of class {name!r} ({self.class_names})")
                union = union * value
            image = d.get(self.image_key)
            size = tuple(image.shape[1:3]) if isinstance(image, torch.Tensor) else union.shape  # (C, H, W[, RGB])
            if size != union.shape:
                raise ValueError(f"{paths[0]}: mask size {union.shape} differs from its image's {size}")
            d[key] = MetaTensor(torch.from_numpy(union)[None], meta=getattr(first, "meta", None))
        return d


_PICTURE_READING: list[Any] = []  # (loader, readers by type), made on first use


def read_picture(path: str) -> MetaTensor:
    """``path`` read as the bundle reads pictures (the :func:`picture_readers` reader of its type, NIfTI with
    nibabel), channel-first float (C, H, W) in [0, 1]; a damaged file raises its reader's own error."""
    if not _PICTURE_READING:
        readers = picture_readers()
        _PICTURE_READING.extend([LoadImage(image_only=True, dtype=None, ensure_channel_first=True),
                                 [*readers[:-1], NibabelReader(), readers[-1]]])
    loader, readers = _PICTURE_READING
    reader = next((r for r in readers[:-1] if r.verify_suffix(path)), readers[-1])
    return ToModelChannelsd("image", channels=3)({"image": loader(path, reader=reader)})["image"]


def pictures_in(input_path: str) -> list[dict[str, str]]:
    """The datalist ``[{"image": path}]`` of a picture file or of the pictures in a folder (:data:`IMAGE_SUFFIXES`,
    hidden files and :data:`NOT_INPUTS` left out), sorted. Raises ``ValueError`` naming a path without any."""
    if not input_path or not os.path.exists(input_path):
        raise ValueError(f"input_path {input_path}: no such file or folder; give --input_path (a picture or a folder)")
    files = [input_path] if os.path.isfile(input_path) else glob.glob(os.path.join(glob.escape(input_path), "*"))
    pictures = [{"image": os.path.abspath(f)} for f in sorted(files) if os.path.isfile(f)
                and f.lower().endswith(IMAGE_SUFFIXES) and not NOT_INPUTS.search(file_stem(f))]
    if not pictures:
        raise ValueError(f"{input_path}: no picture to segment ({', '.join(IMAGE_SUFFIXES)})")
    return pictures


class LesionConfidenceGated(MapTransform):
    """No lesion (all background) where the mean lesion probability over the largest region above ``threshold`` is
    under ``min_confidence`` (MONAI has no image-level rejection of a weak prediction). Between ``Activationsd`` and
    the threshold or argmax: (1, H, W) sigmoid or (K+1, H, W) softmax probabilities (lesion: 1 - background)."""

    def __init__(self, keys: KeysCollection, min_confidence: float, threshold: float = 0.5,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence, self.threshold = min_confidence, threshold

    def confidence(self, prob: torch.Tensor) -> float:
        """Mean probability over the largest connected region of ``prob > threshold`` (0 when there is none)."""
        marked = prob > self.threshold
        return float(prob[get_largest_connected_component_mask(marked).bool()].float().mean()) if marked.any() else 0.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            prob = torch.as_tensor(d[key])
            if self.confidence(prob if len(prob) == 1 else 1 - prob[:1]) < self.min_confidence:
                d[key] = d[key] * 0
                if len(prob) > 1:
                    d[key][0] = 1
        return d


def _source(img: Any) -> str:
    return str((getattr(img, "meta", None) or {}).get("filename_or_obj", "input"))


#: the overlay's tint of class values 1, 2, ... (repeating), named as the card names them; outlines are yellow
OVERLAY_COLOURS = (("red", (255, 0, 0)), ("blue", (0, 160, 255)), ("green", (0, 200, 0)), ("magenta", (255, 0, 255)),
                   ("orange", (255, 160, 0)))


def _overlay(source: str | torch.Tensor, labels: np.ndarray, class_names: Sequence[str] = ()) -> np.ndarray | None:
    """The picture (its file, or (C, H, W) as read) as 8-bit RGB (H, W, 3), each class tinted (0.6 picture, 0.4
    colour) and outlined, with several ``class_names`` their legend; ``None`` if its size is not the labels'
    (``monai.visualize.blend_images`` needs matplotlib)."""
    picture = read_picture(source) if isinstance(source, str) else ToModelChannelsd("image")({"image": source})["image"]
    if tuple(picture.shape[1:]) != labels.shape:
        return None
    rgb = (picture.as_subclass(torch.Tensor).movedim(0, -1) * 255.0).round_().to(torch.uint8).numpy()
    for value in range(1, int(labels.max(initial=0)) + 1):
        region = labels == value
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        if not len(rows):
            continue
        box = np.s_[max(rows[0] - 2, 0): rows[-1] + 3, max(cols[0] - 2, 0): cols[-1] + 3]  # 2 pixels wider
        inside, part = region[box][..., None], rgb[box]
        colour = 4 * np.array(OVERLAY_COLOURS[(value - 1) % len(OVERLAY_COLOURS)][1], np.uint16)
        part[...] = np.where(inside, (part * np.uint16(6) + colour + 5) // 10, part)
        part[...] = np.where(inside & ~binary_erosion(inside[..., 0], iterations=2)[..., None], (255, 255, 0), part)
    if len(class_names) > 1:
        draw = ImageDraw.Draw(picture := Image.fromarray(rgb))
        for i, name in enumerate(class_names):
            y = 4 + 14 * i
            draw.rectangle(draw.textbbox((18, y), str(name)), fill=(0, 0, 0))
            draw.text((18, y), str(name), fill=(255, 255, 255))
            draw.rectangle([4, y + 1, 14, y + 11], fill=OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)][1],
                           outline=(255, 255, 0))
        rgb = np.asarray(picture)
    return rgb


def _write_png(path: str, pixels: np.ndarray) -> None:
    """8-bit gray (H, W) or RGB (H, W, 3) ``pixels`` written atomically (not flushed: a run can write it again) as a
    PNG, each row stored as its difference from the row above (PNG's "up" filter), deflated at level 1. Pillow tries
    all five filters on every row, which costs more than the deflating."""
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(pixels.shape[0], -1)
    data = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    data[:, 0], data[0, 1:] = 2, rows[0]
    np.subtract(rows[1:], rows[:-1], out=data[1:, 1:])
    chunks = [(b"IHDR", struct.pack(">2I5B", *pixels.shape[1::-1], 8, 0 if pixels.ndim == 2 else 2, 0, 0, 0)),
              (b"IDAT", zlib.compress(data, 1)), (b"IEND", b"")]
    png = b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(body)) + kind + body
                                         + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks)
    write_atomic(path, lambda p: Path(p).write_bytes(png), durable=False)


def output_files(folder: str, stem: str, image: str, overlay: bool = True) -> list[str]:
    """The mask file of the picture ``image`` in ``folder``, ``<stem>_mask.png`` (NIfTI: ``.nii.gz``), and with
    ``overlay`` its ``<stem>_overlay.png``."""
    mask = os.path.join(folder, f"{stem}_mask{'.nii.gz' if image.lower().endswith(NIFTI_SUFFIXES) else '.png'}")
    return [mask, *([os.path.join(folder, f"{stem}_overlay.png")] if overlay else [])]


def write_segmentation(labels: np.ndarray, source: str | torch.Tensor, mask_path: str, overlay_path: str | None = None,
                       affine: np.ndarray | None = None, class_names: Sequence[str] = ("lesion",)) -> list[str]:
    """Write the label map (H, W) of the picture ``source`` (its file, or as read: (C, H, W)) atomically, not flushed
    (a run can write it again): a PNG (one class: 0/255; K ``class_names``: their numbers) or NIfTI with ``affine``;
    with ``overlay_path`` the :func:`_overlay` PNG. Returns the paths written (no overlay where the sizes differ)."""
    labels = np.asarray(labels).astype(np.uint8)
    if mask_path.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        image = nib.Nifti1Image(labels, np.eye(4) if affine is None else np.asarray(affine))
        write_atomic(mask_path, lambda p: nib.save(image, p), durable=False)
    else:
        _write_png(mask_path, labels * 255 if len(class_names) == 1 else labels)
    overlay = _overlay(source, labels, class_names) if overlay_path else None
    if overlay is not None:
        _write_png(overlay_path, overlay)
    return [mask_path, *([overlay_path] if overlay is not None else [])]


class SavePredictiond(MapTransform):
    """Write each label map (1, H, W, the picture's size) with :func:`write_segmentation` to the item's ``mask_file``
    and ``overlay_file`` (:func:`unext_monai.data.inputs.plan_inference`) or, given ``output_dir``, to
    ``<stem>_mask.png`` (NIfTI: ``.nii.gz``) and, with ``overlay``, ``<stem>_overlay.png`` there; the paths go to
    ``<key>_files``. ``class_names``: one, a binary 0/255 mask; several, their numbers and the overlay's legend, drawn
    on ``picture_key`` (the picture as read) or else the file. MONAI's ``SaveImaged`` writes no overlay."""

    def __init__(self, keys: KeysCollection, class_names: Sequence[str] = ("lesion",), output_dir: str | None = None,
                 overlay: bool = True, overwrite: bool = False, image_key: str = "image",
                 picture_key: str = "picture", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.class_names, self.image_key, self.picture_key = list(class_names), image_key, picture_key
        self.output_dir, self.overlay, self.overwrite = output_dir, overlay, overwrite

    def outputs(self, item: Mapping[Hashable, Any]) -> list[str]:
        """The mask file and the overlay file (if any) of the datalist ``item``."""
        if self.output_dir is None:
            return [item["mask_file"], *([item["overlay_file"]] if item.get("overlay_file") else [])]
        image = str(item[self.image_key])
        return output_files(self.output_dir, file_stem(image), image, self.overlay)

    def refuse_existing(self, datalist: Sequence[Mapping[Hashable, Any]]) -> None:
        """Raise ``ValueError`` naming an output two items share, or one that exists (unless ``overwrite``)."""
        seen: set[str] = set()
        for item in datalist:
            for path in self.outputs(item):
                if path in seen:
                    raise ValueError(f"{path}: two inputs would write it; segment them into separate output_dirs")
                seen.add(path)
                if os.path.lexists(path) and not self.overwrite:
                    raise ValueError(f"{path}: exists, and this run did not write it; choose another output_dir, or "
                                     "pass --overwrite True to replace it")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            labels = np.asarray(torch.as_tensor(pred).detach().cpu()).squeeze(0)
            source = _source(d.get(self.image_key))
            affine = (getattr(pred, "meta", None) or {}).get("original_affine")
            paths = self.outputs({**d, self.image_key: source})
            d[f"{key}_files"] = write_segmentation(labels, d.get(self.picture_key, source), paths[0],
                                                  paths[1] if len(paths) > 1 else None, affine, self.class_names)
            if not labels.any():
                logger.info(f"{source}: no lesion found")
        return d
