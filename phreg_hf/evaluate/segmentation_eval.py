# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""`phreg eval-segmentation`: zero-shot segmentation mIoU of a base CLIP (MaskCLIP, NACLIP) and a PH-Reg student.

The paper's CLIP table, on your labelled images: the base model through MaskCLIP's value path and through NACLIP's
reduced last layer, and the student through its distilled value path, all with the same segmentation protocol
(`pipeline_phreg_segmentation.py`) on the same images. The metric is the usual confusion-matrix IoU, accumulated
over the whole set with torchmetrics' `MulticlassConfusionMatrix` (label 255 ignored): per class
`IoU = TP / (TP + FP + FN)`; a class absent from both ground truth and predictions has no IoU (null in the JSON)
and is left out of the mean, as in mmsegmentation. `--reduce_labels` maps ADE-style masks (0 = "other") to
0 -> 255, k -> k - 1, as transformers' image processors do.

    phreg eval-segmentation --model STUDENT --base BASE --images DIR --masks DIR --class_names FILE --out report.json
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models.pipeline_phreg_segmentation import (
    DEFAULT_CROP_SIZE,
    DEFAULT_LOGIT_SCALE,
    DEFAULT_SHORT_SIDE,
    DEFAULT_STRIDE,
)

IGNORE_INDEX = 255


def reduce_labels(mask: np.ndarray) -> np.ndarray:
    """ADE-style `(H, W)` mask: 0 ("other") -> 255 (ignored), every other label k -> k - 1."""
    mask = mask.astype(np.int64)
    return np.where(mask == 0, IGNORE_INDEX, np.where(mask == IGNORE_INDEX, IGNORE_INDEX, mask - 1))


class IoUAccumulator:
    """Confusion-matrix IoU over a set of `(H, W)` predictions and ground truths (label 255 ignored)."""

    def __init__(self, num_classes: int):
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.num_classes = num_classes
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=IGNORE_INDEX)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """`(H, W)` predicted class indices and `(H, W)` ground truth (255 = ignore)."""
        self.confusion.update(prediction.reshape(-1).long(), target.reshape(-1).long())

    def per_class_iou(self) -> list[float]:
        """IoU per class; NaN for a class absent from both ground truth and predictions."""
        matrix = self.confusion.compute().double()  # rows: ground truth, columns: prediction
        intersection = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - intersection
        return (intersection / union).tolist()  # 0 / 0 -> nan

    def mean_iou(self) -> float:
        values = [v for v in self.per_class_iou() if not math.isnan(v)]
        return float(np.mean(values)) if values else float("nan")


def check_mask(mask: np.ndarray, image_size: tuple[int, int], num_classes: int, name: str) -> None:
    """ValueError naming the file and the fix when a mask does not fit its image or the class list."""
    if mask.shape != image_size:
        raise ValueError(
            f"The mask of {name} is {mask.shape[1]}x{mask.shape[0]} pixels but the image is "
            f"{image_size[1]}x{image_size[0]}; masks must have the size of their image (resize with nearest neighbour)."
        )
    valid = mask[mask != IGNORE_INDEX]
    if valid.size and int(valid.max()) >= num_classes:
        raise ValueError(
            f"The mask of {name} holds label {int(valid.max())}, but --class_names lists only {num_classes} classes "
            f"(labels 0..{num_classes - 1}, 255 = ignore). Add the missing classes, or pass --reduce_labels for "
            "ADE-style masks whose 0 means 'other'."
        )


def check_base_is_stock_clip(base: str) -> None:
    """ValueError when `--base` is itself a PH-Reg CLIP student (its rows would not be the MaskCLIP / NACLIP
    baselines of a stock model); configs only, no weights loaded."""
    from transformers import AutoConfig

    if Path(base).exists() and AutoConfig.from_pretrained(base).model_type == "phreg_clip":
        raise ValueError(
            f"--base {base} is itself a PH-Reg CLIP student (phreg_clip); pass the stock CLIP it was distilled from "
            "(its phreg_training.json records base_model)."
        )


def check_clip_student_matches_base(base_model, student_model, base: str, student: str) -> None:
    """ValueError unless `--model` was distilled from `--base`: same architecture, and every weight PH-Reg keeps
    frozen (the text tower, the projections, the vision blocks it did not train) equal, as `phreg eval` checks.
    Otherwise the rows called "base" would be another model's. Both are `PhregCLIPModel`s (a stock CLIP wrapped
    with 0 registers)."""
    from .artifacts import check_frozen_weights_match

    def shape(model) -> dict:
        vision, text = model.config.vision_config, model.config.text_config
        return {
            "vision hidden_size": vision.hidden_size,
            "vision num_hidden_layers": vision.num_hidden_layers,
            "patch_size": vision.patch_size,
            "text hidden_size": text.hidden_size,
            "text num_hidden_layers": text.num_hidden_layers,
            "projection_dim": model.config.projection_dim,
        }

    base_shape, student_shape = shape(base_model), shape(student_model)
    for key, value in base_shape.items():
        if student_shape[key] != value:
            raise ValueError(
                f"--base {base} has {key}={value} but --model {student} has {key}={student_shape[key]}: it was not "
                "distilled from this base. Pass the base CLIP the student was built from."
            )
    check_frozen_weights_match(base_model, student_model, base, student, student_option="--model")


@dataclass
class EvalSegmentationArguments:
    """Options of `phreg eval-segmentation` (`phreg eval-segmentation --help`)."""

    model: str = field(metadata={"help": "Folder or Hub id of the PH-Reg CLIP student."})
    base: str = field(metadata={"help": "Folder or Hub id of the base CLIP it was distilled from."})
    class_names: str = field(
        metadata={"help": "Class file: one class per line, line i = label i - 1, synonyms split by ', '."}
    )
    out: str = field(metadata={"help": "Where the JSON report goes (e.g. report.json)."})
    images: str | None = field(default=None, metadata={"help": "Folder of images (with --masks)."})
    masks: str | None = field(
        default=None,
        metadata={
            "help": "Folder of label PNGs with the images' relative paths (pixel = class index, 255 = ignore)."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A datasets id instead of --images/--masks."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    split: str = field(default="validation", metadata={"help": "Split of --dataset_name."})
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    label_column: str = field(default="annotation", metadata={"help": "Label-map column of --dataset_name."})
    reduce_labels: bool = field(
        default=False, metadata={"help": "ADE-style masks: 0 ('other') -> ignored, k -> k - 1."}
    )
    max_images: int | None = field(default=None, metadata={"help": "Evaluate at most this many images."})
    prob_threshold: float = field(
        default=0.0, metadata={"help": "Background threshold on the top class probability (VOC21: 0.1)."}
    )
    logit_scale: float = field(
        default=DEFAULT_LOGIT_SCALE, metadata={"help": "Softmax scale on cosine logits."}
    )
    short_side: int = field(
        default=DEFAULT_SHORT_SIDE, metadata={"help": "Resize the short side to this first."}
    )
    crop_size: int = field(default=DEFAULT_CROP_SIZE, metadata={"help": "Sliding-window crop in pixels."})
    stride: int = field(default=DEFAULT_STRIDE, metadata={"help": "Sliding-window stride in pixels."})
    batch_size: int = field(default=8, metadata={"help": "Crops per forward pass."})
    device: str | None = field(
        default=None, metadata={"help": "'cpu', 'cuda', ... (default: cuda if available)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --out file."})

    def validate(self) -> None:
        folders = self.images is not None or self.masks is not None
        if folders == (self.dataset_name is not None) or (
            folders and (self.images is None or self.masks is None)
        ):
            raise ValueError(
                "Pass either --images DIR --masks DIR, or --dataset_name ID (with --split/--image_column/--label_column)."
            )
        from ..file_checks import check_output_file
        from ..models.pipeline_phreg_segmentation import check_segmenter_settings

        check_output_file(self.out, "--out", self.overwrite)  # never a file of a model folder
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"--max_images must be >= 1, got {self.max_images}.")
        check_segmenter_settings(self.logit_scale, self.prob_threshold, prefix="--")


def iterate_labelled_images(args: EvalSegmentationArguments) -> Iterator[tuple[str, Image.Image, np.ndarray]]:
    """`(name, RGB image, (H, W) int64 mask)` pairs from the folders or the dataset (before label checks).

    Images are decoded as every command decodes them (`data.open_image`: EXIF orientation applied, 16-bit grey
    rescaled); an unreadable one is a ValueError naming it.
    """
    from ..data import read_image

    if args.dataset_name is not None:
        import datasets

        dataset = datasets.load_dataset(args.dataset_name, args.dataset_config, split=args.split)
        for column in (args.image_column, args.label_column):
            if column not in dataset.column_names:
                raise ValueError(
                    f"{args.dataset_name} has no column {column!r} (columns: {dataset.column_names}); pass "
                    "--image_column / --label_column."
                )
        for index, example in enumerate(dataset):
            name = f"{args.dataset_name}[{index}]"
            yield (
                name,
                read_image(example[args.image_column], name, fix="remove it from the set, or replace it"),
                np.array(example[args.label_column]).astype(np.int64),
            )
        return
    from ..data import image_extensions, list_image_files

    images_root, masks_root = Path(args.images), Path(args.masks)
    if not masks_root.is_dir():
        raise FileNotFoundError(f"--masks {masks_root} is not a folder; pass the folder of label PNGs.")
    for path in list_image_files(images_root, option="--images"):
        relative = path.relative_to(images_root)
        candidates = [
            (masks_root / relative).with_suffix(ext) for ext in (".png", *sorted(image_extensions()))
        ]
        mask_path = next((c for c in candidates if c.is_file()), None)
        if mask_path is None:
            raise FileNotFoundError(
                f"No mask for {path} in --masks {masks_root} (looked for {candidates[0]}); every image needs a label "
                "map with the same relative path."
            )
        image = read_image(path, fix="remove it and its mask, or replace it")
        yield str(relative), image, np.array(Image.open(mask_path)).astype(np.int64)


def evaluate_segmentation(args: EvalSegmentationArguments, progress: bool = True) -> dict:
    """Run the evaluation; returns the report (also written to `args.out`)."""
    from tqdm.auto import tqdm

    from ..models.pipeline_phreg_segmentation import OpenVocabularySegmenter, read_class_file
    from .artifacts import resolve_device
    from .segmentation import load_segmentation_model, segmenter_settings

    args.validate()
    if not Path(args.class_names).is_file():
        raise FileNotFoundError(
            f"--class_names {args.class_names} does not exist; pass a file, one class per line."
        )
    classes = read_class_file(args.class_names)
    device = resolve_device(args.device)
    settings = segmenter_settings(args)
    check_base_is_stock_clip(args.base)
    loaded = {
        name: load_segmentation_model(path, device=device, option=option)
        for name, path, option in (("base_maskclip", args.base, "--base"), ("student", args.model, "--model"))
    }
    check_clip_student_matches_base(loaded["base_maskclip"][0], loaded["student"][0], args.base, args.model)
    segmenters = {
        name: OpenVocabularySegmenter(
            model, tokenizer, processor.image_mean, processor.image_std, classes, mode="maskclip", **settings
        )
        for name, (model, tokenizer, processor) in loaded.items()
    }
    # The NACLIP baseline: the same base model and class embeddings, the other dense path.
    segmenters["base_naclip"] = copy.copy(segmenters["base_maskclip"])
    segmenters["base_naclip"].mode = "naclip"
    rows = {
        name: {
            "model": args.model if name == "student" else args.base,
            "mode": segmenters[name].mode,
            "segmenter": segmenters[name],
            "iou": IoUAccumulator(len(classes)),
        }
        for name in ("base_maskclip", "base_naclip", "student")
    }
    count = 0
    for image_name, image, mask in tqdm(
        iterate_labelled_images(args), desc="eval-segmentation", disable=not progress
    ):
        if args.reduce_labels:
            mask = reduce_labels(mask)
        check_mask(mask, (image.height, image.width), len(classes), image_name)
        target = torch.from_numpy(mask)
        for row in rows.values():
            row["iou"].update(row["segmenter"].predict(image).label_map, target)
        count += 1
        if args.max_images is not None and count >= args.max_images:
            break
    if count == 0:
        raise ValueError("No labelled image was found to evaluate on.")
    names = [synonyms[0] for synonyms in classes]

    def finite(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 6)

    report = {
        "task": "zero-shot open-vocabulary semantic segmentation",
        "num_images": count,
        "images": args.dataset_name or args.images,
        "classes": names,
        "settings": {**settings, "reduce_labels": args.reduce_labels, "ignore_index": IGNORE_INDEX},
        "rows": {
            name: {
                "model": row["model"],
                "mode": row["mode"],
                "miou": finite(row["iou"].mean_iou()),
                "per_class_iou": {
                    c: finite(v) for c, v in zip(names, row["iou"].per_class_iou(), strict=True)
                },
            }
            for name, row in rows.items()
        },
        "args": asdict(args),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    """The report as a table: one row per class, one column per model, mIoU last (IoU in %)."""
    rows = report["rows"]
    columns = list(rows)
    width = max(12, *(len(c) for c in report["classes"]))

    def cell(value) -> str:
        return f"{100 * value:>14.2f}" if value is not None else f"{'-':>14}"

    lines = [f"{'class':<{width}}" + "".join(f"{c:>14}" for c in columns)]
    lines.append("-" * len(lines[0]))
    for name in report["classes"]:
        lines.append(f"{name:<{width}}" + "".join(cell(rows[c]["per_class_iou"][name]) for c in columns))
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mIoU':<{width}}" + "".join(cell(rows[c]["miou"]) for c in columns))
    lines.append(f"({report['num_images']} images; IoU in %, label 255 ignored)")
    return "\n".join(lines)


def eval_segmentation_main(argv: Sequence[str] | None = None) -> int:
    """`phreg eval-segmentation ...`. Exit codes: 0 done, 2 bad input."""
    from ..arg_parsing import run_cli

    code, args, report = run_cli(
        EvalSegmentationArguments,
        argv,
        "phreg eval-segmentation",
        "mIoU of zero-shot segmentation: base CLIP (MaskCLIP and NACLIP) and a PH-Reg CLIP student.",
        evaluate_segmentation,
    )
    if code is not None:
        return code
    print(format_report(report))
    print(f"Report: {args.out}")
    return 0


__all__ = [
    "EvalSegmentationArguments",
    "IoUAccumulator",
    "check_mask",
    "eval_segmentation_main",
    "evaluate_segmentation",
    "format_report",
    "reduce_labels",
]
