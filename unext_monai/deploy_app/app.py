"""The MONAI Deploy application and its operators (imported by :mod:`unext_monai.deploy_app.cli` to run it).

The graph, one input file per tick:

``ImageFilesLoaderOperator`` (the bundle's own ``LoadImaged``, taken from the ``inference.json`` embedded in
``model.ts``, so the arrays are those ``monai.bundle run`` sees) -> ``BundleSegmentationOperator`` (the SDK's
``MonaiBundleInferenceOperator``: the bundle's ``preprocessing``, ``inferer`` and ``postprocessing`` without its
load/save transforms) -> ``SegmentationWriterOperator``:

- DICOM input: a DICOM Segmentation (``<stem>_seg.dcm``, highdicom, binary, one segment named after the bundle's
  label) in the source's study, referencing the source series and instance, with the patient and study modules of the
  source;
- NIfTI input and other pictures: what ``monai.bundle run`` writes (:func:`unext_monai.transforms.write_segmentation`).

The output paths are those :func:`unext_monai.data.inputs.plan_inference` planned. An error on one input is recorded
in the run's report (:class:`unext_monai.data.inputs.InferenceReport`) and the next input goes on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import monai.deploy.operators.monai_bundle_inference_operator as bundle_operator
import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Image, IOType, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import (
    DISALLOW_LOAD_SAVE,
    IOMapping,
    MonaiBundleInferenceOperator,
    get_bundle_config,
)

from unext_monai.data.inputs import InferenceReport
from unext_monai.io import write_atomic
from unext_monai.transforms import write_segmentation

__all__ = ["UNeXtSegmentationApp", "ImageFilesLoaderOperator", "BundleSegmentationOperator",
           "SegmentationWriterOperator"]

logger = logging.getLogger("unext_monai.deploy_app")

#: post-processing transforms that write files: the writer operator does the writing instead
DISALLOWED_TRANSFORMS = [*DISALLOW_LOAD_SAVE, "SavePrediction"]


#: Patient and General Study attributes of type 2 (present, possibly empty) that highdicom copies from the source
_TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _long_string(text: str) -> str:
    """``text`` clipped to what a DICOM Long String (LO) holds: 64 characters."""
    return text if len(text) <= 64 else text[:63] + "\u2026"


def _bundle_loader(bundle_path: Path):
    """The bundle's own image loader: the ``LoadImaged`` of ``inference.json``'s ``preprocessing``."""
    from monai.transforms import LoadImaged

    parser = get_bundle_config(str(bundle_path), ["inference"])
    for t in parser.get_parsed_content("preprocessing").transforms:
        if isinstance(t, LoadImaged):
            return t._loader
    raise ValueError(f"{bundle_path}: inference.json's preprocessing has no LoadImaged")


class ImageFilesLoaderOperator(Operator):
    """Emit one ``Image`` per file, in order: the array and metadata the bundle's ``LoadImaged`` makes. Give it a
    ``CountCondition`` of ``len(files)``. A file that fails to load is recorded in ``report`` and nothing is emitted.

    Named output:
        image: ``Image`` with ``filename_or_obj`` in its metadata.
    """

    def __init__(self, fragment: Fragment, *args, files: list[str], loader, report: InferenceReport, **kwargs) -> None:
        self.files = list(files)
        self.loader = loader
        self.report = report
        self._next = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def compute(self, op_input, op_output, context) -> None:
        path = self.files[self._next]
        self._next += 1
        try:
            with warnings.catch_warnings():
                # a 2D picture in DICOM (secondary capture, ultrasound) has no patient orientation: nothing to act on
                warnings.filterwarnings("ignore", message="PydicomReader: ImageOrientationPatient")
                img = self.loader(path)
            meta = dict(getattr(img, "meta", {}) or {})
            meta["filename_or_obj"] = path
            array = np.asarray(img)
        except Exception as e:
            logger.error(f"{path}: cannot be loaded: {_error(e)}")
            self.report.failed(path, f"cannot be loaded: {_error(e)}")
            return
        logger.info(f"loaded {path}: {tuple(array.shape)}")
        op_output.emit(Image(array, metadata=meta), "image")


class _RecordingInput:
    """``op_input`` that remembers what was received (to name the input in an error)."""

    def __init__(self, op_input) -> None:
        self._op_input = op_input
        self.received: dict[str, Any] = {}

    def receive(self, name: str):
        value = self._op_input.receive(name)
        self.received[name] = value
        return value


class BundleSegmentationOperator(MonaiBundleInferenceOperator):
    """The SDK's bundle operator, also leaving out the bundle's own file-writing post-processing transform
    (``unext_monai.transforms.SavePredictiond``); an error on one input is recorded in ``report`` and the run goes
    on with the next. Bundles whose ``inference.json`` has the ``engine`` setting run the ``model.onnx`` beside
    ``model.ts`` through its inference engine (:class:`unext_monai.inferers.EngineInferer`), with ``engine`` (when
    given) in place of the bundle's setting."""

    def __init__(self, *args, report: InferenceReport, engine: str | None = None, **kwargs) -> None:
        self.report, self.engine = report, engine
        super().__init__(*args, **kwargs)

    def _init_config(self, config_names):
        def configured(path, names):  # the SDK parses the inferer inside _init_config: set the engine before
            parser = get_bundle_config(path, names)
            if parser.get("engine_inferer") is not None:
                parser["ckpt_dir"] = str(Path(path).parent if Path(path).is_file() else Path(path) / "models")
                parser["engine"] = self.engine or parser["engine"]
            return parser

        with mock.patch.object(bundle_operator, "get_bundle_config", configured):
            super()._init_config(config_names)

    def _get_compose(self, obj_name, disallowed_prefixes):
        return super()._get_compose(obj_name, DISALLOWED_TRANSFORMS)

    def compute(self, op_input, op_output, context) -> None:
        recording = _RecordingInput(op_input)
        try:
            super().compute(recording, op_output, context)
        except Exception as e:
            image = next(iter(recording.received.values()), None)
            source = str(image.metadata().get("filename_or_obj", "?")) if isinstance(image, Image) else "?"
            logger.error(f"{source}: inference failed: {_error(e)}")
            self.report.failed(source, f"inference failed: {_error(e)}")


class SegmentationWriterOperator(Operator):
    """Write each predicted mask to the paths planned for its input and record it in ``report``.

    Named input:
        pred: ``Image`` (1, H, W) or (H, W) from the bundle operator, 0/1, aligned with the input picture; its
        metadata names the input file.

    Args:
        items: ``{input path: {"mask_file", "overlay_file"?}}`` (:func:`unext_monai.data.inputs.plan_inference`).
        report: the run's report.
        label: the segment's name (the bundle's ``channel_def``), for DICOM Segmentations.
        algorithm: ``(name, version)`` of the model, for DICOM Segmentations.
    """

    def __init__(self, fragment: Fragment, *args, items: dict[str, dict], report: InferenceReport, label: str,
                 algorithm: tuple[str, str], **kwargs) -> None:
        self.items = dict(items)
        self.report = report
        self.label = label
        self.algorithm = algorithm
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("pred")

    def compute(self, op_input, op_output, context) -> None:
        pred = op_input.receive("pred")
        source = str(pred.metadata().get("filename_or_obj", ""))
        written: list[str] = []
        dicom = None
        try:
            mask = np.squeeze(np.asarray(pred.asnumpy())) > 0
            if mask.ndim != 2:
                raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
            item = self.items[source]
            if item["mask_file"].endswith("_seg.dcm"):
                dicom = self._write_dicom_seg(source, mask, item["mask_file"])
                written.append(item["mask_file"])
            else:
                affine = pred.metadata().get("original_affine")
                written = write_segmentation(mask, source, item["mask_file"], item.get("overlay_file"), affine)
        except Exception as e:
            logger.error(f"{source}: writing the result failed: {_error(e)}")
            self.report.failed(source, f"writing the result failed: {_error(e)}", written)
            return
        logger.info(f"{source}: {int(mask.sum())} lesion pixels of {mask.size}; wrote {', '.join(written)}")
        self.report.segmented(source, written, lesion_pixels=int(mask.sum()), **({"dicom": dicom} if dicom else {}))

    def _write_dicom_seg(self, source: str, mask: np.ndarray, path: str) -> dict:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes

        ds = pydicom.dcmread(source)
        for keyword in _TYPE2_PATIENT_STUDY:  # required (possibly empty) in the source; some files leave them out
            if keyword not in ds:
                setattr(ds, keyword, None)
        if mask.shape != (int(ds.Rows), int(ds.Columns)):
            raise ValueError(f"mask {mask.shape} does not match the DICOM image ({ds.Rows}, {ds.Columns})")
        name, version = self.algorithm
        segment = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label=self.label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=_long_string(name), family=codes.cid7162.ArtificialIntelligence, version=version),
        )
        seg = hd.seg.Segmentation(
            source_images=[ds],
            pixel_array=mask[None].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=int(getattr(ds, "SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="unext-monai",
            manufacturer_model_name=_long_string(name),
            software_versions=version,
            device_serial_number="0",
            omit_empty_frames=False,
            series_description=_long_string(f"{self.label} segmentation ({name} {version})"),
        )
        write_atomic(path, lambda p: seg.save_as(p))
        identifiers = {
            "StudyInstanceUID": str(ds.StudyInstanceUID),
            "SeriesInstanceUID": str(ds.SeriesInstanceUID),
            "SOPInstanceUID": str(ds.SOPInstanceUID),
            "SegmentationSeriesInstanceUID": str(seg.SeriesInstanceUID),
            "SegmentationSOPInstanceUID": str(seg.SOPInstanceUID),
        }
        return identifiers


class UNeXtSegmentationApp(Application):
    """Image files in (PNG/JPEG/BMP/TIFF, DICOM, NIfTI), segmentations out, with a released bundle's ``model.ts``.

    Args:
        report: the run's report; its ``inputs`` are the files segmented.
        engine: the bundle's ``engine`` setting to use instead of its own (``fp32``, ``bf16``, ``pytorch``).
        kwargs: passed to ``Application`` (``argv`` with ``-i``, ``-o``, ``-m``: the SDK's app context).
    """

    def __init__(self, *args, report: InferenceReport, engine: str | None = None, **kwargs) -> None:
        self.report, self.engine = report, engine
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        output_path = Path(app_context.output_path)
        bundle_path = Path(app_context.model_path)
        files = [it["image"] for it in self.report.items]
        metadata = get_bundle_config(str(bundle_path), ["metadata"])
        channels = next(iter(metadata["network_data_format"]["outputs"].values())).get("channel_def", {})
        label = next((v for k, v in sorted(channels.items()) if v.lower() != "background"), "lesion")
        logger.info(f"{len(files)} image(s); model {bundle_path}; output {output_path}")

        loader = ImageFilesLoaderOperator(self, CountCondition(self, len(files)), files=files,
                                          loader=_bundle_loader(bundle_path), report=self.report, name="loader")
        infer = BundleSegmentationOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_path=bundle_path,
            report=self.report,
            engine=self.engine,
            name="bundle_inference",
        )
        writer = SegmentationWriterOperator(
            self, items={it["image"]: it for it in self.report.items}, report=self.report, label=label,
            algorithm=(str(metadata.get("name", "UNeXt")), str(metadata.get("version", "0"))), name="writer")
        self.add_flow(loader, infer, {("image", "image")})
        self.add_flow(infer, writer, {("pred", "pred")})
