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
over the whole set with torchmetrics' `MulticlassConfusionMatrix` (ignored pixels left out): per class
`IoU = TP / (TP + FP + FN)`; a class absent from both ground truth and predictions has no IoU (null in the JSON)
and is left out of the mean, as in mmsegmentation. Masks are read by `label_maps` (one rule for every command:
255 = ignore where the class count allows it, `--reduce_zero_label` for ADE-style masks whose 0 means "other").

    phreg eval-segmentation --model STUDENT --base BASE --images DIR --masks DIR --class_names FILE --out report.json
    phreg eval-segmentation --model STUDENT --base BASE --benchmark voc21 --data_root data/ --out report.json

`--test_time_registers DIR` adds the training-free baseline (Jiang et al. 2025, a test-time-registers model made
from `--base` by `phreg test-time-registers`) as two more rows, through the MaskCLIP and the NACLIP paths;
`--ttr_images DIR` builds that model on the fly from `--base` and a folder of images instead (`ttr_rows`).

`--benchmark NAME` takes the class file, settings, label rule and layout of one of the paper's benchmarks
(`presets.SEGMENTATION_PRESETS`); every option given on the command line still wins, and the report lists what
was overridden. `--check_data` only checks the data (no model is loaded).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models.pipeline_phreg_segmentation import (
    DEFAULT_CROP_SIZE,
    DEFAULT_LOGIT_SCALE,
    DEFAULT_SHORT_SIDE,
    DEFAULT_STRIDE,
)
from .label_maps import IGNORED, LabelRule, load_image_and_label, parse_ignore_index
from .ttr_rows import (
    check_ttr_options,
    has_test_time_registers,
    load_ttr_model,
    test_time_registers_field,
    ttr_images_field,
    ttr_min_images_field,
    ttr_model_name,
    ttr_report,
)

# What --test_time_registers / --ttr_images add, for their help.
TTR_ROW_NAMES = "the rows test_time_registers_maskclip and test_time_registers_naclip"

# Settings a preset sets and an option overrides, with the value used when neither gives one.
BUILTIN_SETTINGS = {
    "short_side": DEFAULT_SHORT_SIDE,
    "crop_size": DEFAULT_CROP_SIZE,
    "stride": DEFAULT_STRIDE,
    "prob_threshold": 0.0,
    "logit_scale": DEFAULT_LOGIT_SCALE,
    "reduce_zero_label": False,
    "ignore_index": "auto",
    "resize": "torch",
    "position_interpolation": "transformers",
}


class IoUAccumulator:
    """Confusion-matrix IoU over a set of `(H, W)` predictions and ground truths (`ignore_index` pixels skipped)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORED):
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.num_classes = num_classes
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """`(H, W)` predicted class indices and `(H, W)` ground truth (`ignore_index` = not scored)."""
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


_PRESET_HELP = " (default: the --benchmark preset's, else {})"


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
    out: str = field(metadata={"help": "Where the JSON report goes (e.g. report.json)."})
    test_time_registers: str | None = test_time_registers_field(TTR_ROW_NAMES)
    ttr_images: str | None = ttr_images_field(TTR_ROW_NAMES)
    ttr_min_images: int = ttr_min_images_field()
    benchmark: str | None = field(
        default=None,
        metadata={
            "help": "One of the paper's benchmarks (voc21, context60, coco_object, voc20, context59, coco_stuff, "
            "cityscapes, ade20k): its class file, settings, label rule and layout under --data_root."
        },
    )
    data_root: str | None = field(
        default=None,
        metadata={"help": "With --benchmark: MMSegmentation's data/ folder (or the set's own folder)."},
    )
    check_data: bool = field(
        default=False, metadata={"help": "Only check the data (counts, pairing, label values) and exit."}
    )
    class_names: str | None = field(
        default=None,
        metadata={
            "help": "Class file: one class per line, line i = label i - 1, synonyms split by ', ' (default: the "
            "--benchmark preset's)."
        },
    )
    images: str | None = field(default=None, metadata={"help": "Folder of images (with --masks)."})
    masks: str | None = field(
        default=None,
        metadata={"help": "Folder of label PNGs with the images' relative paths (pixel = class index)."},
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A datasets id instead of --images/--masks."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    split: str = field(default="validation", metadata={"help": "Split of --dataset_name."})
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    label_column: str = field(default="annotation", metadata={"help": "Label-map column of --dataset_name."})
    reduce_zero_label: bool | None = field(
        default=None,
        metadata={
            "help": "ADE-style masks: 0 ('other') -> ignored, k -> k - 1" + _PRESET_HELP.format("off") + "."
        },
    )
    reduce_labels: bool = field(default=False, metadata={"help": "Older name of --reduce_zero_label."})
    ignore_index: str | None = field(
        default=None,
        metadata={
            "help": "Stored mask value that is not scored: a number, -1 for none, or auto (255 when 255 cannot be a "
            "class)" + _PRESET_HELP.format("auto") + "."
        },
    )
    max_images: int | None = field(default=None, metadata={"help": "Evaluate at most this many images."})
    prob_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Background threshold on the top class probability" + _PRESET_HELP.format("0") + "."
        },
    )
    logit_scale: float | None = field(
        default=None,
        metadata={"help": "Softmax scale on cosine logits" + _PRESET_HELP.format(DEFAULT_LOGIT_SCALE) + "."},
    )
    short_side: int | None = field(
        default=None,
        metadata={
            "help": "Resize the short side to this first" + _PRESET_HELP.format(DEFAULT_SHORT_SIDE) + "."
        },
    )
    crop_size: int | None = field(
        default=None,
        metadata={"help": "Sliding-window crop in pixels" + _PRESET_HELP.format(DEFAULT_CROP_SIZE) + "."},
    )
    stride: int | None = field(
        default=None,
        metadata={"help": "Sliding-window stride in pixels" + _PRESET_HELP.format(DEFAULT_STRIDE) + "."},
    )
    resize: str | None = field(
        default=None,
        metadata={
            "help": "torch, or reference (mmcv imrescale: uint8 bilinear, long side capped at 2048)"
            + _PRESET_HELP.format("torch")
            + "."
        },
    )
    position_interpolation: str | None = field(
        default=None,
        metadata={
            "help": "transformers, or reference (bicubic with scale factor (n + 0.1) / N, as NACLIP / PH-Reg)"
            + _PRESET_HELP.format("transformers")
            + "."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Crops per forward pass."})
    device: str | None = field(
        default=None, metadata={"help": "'cpu', 'cuda', ... (default: cuda if available)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --out file."})

    def validate(self) -> None:
        folders = self.images is not None or self.masks is not None
        sources = int(folders) + int(self.dataset_name is not None) + int(self.data_root is not None)
        if sources != 1 or (folders and (self.images is None or self.masks is None)):
            raise ValueError(
                "Pass either --images DIR --masks DIR, or --dataset_name ID (with --split/--image_column/"
                "--label_column), or --benchmark NAME --data_root DIR."
            )
        if self.data_root is not None and self.benchmark is None:
            raise ValueError("--data_root needs --benchmark NAME (the layout to read it with).")
        if self.class_names is None and self.benchmark is None:
            raise ValueError(
                "Pass --class_names FILE (one class per line), or --benchmark NAME for a preset's."
            )
        from ..file_checks import check_output_file
        from ..models.pipeline_phreg_segmentation import check_segmenter_settings

        if not self.check_data:
            check_output_file(self.out, "--out", self.overwrite)  # never a file of a model folder
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"--max_images must be >= 1, got {self.max_images}.")
        check_ttr_options(self)
        # Unset values come from the preset or the built-in defaults, which are valid.
        check_segmenter_settings(
            BUILTIN_SETTINGS["logit_scale"] if self.logit_scale is None else self.logit_scale,
            BUILTIN_SETTINGS["prob_threshold"] if self.prob_threshold is None else self.prob_threshold,
            prefix="--",
        )


def resolve_settings(args: EvalSegmentationArguments) -> tuple[dict, dict]:
    """`(settings, overridden)`: every preset-able setting (class file included) resolved as option > preset >
    built-in default; `overridden` maps each option that replaced a preset value to `{"preset": v, "given": v}`."""
    from .presets import segmentation_preset

    preset = segmentation_preset(args.benchmark).settings() if args.benchmark else {}
    given = {name: getattr(args, name) for name in (*BUILTIN_SETTINGS, "class_names")}
    if args.reduce_labels:
        given["reduce_zero_label"] = (
            True if given["reduce_zero_label"] is None else given["reduce_zero_label"]
        )
    if given["ignore_index"] is not None:
        given["ignore_index"] = parse_ignore_index(given["ignore_index"])
    settings, overridden = {}, {}
    for name, value in given.items():
        default = preset.get(name, BUILTIN_SETTINGS.get(name))
        settings[name] = default if value is None else value
        if value is not None and name in preset and preset[name] != value:
            overridden[name] = {"preset": preset[name], "given": value}
    return settings, overridden


SEGMENTER_SETTINGS = ("short_side", "crop_size", "stride", "prob_threshold", "logit_scale", "resize")
SEGMENTER_SETTINGS += ("position_interpolation",)


def label_rule(settings: dict, num_classes: int) -> LabelRule:
    return LabelRule(num_classes, bool(settings["reduce_zero_label"]), settings["ignore_index"])


def labelled_pairs(args: EvalSegmentationArguments) -> tuple[Iterable[tuple[str, object, object]], str]:
    """`(name, image, mask)` triples (undecoded: paths or bytes) from the folders, the dataset or the preset's
    layout, and a description of where they came from."""
    if args.dataset_name is not None:
        return _dataset_pairs(args), f"{args.dataset_name} ({args.split})"
    if args.data_root is not None:
        from .benchmark_data import pairs_of
        from .presets import segmentation_preset

        preset = segmentation_preset(args.benchmark)
        pairs = pairs_of(args.data_root, preset.layout, f"{preset.name} ({preset.split})")
        return list(zip(pairs.names, pairs.images, pairs.labels, strict=True)), pairs.description
    return _folder_pairs(Path(args.images), Path(args.masks)), str(args.images)


def _dataset_pairs(args: EvalSegmentationArguments) -> Iterator[tuple[str, object, object]]:
    import datasets

    dataset = datasets.load_dataset(args.dataset_name, args.dataset_config, split=args.split)
    for column in (args.image_column, args.label_column):
        if column not in dataset.column_names:
            raise ValueError(
                f"{args.dataset_name} has no column {column!r} (columns: {dataset.column_names}); pass "
                "--image_column / --label_column."
            )
    for column in (args.image_column, args.label_column):
        if isinstance(dataset.features[column], datasets.Image):
            # undecoded bytes: our decoders see the file format (a JPEG mask is refused) and the EXIF orientation
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    for index in range(len(dataset)):
        example = dataset[index]
        yield f"{args.dataset_name}[{index}]", example[args.image_column], example[args.label_column]


def _folder_pairs(images_root: Path, masks_root: Path) -> Iterator[tuple[str, object, object]]:
    from ..data import image_extensions, list_image_files

    if not masks_root.is_dir():
        raise FileNotFoundError(f"--masks {masks_root} is not a folder; pass the folder of label PNGs.")
    for path in list_image_files(images_root, option="--images"):
        relative = path.relative_to(images_root)
        candidates = [
            (masks_root / relative).with_suffix(ext)
            for ext in dict.fromkeys((".png", *sorted(image_extensions())))
        ]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(
                f"No mask for {path} in --masks {masks_root} (looked for {candidates[0]}); every image needs a label "
                "map with the same relative path."
            )
        if len(found) > 1:  # scoring against one of them, silently, could score the wrong labels
            raise ValueError(
                f"--masks {masks_root} holds {len(found)} masks for {relative}: "
                f"{', '.join(str(c.relative_to(masks_root)) for c in found)}. Remove or rename all but one."
            )
        yield str(relative), path, found[0]


def iterate_labelled_images(args: EvalSegmentationArguments, rule: LabelRule | None = None):
    """`(name, RGB image, (H, W) int64 labels)` of every pair, decoded and checked under `rule` (default: the
    resolved settings' rule with no class count check)."""
    if rule is None:
        settings, _ = resolve_settings(args)
        rule = LabelRule(None, bool(settings["reduce_zero_label"]), settings["ignore_index"])
    pairs, _ = labelled_pairs(args)
    for name, image_value, label_value in pairs:
        image, labels = load_image_and_label(image_value, label_value, rule, name)
        yield name, image, labels


def score_rows(
    segmenters: dict,
    pairs: Iterable[tuple[str, object, object]],
    rule: LabelRule,
    max_images: int | None = None,
    progress: bool = True,
    description: str = "eval-segmentation",
    total: int | None = None,
) -> tuple[dict[str, IoUAccumulator], int]:
    """Run every segmenter on every pair; returns per row its `IoUAccumulator`, and the number of images."""
    from tqdm.auto import tqdm

    accumulators = {name: IoUAccumulator(rule.num_classes) for name in segmenters}
    count = 0
    if max_images is not None and total is not None:
        total = min(total, max_images)
    for name, image_value, label_value in tqdm(
        pairs, desc=description, unit="image", total=total, disable=not progress
    ):
        image, labels = load_image_and_label(image_value, label_value, rule, name)
        target = torch.from_numpy(labels)
        for row, segmenter in segmenters.items():
            accumulators[row].update(segmenter.predict(image).label_map, target)
        count += 1
        if max_images is not None and count >= max_images:
            break
    if count == 0:
        raise ValueError("No labelled image was found to evaluate on.")
    return accumulators, count


def build_segmenters(loaded: dict, rows, classes, settings: dict, batch_size: int) -> dict:
    """One `OpenVocabularySegmenter` per row (`presets.SegmentationRow`); rows of the same model share the text
    embeddings (a shallow copy with another dense mode). `loaded`: row option -> (model, tokenizer, processor)."""
    from ..models.pipeline_phreg_segmentation import OpenVocabularySegmenter

    options = {name: settings[name] for name in SEGMENTER_SETTINGS}
    segmenters, by_option = {}, {}
    for row in rows:
        if row.option in by_option:
            segmenter = copy.copy(by_option[row.option])
            segmenter.mode = row.mode
        else:
            model, tokenizer, processor = loaded[row.option]
            segmenter = OpenVocabularySegmenter(
                model,
                tokenizer,
                processor.image_mean,
                processor.image_std,
                classes,
                mode=row.mode,
                batch_size=batch_size,
                **options,
            )
            by_option[row.option] = segmenter
        segmenters[row.name] = segmenter
    return segmenters


def finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def model_names(args) -> dict[str, str]:
    """Row option -> how the user named that model (`--base`, `--model`, and `--test_time_registers` or what
    `--ttr_images` built it from, if given)."""
    names = {"base": args.base, "model": args.model}
    if has_test_time_registers(args):
        names["test_time_registers"] = ttr_model_name(args)
    return names


def rows_report(rows, accumulators: dict, models: dict[str, str], names: list[str]) -> dict:
    """The "rows" of a report: per row its model, dense mode, mIoU and per-class IoU (fractions, None = no IoU)."""
    return {
        row.name: {
            "model": models[row.option],
            "mode": row.mode,
            "miou": finite(accumulators[row.name].mean_iou()),
            "per_class_iou": {
                c: finite(v) for c, v in zip(names, accumulators[row.name].per_class_iou(), strict=True)
            },
        }
        for row in rows
    }


def write_json_atomically(path: str | Path, report: dict) -> Path:
    """Write `report` to `path` through a temporary file in the same folder and a rename (a run killed while
    writing never leaves half a report)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_base_and_student(base: str, model: str, device, ttr=None) -> dict:
    """`{"base": (model, tokenizer, processor), "model": ...}` for `--base` and `--model`, refused unless the
    student was distilled from that base (`check_base_is_stock_clip`, `check_clip_student_matches_base`); with
    `ttr` (options holding test_time_registers / ttr_images / ttr_min_images) giving one, also
    `"test_time_registers"` (`ttr_rows.load_ttr_model`: a folder refused unless made from `--base`, or one built
    on the fly), with the base's tokenizer and processor."""
    from .segmentation import load_segmentation_model

    check_base_is_stock_clip(base)
    loaded = {
        "base": load_segmentation_model(base, device=device, option="--base"),
        "model": load_segmentation_model(model, device=device, option="--model"),
    }
    check_clip_student_matches_base(loaded["base"][0], loaded["model"][0], base, model)
    if ttr is not None and has_test_time_registers(ttr):
        base_model, tokenizer, processor = loaded["base"]
        ttr_model = load_ttr_model(ttr, base_model, processor=processor, device=device)
        loaded["test_time_registers"] = (ttr_model, tokenizer, processor)
    return loaded


def evaluate_segmentation(args: EvalSegmentationArguments, progress: bool = True) -> dict:
    """Run the evaluation; returns the report (also written to `args.out`), or the data check (`--check_data`)."""
    from ..models.pipeline_phreg_segmentation import read_class_file
    from .artifacts import resolve_device
    from .presets import segmentation_rows

    args.validate()
    settings, overridden = resolve_settings(args)
    if not Path(settings["class_names"]).is_file():
        raise FileNotFoundError(
            f"--class_names {settings['class_names']} does not exist; pass a file, one class per line."
        )
    classes = read_class_file(settings["class_names"])
    rule = label_rule(settings, len(classes))
    if args.check_data:
        return check_data_report(args, rule, progress)
    pairs, description = labelled_pairs(args)
    loaded = load_base_and_student(args.base, args.model, resolve_device(args.device), args)
    rows = segmentation_rows(has_test_time_registers(args))
    segmenters = build_segmenters(loaded, rows, classes, settings, args.batch_size)
    total = len(pairs) if isinstance(pairs, list) else None
    accumulators, count = score_rows(segmenters, pairs, rule, args.max_images, progress, total=total)
    names = [synonyms[0] for synonyms in classes]
    report = {
        "task": "zero-shot open-vocabulary semantic segmentation",
        "benchmark": args.benchmark,
        "num_images": count,
        "images": description,
        "classes": names,
        "settings": {**settings, **rule.describe()},
        "overridden": overridden,
        "rows": rows_report(rows, accumulators, model_names(args), names),
        "args": asdict(args),
    }
    report.update(ttr_report(args, loaded.get("test_time_registers", (None,))[0]))
    write_json_atomically(args.out, report)
    return report


def check_data_report(args: EvalSegmentationArguments, rule: LabelRule, progress: bool = True) -> dict:
    """`--check_data`: the preset layout's split checked (`benchmark_data.check_layout`), or every folder pair
    decoded under the rule; `{"check": text, "ok": bool}`."""
    from .benchmark_data import SplitCheck, check_layout, format_checks
    from .presets import segmentation_preset

    if args.data_root is not None:
        preset = segmentation_preset(args.benchmark)
        check = check_layout(args.data_root, preset.layout, f"{preset.name} ({preset.split})", rule, progress)
    else:
        check = SplitCheck(str(args.dataset_name or args.images))
        pairs, check.description = labelled_pairs(args)
        for name, image_value, label_value in pairs:
            check.num_images += 1
            try:
                load_image_and_label(image_value, label_value, rule, name)
                check.num_labels += 1
            except ValueError as error:
                check.problems.append(str(error))
    return {"check": format_checks([check]), "ok": check.ok}


def format_report(report: dict) -> str:
    """The report as a table: one row per class, one column per model, mIoU last (IoU in %)."""
    rows = report["rows"]
    columns = list(rows)
    width = max(12, *(len(c) for c in report["classes"]))

    widths = {c: max(14, len(c) + 2) for c in columns}  # test_time_registers_maskclip is wider than a number

    def cell(column: str, value) -> str:
        return f"{100 * value:>{widths[column]}.2f}" if value is not None else f"{'-':>{widths[column]}}"

    lines = [f"{'class':<{width}}" + "".join(f"{c:>{widths[c]}}" for c in columns)]
    lines.append("-" * len(lines[0]))
    for name in report["classes"]:
        lines.append(f"{name:<{width}}" + "".join(cell(c, rows[c]["per_class_iou"][name]) for c in columns))
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mIoU':<{width}}" + "".join(cell(c, rows[c]["miou"]) for c in columns))
    ignore = report.get("settings", {}).get("ignore_index", 255)
    ignored = f"label {ignore} ignored" if ignore is not None else "no label ignored"
    lines.append(f"({report['num_images']} images; IoU in %, {ignored})")
    return "\n".join(lines)


def eval_segmentation_main(argv: Sequence[str] | None = None) -> int:
    """`phreg eval-segmentation ...`. Exit codes: 0 done, 2 bad input (or data that fails `--check_data`)."""
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
    if args.check_data:
        print(report["check"])
        return 0 if report["ok"] else 2
    print(format_report(report))
    if report["overridden"]:
        changed = ", ".join(
            f"--{k} {v['given']} (preset: {v['preset']})" for k, v in report["overridden"].items()
        )
        print(f"Overrode the {args.benchmark} preset: {changed}")
    print(f"Report: {args.out}")
    return 0


__all__ = [
    "BUILTIN_SETTINGS",
    "EvalSegmentationArguments",
    "IoUAccumulator",
    "build_segmenters",
    "eval_segmentation_main",
    "evaluate_segmentation",
    "format_report",
    "iterate_labelled_images",
    "labelled_pairs",
    "resolve_settings",
    "score_rows",
    "write_json_atomically",
]
