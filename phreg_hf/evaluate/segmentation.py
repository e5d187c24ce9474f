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
"""`phreg segment`: zero-shot open-vocabulary segmentation of a folder with a CLIP (PH-Reg student or base).

The segmentation itself (prompt ensemble, sliding window, softmax, synonyms, threshold) lives in
`pipeline_phreg_segmentation.py`, the file that travels with checkpoints; this module adds what a command needs:
loading a model folder or Hub id, writing label maps and colour overlays with a legend, registering the custom
pipeline with transformers, and saving a model with that pipeline for `trust_remote_code` users.

    phreg segment --model clip-phreg --labels "background; cat; dog, puppy" --images DIR --out DIR

writes `OUT/labels/NAME.png` (pixel value = class index; 16-bit when there are more than 256 classes) and
`OUT/overlays/NAME.png` (the image blended with class colours, a legend beside it) per image, and
`OUT/classes.json` (the classes, and which image each label map belongs to). Images are decoded as the trainer
decodes them (`data.open_image`: EXIF orientation applied, 16-bit grey rescaled). Existing files are never
overwritten unless `--overwrite` is given; one run at a time writes into an `--out`, and the whole set is moved
into place at the end (`segment_outputs.py`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from ..models.pipeline_phreg_segmentation import (
    DEFAULT_CROP_SIZE,
    DEFAULT_LOGIT_SCALE,
    DEFAULT_SHORT_SIDE,
    DEFAULT_STRIDE,
    PIPELINE_TASK,
    OpenVocabularySegmenter,
    PhregSegmentationPipeline,
    parse_labels,
    read_class_file,
)


def register_segmentation_pipeline() -> None:
    """Make `pipeline("phreg-open-vocabulary-segmentation", model=...)` work (done by `import phreg_hf`)."""
    from transformers import pipelines

    pipelines.PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=PhregSegmentationPipeline, pt_model=AutoModel, type="multimodal"
    )


def save_pretrained_with_pipeline(model, folder: str | os.PathLike, processor=None) -> None:
    """`model.save_pretrained(folder)` plus the segmentation pipeline for `trust_remote_code` users.

    Adds `custom_pipelines` to the config (so `pipeline(model=folder, trust_remote_code=True)` finds the task by
    itself), copies `pipeline_phreg_segmentation.py` and the files it imports, and saves `processor` (a
    `CLIPProcessor`: tokenizer and image processor) beside the weights.
    """
    from transformers.dynamic_module_utils import custom_object_save

    model.config.custom_pipelines = {
        PIPELINE_TASK: {
            "impl": f"{PhregSegmentationPipeline.__module__.split('.')[-1]}.{PhregSegmentationPipeline.__name__}",
            "pt": ["AutoModel"],
            "type": "multimodal",
        }
    }
    model.save_pretrained(folder, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(folder)
    custom_object_save(PhregSegmentationPipeline, folder)


def load_segmentation_model(
    model: str, revision: str | None = None, device: str | None = None, option: str = "--model"
):
    """`(model, tokenizer, image_processor)` of a CLIP / PH-Reg CLIP folder or Hub id, with clear errors.

    Refused with a message naming `option` and the fix: a missing folder, a truncated weight file, a config
    without its vision tower, a model that is not a full CLIP, weights holding NaN or inf.
    """
    from ..file_checks import check_local_weights
    from ..models.clip_dense import as_phreg_clip
    from ..models.modeling_phreg import check_clip_config_has_towers
    from .artifacts import check_finite_weights, check_model_source

    if not Path(model).exists() and "/" not in str(model):
        raise FileNotFoundError(
            f"{option} {model} is neither a folder nor a Hub id; pass a CLIP model folder."
        )
    check_model_source(model, option)
    check_local_weights(model)  # a truncated model.safetensors is named, not a raw safetensors error
    check_clip_config_has_towers(model, option, revision=revision)
    loaded = AutoModel.from_pretrained(model, revision=revision)
    clip = as_phreg_clip(loaded)  # ValueError naming the fix for a non-CLIP model
    check_finite_weights(clip, option, model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{model} has no tokenizer files ({error}); save the base CLIP's processor beside the weights, e.g. "
            "CLIPProcessor.from_pretrained('openai/clip-vit-base-patch16').save_pretrained(FOLDER)."
        ) from None
    image_processor = AutoImageProcessor.from_pretrained(model, revision=revision)
    if device is not None:
        clip = clip.to(device)
    return clip, tokenizer, image_processor


# ----------------------------------------------------------------------------------------------------------------
# Pictures


def palette(num_classes: int) -> np.ndarray:
    """`(num_classes, 3)` uint8 colours: the PASCAL VOC colour map (class 0 black), distinct for any count."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def label_image(label_map: torch.Tensor | np.ndarray, num_classes: int | None = None) -> Image.Image:
    """`(H, W)` class indices -> PNG-ready image: 8-bit "L" up to 256 classes, 16-bit "I;16" above (up to 65536).

    `num_classes` decides, so that every label map of a run has the same depth; None: the map's largest index.
    """
    labels = np.asarray(label_map)
    count = num_classes if num_classes is not None else int(labels.max(initial=0)) + 1
    if count > 65536:
        raise ValueError(f"{count} classes do not fit a 16-bit label map (at most 65536).")
    if count <= 256:
        return Image.fromarray(labels.astype(np.uint8), "L")
    return Image.fromarray(labels.astype(np.uint16))  # PIL names a uint16 array's mode "I;16" itself


def overlay_with_legend(
    image: Image.Image, label_map: torch.Tensor | np.ndarray, class_names: Sequence[str], alpha: float = 0.55
) -> Image.Image:
    """The image blended with class colours, and a legend (colour box + name) of the classes present at right."""
    labels = np.asarray(label_map)
    colours = palette(len(class_names))
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1 - alpha) * base + alpha * colours[labels].astype(np.float32)
    picture = Image.fromarray(blended.clip(0, 255).astype(np.uint8))
    present = [int(i) for i in np.unique(labels)]
    font = ImageFont.load_default()
    row, box = 16, 12
    legend_width = 24 + max(int(font.getlength(class_names[i])) for i in present) if present else 0
    height = max(picture.height, row * len(present) + 8)
    canvas = Image.new("RGB", (picture.width + legend_width, height), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for slot, index in enumerate(present):
        x, y = picture.width + 4, 4 + slot * row
        draw.rectangle([x, y, x + box, y + box], fill=tuple(int(c) for c in colours[index]), outline="black")
        draw.text((x + box + 4, y), class_names[index], fill="black", font=font)
    return canvas


# ----------------------------------------------------------------------------------------------------------------
# The command


@dataclass
class SegmentArguments:
    """Options of `phreg segment` (`phreg segment --help`)."""

    model: str = field(
        metadata={
            "help": "Folder or Hub id of a PH-Reg CLIP student (PhregCLIPModel) or a base CLIP (CLIPModel)."
        }
    )
    images: str = field(metadata={"help": "Folder of images to segment (searched recursively)."})
    out: str = field(
        metadata={"help": "Output folder: labels/, overlays/ and classes.json are written there."}
    )
    labels: str | None = field(
        default=None,
        metadata={"help": "Classes separated by ';', synonyms by ', ', e.g. 'background; cat; dog, puppy'."},
    )
    labels_file: str | None = field(
        default=None,
        metadata={"help": "A file with one class per line (synonyms split by ', '), instead of --labels."},
    )
    mode: Literal["maskclip", "naclip"] = field(
        default="maskclip",
        metadata={
            "help": "Dense path: 'maskclip' (value path: a student's distilled output, MaskCLIP for a base CLIP) or "
            "'naclip' (NACLIP's reduced last layer, the baseline for a base CLIP)."
        },
    )
    prob_threshold: float = field(
        default=0.0,
        metadata={
            "help": "Pixels whose top class probability is below this go to class 0 (VOC21 protocol: 0.1)."
        },
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
    revision: str | None = field(default=None, metadata={"help": "Hub revision of --model."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace the outputs of an earlier run in --out (its label maps that this run does not "
            "rewrite are removed; other files are kept)."
        },
    )

    def __post_init__(self) -> None:
        from ..models.pipeline_phreg_segmentation import check_segmenter_settings

        check_segmenter_settings(self.logit_scale, self.prob_threshold, prefix="--")


# Options of `phreg segment` and `phreg eval-segmentation` that go to `OpenVocabularySegmenter` as they are.
SEGMENTER_OPTIONS = ("logit_scale", "prob_threshold", "short_side", "crop_size", "stride", "batch_size")


def segmenter_settings(args) -> dict:
    """The `OpenVocabularySegmenter` keyword arguments that a command's options set (`SEGMENTER_OPTIONS`)."""
    return {name: getattr(args, name) for name in SEGMENTER_OPTIONS}


def classes_from_arguments(labels: str | None, labels_file: str | None) -> list[list[str]]:
    """The class list of `--labels` or `--labels_file` (exactly one), with errors naming the fix."""
    if (labels is None) == (labels_file is None):
        raise ValueError(
            "Pass exactly one of --labels 'background; cat; dog, puppy' or --labels_file FILE (one class per line)."
        )
    if labels_file is not None:
        if not Path(labels_file).is_file():
            raise FileNotFoundError(
                f"--labels_file {labels_file} does not exist; pass a text file, one class per line."
            )
        return read_class_file(labels_file)
    return parse_labels(labels)


def segment_folder(args: SegmentArguments, progress: bool = True) -> dict:
    """Run `phreg segment`; returns `{"num_images", "classes", "labels_dir", "overlays_dir"}`.

    Cheap checks first (classes, folders, output names, the device), then `--out` is claimed (one run at a time),
    the model loaded, every image segmented into a staging folder, and the set moved into place.
    """
    from tqdm.auto import tqdm

    from ..data import list_image_files, read_image
    from . import segment_outputs as outputs
    from .artifacts import resolve_device

    classes = classes_from_arguments(args.labels, args.labels_file)
    outputs.check_folders(args.images, args.out)
    paths = list_image_files(args.images, option="--images")
    entries = outputs.plan_outputs(paths, args.images)
    device = resolve_device(args.device)
    out = Path(args.out)
    with outputs.claim_output_folder(out):
        earlier = outputs.earlier_outputs(out, args.overwrite)
        names_written = [name for e in entries for name in (e.label_map, e.overlay)] + [outputs.CLASSES_FILE]
        existing = [out / name for name in names_written if (out / name).exists()]
        if existing and not args.overwrite:
            raise ValueError(
                f"--out {out} already holds {len(existing)} of the output files (e.g. {existing[0]}); pass "
                "--overwrite to replace them, or another --out."
            )
        model, tokenizer, image_processor = load_segmentation_model(args.model, args.revision, device)
        segmenter = OpenVocabularySegmenter(
            model,
            tokenizer,
            image_processor.image_mean,
            image_processor.image_std,
            classes,
            mode=args.mode,
            **segmenter_settings(args),
        )
        names = [synonyms[0] for synonyms in classes]
        staging = outputs.new_staging_folder(out)
        try:
            for path, entry in tqdm(
                list(zip(paths, entries, strict=True)), desc="segment", disable=not progress
            ):
                image = read_image(path, fix="remove or replace it, or segment the other images without it")
                result = segmenter.predict(image)
                for name, picture in (
                    (entry.label_map, label_image(result.label_map, len(classes))),
                    (entry.overlay, overlay_with_legend(image, result.label_map, names)),
                ):
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    picture.save(staging / name)
            record = {"classes": classes, "mode": args.mode, "outputs": outputs.manifest(entries)}
            (staging / outputs.CLASSES_FILE).write_text(json.dumps(record, indent=2) + "\n")
            outputs.commit_outputs(staging, out, names_written, earlier)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return {
        "num_images": len(paths),
        "classes": classes,
        "labels_dir": str(out / outputs.LABELS_DIR),
        "overlays_dir": str(out / outputs.OVERLAYS_DIR),
    }


def segment_main(argv: Sequence[str] | None = None) -> int:
    """`phreg segment --model M --labels '...' --images DIR --out DIR`. Exit codes: 0 done, 2 bad input."""
    from ..arg_parsing import run_cli

    code, args, summary = run_cli(
        SegmentArguments,
        argv,
        "phreg segment",
        "Zero-shot open-vocabulary segmentation with a PH-Reg CLIP student or a base CLIP.",
        segment_folder,
    )
    if code is not None:
        return code
    print(
        f"Segmented {summary['num_images']} images into {summary['labels_dir']} (class index per pixel) and "
        f"{summary['overlays_dir']} (colour overlays with legend); {len(summary['classes'])} classes."
    )
    return 0


__all__ = [
    "SegmentArguments",
    "label_image",
    "load_segmentation_model",
    "overlay_with_legend",
    "palette",
    "register_segmentation_pipeline",
    "save_pretrained_with_pipeline",
    "segment_folder",
    "segment_main",
]
