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
"""The options of `phreg probe` (`ProbeArguments`, read by `HfArgumentParser`); the probe itself: `probe`."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import probe_data
from .probe_data import LabelSettings
from .ttr_rows import check_ttr_options, test_time_registers_field, ttr_images_field, ttr_min_images_field

PAPER_CROP_SIZE = 518
PAPER_STRIDE = 341


# ----------------------------------------------------------------------------------------------------------------
# Options
@dataclass
class ProbeArguments:
    """Options of `phreg probe` (`HfArgumentParser(ProbeArguments)`; `phreg probe --help` lists the defaults)."""

    task: str = field(metadata={"help": "segmentation or depth."})
    base: str | None = field(
        default=None,
        metadata={"help": "Hub id or folder of the stock base model, e.g. facebook/dinov2-base."},
    )
    student: str | None = field(default=None, metadata={"help": "Folder (or Hub id) of the PH-Reg student."})
    include_teacher: bool = field(
        default=False,
        metadata={
            "help": "Also probe the denoised teacher's features (K = --num_views forward passes per crop)."
        },
    )
    num_views: int = field(
        default=10, metadata={"help": "Views of the denoised teacher (--include_teacher)."}
    )
    test_time_registers: str | None = test_time_registers_field()
    ttr_images: str | None = ttr_images_field()
    ttr_min_images: int = ttr_min_images_field()
    out: str | None = field(
        default=None,
        metadata={
            "help": "Write the report as JSON here (the model card reads STUDENT/phreg_dense_NAME.json). An "
            "existing file is kept unless --overwrite; a file of a model folder (config, weights) never replaced."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --out file."})
    # Data
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hugging Face dataset (Hub id or path)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Its configuration name."})
    split: str = field(default="train", metadata={"help": "Split the heads train on (--dataset_name)."})
    eval_split: str | None = field(
        default="validation",
        metadata={
            "help": "Split they are scored on (--dataset_name); empty: hold out --train_val_split of --split."
        },
    )
    image_column: str = field(default="image", metadata={"help": "Column of the images (--dataset_name)."})
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of the masks / depth maps (default: annotation, label, depth_map, ... if present)."
        },
    )
    images: str | None = field(default=None, metadata={"help": "Folder of training images."})
    masks: str | None = field(
        default=None, metadata={"help": "Folder of class-index masks, paired with --images by relative path."}
    )
    depths: str | None = field(
        default=None,
        metadata={"help": "Folder of depth maps (16-bit PNG, float TIFF, .npy), paired by path."},
    )
    eval_images: str | None = field(default=None, metadata={"help": "Folder of evaluation images."})
    eval_masks: str | None = field(default=None, metadata={"help": "Their masks (segmentation)."})
    eval_depths: str | None = field(default=None, metadata={"help": "Their depth maps (depth)."})
    train_val_split: float = field(
        default=0.25,
        metadata={
            "help": "Share of the pairs held out for scoring when no evaluation set is given (seeded)."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training pairs."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Score at most this many pairs."})
    # Labels
    num_classes: int | None = field(
        default=None, metadata={"help": "Classes (default: the largest training class index + 1)."}
    )
    reduce_zero_label: bool = field(
        default=False, metadata={"help": "0 means 'no label' and other classes shift down by one (ADE20k)."}
    )
    ignore_index: str | None = field(
        default=None,
        metadata={
            "help": "Stored mask value that is not scored: a number, -1 for none, or auto (default: 255 when 255 "
            "cannot be a class)."
        },
    )
    depth_scale: float | None = field(
        default=None,
        metadata={
            "help": "Stored depth / depth_scale = depth. Default: 1000 for integer maps (mm), 1 for floats."
        },
    )
    min_depth: float = field(
        default=1e-3, metadata={"help": "Depths at or below this are invalid (not scored)."}
    )
    max_depth: float = field(
        default=10.0, metadata={"help": "Depth limit (NYUv2: 10 m); pixels at or beyond it are invalid."}
    )
    eval_crop: str | None = field(
        default=None,
        metadata={
            "help": "Score depth only inside top,bottom,left,right of each map (NYUv2's Eigen crop: 45,471,41,601)."
        },
    )
    depth_bins: int = field(
        default=256, metadata={"help": "Bins of the depth head (DINOv2's linear probe: 256)."}
    )
    # Protocol
    crop_size: int | None = field(
        default=None,
        metadata={
            "help": f"Training crop and test window side (default {PAPER_CROP_SIZE}, rounded to the patch size)."
        },
    )
    stride: int | None = field(
        default=None,
        metadata={
            "help": f"Sliding-window stride at test (default crop * {PAPER_STRIDE}/{PAPER_CROP_SIZE})."
        },
    )
    short_side: int | None = field(
        default=None,
        metadata={
            "help": "Images are rescaled so the short side is this before augmentation and at test (default: "
            "the crop size; 0 keeps their size)."
        },
    )
    min_scale: float = field(default=0.5, metadata={"help": "Smallest random rescale factor."})
    max_scale: float = field(default=2.0, metadata={"help": "Largest random rescale factor."})
    hflip: bool = field(default=True, metadata={"help": "Random horizontal flips."})
    photometric: bool = field(
        default=True, metadata={"help": "Photometric jitter (brightness, contrast, saturation)."}
    )
    feature_cache: str = field(
        default="auto",
        metadata={
            "help": "auto: cache frozen features when augmentation is off; on: cache --cached_copies "
            "augmented crops per pair; off: run the backbone every step."
        },
    )
    cached_copies: int = field(
        default=4, metadata={"help": "Augmented crops per pair with --feature_cache on."}
    )
    max_steps: int = field(default=20000, metadata={"help": "Training steps of each head (paper: 20k)."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Crops per step and process (paper: 8)."}
    )
    eval_batch_size: int = field(default=8, metadata={"help": "Windows (or cached crops) per backbone pass."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (paper: 1e-3)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (paper: 1e-4)."})
    poly_power: float = field(default=1.0, metadata={"help": "lr = lr0 * (1 - step / max_steps) ** power."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps before the poly decay."})
    seed: int = field(
        default=0, metadata={"help": "Seeds head initialisation, crops and order (same for every model)."}
    )
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPUs that support it, else fp32), no, bf16 or fp16."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Workers decoding training crops."})
    base_revision: str | None = field(default=None, metadata={"help": "Hub revision of --base."})

    def __post_init__(self) -> None:
        probe_data.check_task(self.task)
        if self.feature_cache not in ("auto", "on", "off"):
            raise ValueError(f"--feature_cache must be auto, on or off, got {self.feature_cache!r}.")
        for name in (
            "max_steps",
            "per_device_train_batch_size",
            "eval_batch_size",
            "cached_copies",
            "num_views",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"Need 0 < --min_scale <= --max_scale, got {self.min_scale} and {self.max_scale}."
            )
        if self.task == "depth" and not 0 <= self.min_depth < self.max_depth:
            raise ValueError(
                f"Need 0 <= --min_depth < --max_depth, got {self.min_depth} and {self.max_depth}."
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"--num_classes must be >= 1, got {self.num_classes}.")
        check_ttr_options(self)
        self.label_settings().rule  # noqa: B018 - refuses an ignore value that is also a class, naming both
        self.parsed_eval_crop()

    def parsed_eval_crop(self) -> tuple[int, int, int, int] | None:
        if self.eval_crop is None or self.eval_crop == "":
            return None
        try:
            top, bottom, left, right = (int(v) for v in str(self.eval_crop).split(","))
        except ValueError:
            raise ValueError(
                f"--eval_crop must be top,bottom,left,right (e.g. 45,471,41,601), got {self.eval_crop!r}."
            ) from None
        if not (0 <= top < bottom and 0 <= left < right):
            raise ValueError(
                f"--eval_crop {self.eval_crop} is an empty region; need top < bottom, left < right."
            )
        return top, bottom, left, right

    def label_settings(self) -> LabelSettings:
        from .label_maps import parse_ignore_index

        return LabelSettings(
            self.task,
            self.reduce_zero_label,
            self.depth_scale,
            self.min_depth,
            self.max_depth,
            num_classes=self.num_classes,
            ignore_index=parse_ignore_index(self.ignore_index),
            eval_crop=self.parsed_eval_crop(),
        )


__all__ = ["PAPER_CROP_SIZE", "PAPER_STRIDE", "ProbeArguments"]
