"""What a released bundle says about the data its weights were trained on: one :class:`DatasetCard` per data set.

The release picks the card of the training data set (``split.json``'s meta, or ``--dataset``): it gives the
bundle's ``name``, ``task``, ``description``, ``data_source`` and data descriptions in ``metadata.json``, the Data
section of the model card, and ``docs/data_license.txt``. A data set without a card here comes with a JSON file of
the same fields (``--dataset_card``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

__all__ = ["DatasetCard", "DATASET_CARDS", "dataset_card"]

UNEXT_REFERENCE = ("Valanarasu, J. M. J. and Patel, V. M. UNeXt: MLP-based Rapid Medical Image Segmentation Network. "
                   "MICCAI 2022. https://arxiv.org/abs/2203.04967")


@dataclass(frozen=True)
class DatasetCard:
    """The facts about one training data set that a release states.

    Attributes:
        name, task, description, data_source, data_type, image_classes, label_classes: ``metadata.json`` fields.
        layout: Markdown: the folder layout ``dataset_dir`` must have for training and evaluation.
        data_terms: the data's licence terms, which the weights inherit (``docs/data_license.txt``).
        references: citations besides UNeXt's.
    """

    name: str
    task: str
    description: str
    data_source: str
    data_type: str
    image_classes: str
    label_classes: str
    layout: str
    data_terms: str
    references: tuple[str, ...] = field(default_factory=tuple)


_DESCRIPTION = ("UNeXt (Valanarasu and Patel, MICCAI 2022), an MLP-based rapid segmentation network (1.47M parameters, "
                "0.56 G multiply-adds per 256x256 image), trained on {data}. It takes the picture resized to 256x256 "
                "and returns one lesion logit per pixel; the bundle's post-processing turns it into a mask at the "
                "picture's own size.")

DATASET_CARDS: dict[str, DatasetCard] = {
    "isic2018": DatasetCard(
        name="UNeXt skin lesion segmentation (ISIC 2018)",
        task="Segmentation of the skin lesion in dermoscopy pictures",
        description=_DESCRIPTION.format(data="the ISIC 2018 Challenge Task 1 dermoscopy pictures"),
        data_source="ISIC 2018 Challenge, Task 1 (lesion boundary segmentation) training data, "
        "https://challenge.isic-archive.com/data/",
        data_type="RGB dermoscopy pictures (JPEG or PNG)",
        image_classes="three channel RGB picture, intensity scaled from 8 bit to [0, 1]",
        label_classes="single channel mask: 255 (or 1) is lesion, 0 is background",
        layout="`dataset_dir` holds the folders as the challenge ships them: `ISIC2018_Task1-2_Training_Input/*.jpg` "
        "and `ISIC2018_Task1_Training_GroundTruth/*_segmentation.png`.",
        data_terms=(
            "ISIC 2018 Challenge, Task 1 (lesion boundary segmentation) training data, published by the\n"
            "International Skin Imaging Collaboration under the Creative Commons Attribution-NonCommercial 4.0\n"
            "International licence (CC BY-NC 4.0, https://creativecommons.org/licenses/by-nc/4.0/). Weights\n"
            "trained on it may be used for non-commercial purposes only, with attribution. Cite:\n"
            "  Codella N. et al., Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the\n"
            "  International Skin Imaging Collaboration (ISIC), arXiv:1902.03368, and\n"
            "  Tschandl P. et al., The HAM10000 dataset, Scientific Data 5, 180161 (2018).\n"
        ),
        references=(
            "Codella, N. et al. Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the "
            "International Skin Imaging Collaboration (ISIC). arXiv:1902.03368",
            "Tschandl, P., Rosendahl, C. and Kittler, H. The HAM10000 dataset, a large collection of multi-source "
            "dermatoscopic images of common pigmented skin lesions. Scientific Data 5, 180161, 2018",
        ),
    ),
    "busi": DatasetCard(
        name="UNeXt breast ultrasound lesion segmentation (BUSI)",
        task="Segmentation of the breast lesion in ultrasound images",
        description=_DESCRIPTION.format(data="the BUSI breast ultrasound images (benign and malignant cases)"),
        data_source="BUSI, Dataset of breast ultrasound images (Al-Dhabyani et al., Data in Brief 28, 2020)",
        data_type="grayscale breast ultrasound images (PNG)",
        image_classes="three channel data: the gray image repeated to three channels, intensity scaled from 8 bit to "
        "[0, 1] (RGB pictures are taken as they are)",
        label_classes="single channel mask: 255 (or 1) is lesion, 0 is background; the several mask files of an image "
        "with several lesions are merged by union",
        layout="`dataset_dir` holds `Dataset_BUSI_with_GT/<benign|malignant|normal>/<name>.png` with "
        "`<name>_mask.png` (and `<name>_mask_1.png`, ... merged by union), as the authors ship it.",
        data_terms=(
            "BUSI, Dataset of breast ultrasound images (Al-Dhabyani W., Gomaa M., Khaled H., Fahmy A., Data in\n"
            "Brief 28, 104863, 2020). Use it, and weights trained on it, under the terms its authors publish with\n"
            "the data set, and cite the article above.\n"
        ),
        references=(
            "Al-Dhabyani, W., Gomaa, M., Khaled, H. and Fahmy, A. Dataset of breast ultrasound images. "
            "Data in Brief 28, 104863, 2020",
        ),
    ),
    "demo": DatasetCard(
        name="UNeXt lesion segmentation (synthetic demo weights)",
        task="Segmentation of one lesion class in 2D pictures (pipeline demonstration only)",
        description=_DESCRIPTION.format(data="the built-in synthetic demo set (random blobs on smooth noise): these "
                                        "weights segment nothing real"),
        data_source="the synthetic demo set made by unext_monai.data.demo (no third-party or patient data)",
        data_type="RGB pictures (PNG)",
        image_classes="three channel RGB picture, intensity scaled from 8 bit to [0, 1]",
        label_classes="single channel mask: 255 (or 1) is lesion, 0 is background",
        layout="`dataset_dir` holds the UNeXt-pytorch layout `images/*.png` with `masks/0/*.png`; without "
        "`dataset_dir` training makes the demo set in `eval/demo_data`.",
        data_terms=(
            "Synthetic demo set made by unext_monai.data.demo (random blobs on smooth noise). It contains no\n"
            "third-party or patient data; it is generated by the Apache-2.0 code of unext-monai, so the weights\n"
            "carry no data licence beyond Apache-2.0. Weights trained on it segment nothing real: they only\n"
            "exercise the pipeline.\n"
        ),
    ),
}


def dataset_card(dataset: str | None, card_file: str | None = None) -> DatasetCard:
    """The card of ``dataset``, or the one read from ``card_file`` (a JSON object with :class:`DatasetCard`'s fields).

    Raises:
        ValueError: no card for the data set and no file; a file with missing or unknown fields.
    """
    if card_file:
        with open(card_file, encoding="utf-8") as f:
            data = json.load(f)
        names = {f.name for f in dataclasses.fields(DatasetCard)}
        unknown, missing = set(data) - names, {n for n in names if n != "references"} - set(data)
        if unknown or missing:
            raise ValueError(f"{card_file}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
        return DatasetCard(**{**data, "references": tuple(data.get("references", ()))})
    if dataset in DATASET_CARDS:
        return DATASET_CARDS[dataset]
    raise ValueError(
        f"no card for the training data ({dataset or 'unknown: no split.json in --train_dir and no --dataset'}): pass "
        f"--dataset {'|'.join(DATASET_CARDS)} or --dataset_card FILE (JSON with the fields of DatasetCard)"
    )
