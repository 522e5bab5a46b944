# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Dictionary transforms the bundle's configs need and MONAI lacks.

- :class:`ToModelChannelsd`: any 2D picture as read (gray, RGB, RGBA; 8 or 16 bit) -> float (C, H, W) in [0, 1]
  with the channel count the network takes. MONAI's ``ScaleIntensityd`` rescales each image by its own min/max,
  which changes contrast per image; pictures must be scaled by their bit depth, once.
- :class:`LoadMaskd`: one or several mask files -> one binary (1, H, W) mask, the union of all (BUSI ships one file per
  lesion); MONAI's ``LoadImaged`` stacks several files as channels but has no union or binarisation.
- :class:`SavePredictiond`: writes the mask (PNG, or NIfTI for NIfTI input) and an overlay PNG atomically, to the
  paths inference planned, never over an input file; MONAI's ``SaveImaged`` writes in place with no overlay and
  transposes PIL-read 2D images.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, ITKReader, MetaTensor, PILReader, PydicomReader
from monai.transforms import LoadImage, MapTransform
from PIL import Image

from .io import NIFTI_SUFFIXES, file_stem, mask_file_name, overlay_file_name, write_atomic

__all__ = [
    "ToModelChannelsd",
    "LoadMaskd",
    "SavePredictiond",
    "LesionConfidenceGated",
    "standard_pil_mode",
    "picture_readers",
    "CopyingITKReader",
    "ITK_SUFFIXES",
    "overlay_picture",
]


def standard_pil_mode(image: Image.Image) -> Image.Image:
    """PIL image in a mode whose pixel values are intensities: palette images become RGB(A), CMYK becomes RGB.

    Pass as ``PILReader(converter=standard_pil_mode)``: without it a palette PNG is read as its palette indices and a
    CMYK JPEG as four channels.
    """
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    if image.mode == "CMYK":
        return image.convert("RGB")
    return image


#: suffixes of the formats of 3D Slicer and ITK tools that :func:`picture_readers` reads with MONAI's ``ITKReader``
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


class CopyingITKReader(ITKReader):
    """MONAI's ``ITKReader`` for NRRD and MetaImage files (:data:`ITK_SUFFIXES`) only, returning a copy of the
    pixels: MONAI's claims every file (NIfTI too, which ``NibabelReader`` reads with its affine) and returns
    ``itk.array_view_from_image``, a view of ITK's buffer that outlives the image object it belongs to, so its values
    are overwritten once the memory is reused (seen as corrupt rows of NRRD/MetaImage pictures)."""

    def verify_suffix(self, filename: Any) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return super().verify_suffix(filename) and all(str(n).lower().endswith(ITK_SUFFIXES) for n in names)

    def read(self, data: Any, **kwargs: Any) -> Any:
        # LoadImage tries a user's readers in turn until one reads the file: only ours are ours to read
        if not self.verify_suffix(data):
            raise ValueError(f"{data}: not an NRRD or MetaImage file ({', '.join(ITK_SUFFIXES)})")
        return super().read(data, **kwargs)

    def _get_array_data(self, img: Any) -> np.ndarray:
        return np.array(super()._get_array_data(img), copy=True)


def picture_readers(dicom: bool = False) -> list[ImageReader]:
    """MONAI readers for 2D pictures in (H, W[, C]) order: ``PILReader`` (with :func:`standard_pil_mode`) for PNG, JPEG,
    BMP and TIFF, with ``dicom`` ``PydicomReader`` for ``.dcm`` (gray and colour), and ITK (:class:`CopyingITKReader`)
    for NRRD and MetaImage (:data:`ITK_SUFFIXES`), as 3D Slicer and ITK tools write them. Give the list to
    ``LoadImage``/``LoadImaged`` as ``reader``: it tries them from the last, each on the suffixes it takes; other
    files (NIfTI) go to MONAI's default readers. ITK is optional (a packaged bundle does not require it): without
    ``itk`` installed, NRRD and MetaImage files are not read (the pre-flight check names them)."""
    from monai.utils import optional_import

    _, has_itk = optional_import("itk")
    readers: list[ImageReader] = [CopyingITKReader(reverse_indexing=True)] if has_itk else []
    if dicom:
        readers.append(PydicomReader(swap_ij=False))
    return readers + [PILReader(reverse_indexing=False, converter=standard_pil_mode)]


def _scale_to_unit(img: torch.Tensor) -> torch.Tensor:
    """uint8 / 16-bit pictures by their bit depth; anything else by its own range (NIfTI, DICOM)."""
    if img.dtype == torch.uint8:
        return img.float() / 255.0
    if img.dtype in (torch.uint16, torch.int32) and not img.is_floating_point():  # 16-bit PNG as PIL reads it
        return img.float() / 65535.0
    img = img.float()
    lo, hi = img.min(), img.max()
    if lo >= 0 and hi <= 1:
        return img
    return (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)


class ToModelChannelsd(MapTransform):
    """Turn channel-first pictures (C, H, W) as read into float32 network input (channels, H, W) in [0, 1].

    Gray (C=1) is repeated to 3 channels for an RGB network; RGB is converted to luminance (ITU-R 601) for a
    1-channel network; an alpha channel (C=2 or 4) is dropped. 8-bit pictures are divided by 255 and 16-bit ones by
    65535; other data (NIfTI, DICOM) is min-max scaled.

    Args:
        keys: keys of the pictures, channel-first (run ``EnsureChannelFirstd`` before).
        channels: channel count the network takes (1 or 3).
    """

    def __init__(self, keys: KeysCollection, channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.dim() == 4 and img.shape[0] == 1 and img.shape[-1] in (3, 4):
                img = img[0].movedim(-1, 0)  # a colour picture read without a channel axis (RGB DICOM)
            c = img.shape[0]
            if c in (2, 4):  # gray + alpha, RGB + alpha
                img = img[: c - 1]
                c -= 1
            if c not in (1, 3):
                raise ValueError(f"{_source(img)}: expected a gray, RGB or RGBA picture, got {c} channels.")
            img = _scale_to_unit(img)
            if c == 1 and self.channels == 3:
                img = img.repeat(3, *([1] * (img.dim() - 1)))
            elif c == 3 and self.channels == 1:
                weights = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype).view(3, *([1] * (img.dim() - 1)))
                img = (img * weights).sum(0, keepdim=True)
            d[key] = img.float()
        return d


class LoadMaskd(MapTransform):
    """Load a mask given as one path or a list of paths into one binary float mask (1, H, W), the union of all.

    Masks may be 0/1 or 0/255 (any value above half the maximum of its file type counts as lesion), gray or RGB(A).
    The files are read with :func:`picture_readers` (PNG, JPEG, BMP, TIFF, NRRD, MetaImage). The result carries the
    first file's metadata, in the same (H, W) indexing as the images.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(reader=picture_readers(), image_only=True, dtype=None)

    def _binary(self, path: str) -> MetaTensor:
        m = self.loader(path)
        arr = m.as_tensor() if isinstance(m, MetaTensor) else torch.as_tensor(m)
        if arr.dim() == 3:  # (H, W, C): any colour channel set, alpha ignored
            arr = arr[..., : 3 if arr.shape[-1] >= 3 else 1].amax(-1)
        threshold = 127 if arr.dtype == torch.uint8 and arr.max() > 1 else (0 if arr.max() <= 1 else arr.max() / 2)
        out = MetaTensor((arr > threshold).float()[None], meta=m.meta if isinstance(m, MetaTensor) else None)
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            paths = d[key]
            paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
            if not paths:
                raise ValueError(f"{d.get('image', key)}: no mask file given.")
            masks = [self._binary(p) for p in paths]
            union = masks[0]
            for p, m in zip(paths[1:], masks[1:]):
                if m.shape != union.shape:
                    raise ValueError(f"{p}: mask size {tuple(m.shape[1:])} differs from {paths[0]}'s "
                                     f"{tuple(union.shape[1:])}.")
                union = torch.maximum(union, m)
            d[key] = union
        return d


class LesionConfidenceGated(MapTransform):
    """Clear a probability map whose lesion is not confident (MONAI has no image-level rejection of a weak
    prediction): when the mean probability over the largest connected region above ``threshold`` is below
    ``min_confidence``, every value of ``keys`` becomes 0, so the image gets no lesion; otherwise it is unchanged.

    Place it between ``Activationsd(sigmoid=True)`` (and any ``Invertd``) and the threshold (``AsDiscreted``): it reads
    probabilities in [0, 1], shape (1, H, W[, D]). Lesion-free scans (BUSI's normal class) mostly give regions of
    middling probability, lesions mostly saturate; the bundles choose ``min_confidence`` on the selection split.
    """

    def __init__(self, keys: KeysCollection, min_confidence: float, threshold: float = 0.5,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = min_confidence
        self.threshold = threshold

    def confidence(self, prob: torch.Tensor) -> float:
        """Mean probability over the largest connected region of ``prob > threshold`` (0 when there is none)."""
        from monai.transforms.utils import get_largest_connected_component_mask

        marked = prob > self.threshold
        if not bool(marked.any()):
            return 0.0
        region = get_largest_connected_component_mask(marked)
        return float(prob[region.bool()].float().mean())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            prob = d[key]
            if self.confidence(torch.as_tensor(prob)) < self.min_confidence:
                d[key] = prob * 0
        return d


def _source(img: Any) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", "input"))


class SavePredictiond(MapTransform):
    """Write each predicted mask, atomically, plus an overlay PNG of it on the input picture.

    Where the data carries planned paths (``mask_file``, ``overlay_file``, as
    :func:`unext_monai.data.inputs.plan_inference` makes them, distinct for every input) it writes there.
    Otherwise, for input ``<dir>/<name>.<ext>``, it writes
    ``<output_dir>/<name>_mask.png`` and ``<output_dir>/<name>_overlay.png`` (``io.mask_file_name``,
    ``io.overlay_file_name``). The mask is 0/255 at the input's height, width and orientation; NIfTI input gets
    ``<name>_mask.nii.gz`` with the input's affine instead. The overlay is the input picture (PNG/JPEG/..., DICOM or
    NIfTI, as read) with the mask tinted and outlined. It refuses to write over the input file or over an existing
    file beside it. The written paths are stored under ``"<key>_files"`` (mask first).

    Args:
        keys: keys of binary masks (1, H, W) aligned with the input (after ``Invertd``).
        output_dir: folder for the outputs without planned paths, created if needed.
        image_key: key of the input image, whose metadata names the input file.
        overlay: whether to write the overlay PNG.
        mask_file_key, overlay_file_key: keys of the planned output paths in the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        image_key: str = "image",
        overlay: bool = True,
        mask_file_key: str = "mask_file",
        overlay_file_key: str = "overlay_file",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = output_dir
        self.image_key = image_key
        self.overlay = overlay
        self.mask_file_key = mask_file_key
        self.overlay_file_key = overlay_file_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            source = _source(pred) if _source(pred) != "input" else _source(d.get(self.image_key))
            d[f"{key}_files"] = self.save(pred, source, d.get(self.mask_file_key), d.get(self.overlay_file_key))
        return d

    def save(self, pred: torch.Tensor, source: str, mask_path: str | None = None,
             overlay_path: str | None = None) -> list[str]:
        """Write ``pred`` (1, H, W) for the input file ``source`` (to the given paths, else the default names);
        returns the paths written."""
        stem = file_stem(source)
        mask_path = mask_path or os.path.join(self.output_dir, mask_file_name(stem, source))
        mask = np.asarray(torch.as_tensor(pred).detach().cpu()).squeeze(0) > 0.5
        self._refuse_input(mask_path, source)
        if source.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            affine = np.asarray(getattr(pred, "meta", {}).get("original_affine", np.eye(4)))
            img = nib.Nifti1Image(mask.astype(np.uint8), affine)
            write_atomic(mask_path, lambda p: nib.save(img, p))
        else:
            write_atomic(mask_path, lambda p: Image.fromarray(mask.astype(np.uint8) * 255).save(p, format="PNG"))
        written = [mask_path]
        if self.overlay and os.path.isfile(source):
            overlay_path = overlay_path or os.path.join(self.output_dir, overlay_file_name(stem))
            self._refuse_input(overlay_path, source)
            picture = overlay_picture(source, mask)
            if picture is not None:
                write_atomic(overlay_path, lambda p: picture.save(p, format="PNG"))
                written.append(overlay_path)
        return written

    @staticmethod
    def _refuse_input(path: str, source: str) -> None:
        """Never write over the input, nor over an existing file beside it (such as its ground-truth mask)."""
        if not (os.path.exists(source) and os.path.exists(path)):
            return
        if os.path.samefile(path, source):
            raise ValueError(f"{path}: refusing to overwrite the input file; choose another output_dir.")
        if os.path.samefile(os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.abspath(source))):
            raise ValueError(f"{path}: exists beside the input {source} (a ground-truth mask?); refusing to overwrite "
                             "it: choose an output_dir other than the input folder.")


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """A gray (H, W) or colour (H, W, 3|4) array of any range as 8-bit RGB (H, W, 3)."""
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1].repeat(3, axis=-1)
    else:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if not (pixels.dtype == np.uint8):
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return arr


def _picture(source: str) -> np.ndarray | None:
    """The input as float RGB in [0, 255] (H, W, 3), in the row/column order the bundle reads it: PIL for pictures,
    pydicom for DICOM (``PydicomReader(swap_ij=False)``), nibabel for NIfTI; ``None`` if it cannot be read."""
    lower = source.lower()
    try:
        if lower.endswith(".dcm"):
            import pydicom

            ds = pydicom.dcmread(source)
            pixels = ds.pixel_array
            if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
                pixels = pixels.max() - pixels
            return _to_rgb8(pixels)
        if lower.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            return _to_rgb8(np.squeeze(np.asanyarray(nib.load(source).dataobj)))
        with Image.open(source) as im:
            return np.asarray(standard_pil_mode(im).convert("RGB"), dtype=np.float64)
    except Exception:
        return None


def overlay_picture(source: str, mask: np.ndarray) -> Image.Image | None:
    """The input picture (if it can be read and its size matches) with the mask tinted red and outlined."""
    rgb = _picture(source)
    if rgb is None or rgb.shape[:2] != mask.shape:
        return None
    from scipy.ndimage import binary_erosion

    edge = mask & ~binary_erosion(mask, iterations=2)
    out = rgb.copy()
    out[mask] = 0.6 * out[mask] + 0.4 * np.array([255.0, 0.0, 0.0])
    out[edge] = np.array([255.0, 255.0, 0.0])
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))
