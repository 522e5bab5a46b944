"""The MONAI Deploy application: the SDK's ``MonaiBundleInferenceOperator`` on the release's ``model.ts``, ticked
once per input that :func:`unext_monai.data.inputs.plan_inference` planned. Each tick reads the input with the
bundle's own ``LoadImaged``, runs its ``preprocessing``, ``inferer`` and ``postprocessing`` and writes a DICOM
Segmentation (highdicom) for a DICOM input, else what ``monai.bundle run`` writes; an error on one input is recorded
in the run's :class:`~unext_monai.data.inputs.InferenceReport` and the next input goes on."""

from __future__ import annotations

import logging
from pathlib import Path
from unittest import mock

import monai.deploy.operators.monai_bundle_inference_operator as bundle_operator
import numpy as np
import torch
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.operators.monai_bundle_inference_operator import (
    DISALLOW_LOAD_SAVE,
    MonaiBundleInferenceOperator,
    filter_compose,
    get_bundle_config,
)
from monai.transforms import LoadImaged

from unext_monai.bundle_scripts import output_classes
from unext_monai.data.inputs import InferenceReport
from unext_monai.io import write_atomic
from unext_monai.transforms import write_segmentation

logger = logging.getLogger("unext_monai.deploy_app")

#: Patient and General Study attributes of type 2 (present, possibly empty) that highdicom copies from the source
_TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class BundleSegmentationOperator(MonaiBundleInferenceOperator):
    """Segment the next input of ``report.items`` on each tick (give it a ``CountCondition`` of their number) and
    record its outcome in ``report``; ``labels``: the class names in class-number order, ``algorithm``: the model's
    ``(name, version)``, both for DICOM Segmentations."""

    def __init__(self, *args, report: InferenceReport, labels: list[str], algorithm: tuple[str, str],
                 engine: str | None = None, **kwargs) -> None:
        self.report, self.labels, self.algorithm, self.engine = report, labels, algorithm, engine
        self.items, self.item, self.loader = iter(report.items), {}, None
        super().__init__(*args, input_mapping=[], output_mapping=[], **kwargs)

    def _init_config(self, config_names):
        # the SDK builds the inferer inside _init_config: the bundle's engine finds model.onnx beside model.ts
        def configured(path, names):
            parser = get_bundle_config(path, names)
            if parser.get("engine") is not None:
                parser["ckpt_dir"] = str(Path(path).parent)
                parser["engine"] = self.engine or parser["engine"]
            return parser

        with mock.patch.object(bundle_operator, "get_bundle_config", configured):
            super()._init_config(config_names)

    def _get_compose(self, obj_name, disallowed_prefixes):
        compose = super()._get_compose(obj_name, [])
        self.loader = self.loader or next((t for t in compose.transforms if isinstance(t, LoadImaged)), None)
        return filter_compose(compose, [*DISALLOW_LOAD_SAVE, "SavePrediction"])

    def compute(self, op_input, op_output, context) -> None:
        self.item = next(self.items)
        try:
            super().compute(op_input, op_output, context)
        except Exception as e:
            logger.error(f"{self.item['image']}: {_error(e)}")
            self.report.failed(self.item["image"], _error(e))

    def _receive_input(self, name, op_input, context):
        image = self.loader({"image": self.item["image"]})["image"]
        return np.asarray(image), dict(image.meta)

    def _send_output(self, value, name, metadata, op_output, context) -> None:
        """Write the label map (1, H, W) (0 background, 1..K the classes) as planned, and report it."""
        source, mask_file = self.item["image"], self.item["mask_file"]
        mask = np.asarray(torch.as_tensor(value).detach().cpu()).squeeze(0).round().astype(np.uint8)
        if mask_file.endswith("_seg.dcm"):
            written, extra = [mask_file], {"dicom": self._write_dicom_seg(source, mask, mask_file)}
        else:
            written, extra = write_segmentation(mask, source, mask_file, self.item.get("overlay_file"),
                                                metadata.get("original_affine"), self.labels), {}
        logger.info(f"{source}: {int((mask > 0).sum())} lesion pixels of {mask.size}; wrote {', '.join(written)}")
        self.report.segmented(source, written, lesion_pixels=int((mask > 0).sum()), **extra)

    def _write_dicom_seg(self, source: str, mask: np.ndarray, path: str) -> dict:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes

        ds = pydicom.dcmread(source)
        for keyword in _TYPE2_PATIENT_STUDY:  # highdicom copies them; some sources leave them out
            ds.setdefault(keyword, None)
        name, version = self.algorithm[0][:64], self.algorithm[1]  # a Long String holds 64 characters
        algorithm = hd.AlgorithmIdentificationSequence(name=name, family=codes.cid7162.ArtificialIntelligence,
                                                       version=version)
        segments = [hd.seg.SegmentDescription(
            segment_number=number, segment_label=label[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm) for number, label in enumerate(self.labels, start=1)]
        seg = hd.seg.Segmentation(
            source_images=[ds], pixel_array=mask[None], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=hd.UID(),
            series_number=int(getattr(ds, "SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="unext-monai", manufacturer_model_name=name, software_versions=version,
            device_serial_number="0", omit_empty_frames=False)
        write_atomic(path, lambda p: seg.save_as(p))
        return {"StudyInstanceUID": str(ds.StudyInstanceUID), "SeriesInstanceUID": str(ds.SeriesInstanceUID),
                "SOPInstanceUID": str(ds.SOPInstanceUID), "SegmentationSeriesInstanceUID": str(seg.SeriesInstanceUID),
                "SegmentationSOPInstanceUID": str(seg.SOPInstanceUID)}


class UNeXtSegmentationApp(Application):
    """Segment ``report.items`` with the release's ``model`` (``model.ts``), recording each outcome in ``report``."""

    def __init__(self, *args, report: InferenceReport, model: Path, engine: str | None = None, **kwargs) -> None:
        self.report, self.model, self.engine = report, model, engine
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        metadata = get_bundle_config(str(self.model), ["metadata"])
        self.add_operator(BundleSegmentationOperator(
            self, CountCondition(self, len(self.report.items)), app_context=AppContext({"model": str(self.model)}),
            bundle_path=self.model, report=self.report, labels=output_classes(metadata), engine=self.engine,
            algorithm=(str(metadata["name"]), str(metadata["version"])), name="bundle_segmentation"))
