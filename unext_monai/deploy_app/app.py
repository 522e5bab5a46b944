"""MONAI Deploy application: segment 2D images with the packaged bundle's TorchScript model.

Run in an environment with ``monai-deploy-app-sdk`` (see ``.ci/deploy_env.sh`` and ``docs/integrations.md``)::

    python -m unext_monai.deploy_app -i IMAGE_OR_FOLDER -o OUTPUT_FOLDER -m bundle/NAME

``-m`` takes the release folder (``bundle/NAME``), its ``models/`` folder or ``models/model.ts`` itself; the
TorchScript file carries the bundle's ``metadata.json`` and ``inference.json``, which configure MONAI Deploy's
``MonaiBundleInferenceOperator`` (pre-processing, inferer, post-processing). The graph:

``ImageFilesLoaderOperator`` (one file per tick, read by the bundle's own ``LoadImaged``, so PNG/JPEG/BMP/TIFF,
DICOM and NIfTI all work and the arrays match ``monai.bundle run``) -> ``BundleSegmentationOperator`` (the SDK's
bundle operator) -> ``MaskWriterOperator`` (``<stem>_mask.png``, 0/255, the input's size, written atomically).
Without ``-i/-o/-m`` the SDK's environment variables (``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH``,
``HOLOSCAN_MODEL_PATH``) apply, as in a MONAI Application Package.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Image, IOType, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import (
    DISALLOW_LOAD_SAVE,
    IOMapping,
    MonaiBundleInferenceOperator,
    get_bundle_config,
)

from unext_monai.data.inputs import list_images
from unext_monai.io import write_atomic

__all__ = ["UNeXtSegmentationApp", "ImageFilesLoaderOperator", "BundleSegmentationOperator", "MaskWriterOperator",
           "resolve_model", "main"]

logger = logging.getLogger("unext_monai.deploy_app")

#: post-processing transforms that write files: the app's writer operator does the writing instead
DISALLOWED_TRANSFORMS = [*DISALLOW_LOAD_SAVE, "SavePrediction"]


def resolve_model(path: str | os.PathLike) -> Path:
    """``models/model.ts`` of a release folder, of its ``models/`` folder, or the given ``.ts`` file."""
    p = Path(path).expanduser().resolve()
    for candidate in (p, p / "model.ts", p / "models" / "model.ts"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{p}: no model.ts there (give bundle/NAME, bundle/NAME/models or the .ts file)")


def _bundle_loader(bundle_path: Path):
    """The bundle's own image loader: the ``LoadImaged`` of ``inference.json``'s ``preprocessing``."""
    from monai.transforms import LoadImaged

    parser = get_bundle_config(str(bundle_path), ["inference"])
    for t in parser.get_parsed_content("preprocessing").transforms:
        if isinstance(t, LoadImaged):
            return t._loader
    raise ValueError(f"{bundle_path}: inference.json's preprocessing has no LoadImaged")


class ImageFilesLoaderOperator(Operator):
    """Emit one ``Image`` per file, in order: the array and metadata the bundle's ``LoadImaged`` makes (channel-last
    RGB is marked ``original_channel_dim=-1``, so the bundle's ``EnsureChannelFirstd`` sees what it sees in
    ``monai.bundle run``). Give it a ``CountCondition`` of ``len(files)``.

    Named output:
        image: ``Image`` with ``filename_or_obj`` in its metadata.
    """

    def __init__(self, fragment: Fragment, *args, files: list[str], loader, **kwargs) -> None:
        self.files = list(files)
        self.loader = loader
        self._next = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def compute(self, op_input, op_output, context) -> None:
        path = self.files[self._next]
        self._next += 1
        img = self.loader(path)
        meta = dict(getattr(img, "meta", {}) or {})
        meta["filename_or_obj"] = path
        logger.info(f"loaded {path}: {tuple(img.shape)}")
        op_output.emit(Image(np.asarray(img), metadata=meta), "image")


class BundleSegmentationOperator(MonaiBundleInferenceOperator):
    """The SDK's bundle operator, also leaving out the bundle's own file-writing post-processing transform
    (``unext_monai.transforms.SavePredictiond``): the writer operator writes the masks."""

    def _get_compose(self, obj_name, disallowed_prefixes):
        return super()._get_compose(obj_name, DISALLOWED_TRANSFORMS)


class MaskWriterOperator(Operator):
    """Write each predicted mask as ``<output_folder>/<stem>_mask.png`` (0/255, uint8) named after its input file;
    for NIfTI input ``<stem>_mask.nii.gz`` (0/1, uint8) with the input's affine instead, as ``monai.bundle run``
    writes them.

    Named input:
        pred: ``Image`` (H, W) from the bundle operator, whose metadata names the input file.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        self.written: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("pred")

    def compute(self, op_input, op_output, context) -> None:
        from PIL import Image as PILImage

        pred = op_input.receive("pred")
        mask = np.asarray(pred.asnumpy())
        mask = np.squeeze(mask)
        if mask.ndim != 2:
            raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
        source = str(pred.metadata().get("filename_or_obj", f"image_{len(self.written)}"))
        name = os.path.basename(source)
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else os.path.splitext(name)[0]
        is_nifti = name.endswith((".nii", ".nii.gz"))
        path = self.output_folder / f"{stem}_mask{'.nii.gz' if is_nifti else '.png'}"
        if os.path.exists(source) and path.exists() and os.path.samefile(path, source):
            raise ValueError(f"{path}: refusing to overwrite the input file")
        self.output_folder.mkdir(parents=True, exist_ok=True)
        if is_nifti:
            import nibabel as nib

            affine = np.asarray(pred.metadata().get("original_affine", np.eye(4)), dtype=np.float64)
            volume = nib.Nifti1Image((mask > 0).astype(np.uint8), affine)
            write_atomic(str(path), lambda p: nib.save(volume, p))
        else:
            picture = PILImage.fromarray(((mask > 0) * 255).astype(np.uint8))
            write_atomic(str(path), lambda p: picture.save(p, format="PNG"))
        os.chmod(path, 0o644)
        self.written.append(str(path))
        logger.info(f"wrote {path}: {mask.shape}, {int((mask > 0).sum())} lesion pixels")


class UNeXtSegmentationApp(Application):
    """Image files in (PNG/JPEG/BMP/TIFF, DICOM, NIfTI), PNG masks out, with the packaged bundle's ``model.ts``."""

    def compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        input_path = Path(app_context.input_path)
        output_path = Path(app_context.output_path)
        bundle_path = resolve_model(app_context.model_path)
        files = list_images(str(input_path))
        logger.info(f"{len(files)} image(s) from {input_path}; model {bundle_path}; output {output_path}")

        loader = ImageFilesLoaderOperator(
            self, CountCondition(self, len(files)), files=files, loader=_bundle_loader(bundle_path), name="loader"
        )
        infer = BundleSegmentationOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_path=bundle_path,
            name="bundle_inference",
        )
        writer = MaskWriterOperator(self, output_folder=output_path, name="writer")
        self.add_flow(loader, infer, {("image", "image")})
        self.add_flow(infer, writer, {("pred", "pred")})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m unext_monai.deploy_app", description=__doc__.split("\n")[0])
    ap.add_argument("-i", "--input", default=os.environ.get("HOLOSCAN_INPUT_PATH"), help="image file or folder")
    ap.add_argument("-o", "--output", default=os.environ.get("HOLOSCAN_OUTPUT_PATH"), help="output folder")
    ap.add_argument("-m", "--model", default=os.environ.get("HOLOSCAN_MODEL_PATH"),
                    help="release folder bundle/NAME, its models/ folder, or model.ts")
    ap.add_argument("-l", "--log-level", default="INFO", type=str.upper)
    args = ap.parse_args(argv)
    missing = [k for k in ("input", "output", "model") if not getattr(args, k)]
    if missing:
        ap.error(f"missing {', '.join('--' + k for k in missing)} (or the HOLOSCAN_*_PATH variables)")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.makedirs(args.output, exist_ok=True)
    model = resolve_model(args.model)  # the SDK's model factory takes the .ts file, not a bundle folder
    app_argv = [sys.executable, "unext_monai.deploy_app", "-i", os.path.abspath(args.input),
                "-o", os.path.abspath(args.output), "-m", str(model), "-l", args.log_level]
    UNeXtSegmentationApp(argv=app_argv).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
