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
"""Benchmark presets: the paper's Table 1 (zero-shot segmentation) and Table 2 (linear probes) as data.

One frozen dataclass per benchmark holds everything a run needs: the class file, the harness settings, the label
rule, the split, the on-disk layout and the paper's numbers. `phreg eval-segmentation --benchmark NAME`,
`phreg benchmark segmentation` and `phreg benchmark probe` read these tables; no command branches on a name.

Sources (public code, read for facts; nothing copied):
- Class files: NACLIP's `configs/cls_*.txt` (`sinahmr/NACLIP`, byte for byte; SCLIP's are identical), which the
  PH-Reg harness refers to under the same names. Shipped in `class_names/`.
- Segmentation settings: PH-Reg's `CLIP/zero_shot/configs/cfg_*.py` (short side of `Resize(scale=(2048, S))`,
  `slide_crop` / `slide_stride`, `prob_thd`, logit scale 40, no PAMR); label rules and layouts from
  mmsegmentation 1.1.1's dataset classes and converters, and NACLIP's COCO-Object dataset / converter.
- Probe settings: PH-Reg's `DINOv2_full/evaluation/segmentation/fine-tune/configs/{voc21,ade20k}_cfg.py` and
  `DINOv2_full/evaluation/depth/evaluation/configs/vitb_nyu_linear_config.py` (the DVT lineage).
- Paper numbers: arXiv 2505.21501, Tables 1 and 2 (OpenAI CLIP ViT-B/16; DINOv2-B).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..models.pipeline_phreg_segmentation import read_class_file

# The shipped class files (package data, see pyproject.toml).
CLASS_NAMES_DIR = Path(__file__).resolve().parent / "class_names"


@dataclass(frozen=True)
class Layout:
    """Where one split of a benchmark lies, relative to `--data_root` (MMSegmentation's `data/` folder).

    Attributes:
        roots: candidate folders of the set under the data root, tried in order (the data root itself is tried
            last, for users who point `--data_root` at the set's own folder).
        image_dir, mask_dir: folders of images and masks (depth maps) under the set's folder.
        image_suffix, mask_suffix: a pair is `image_dir/ID + image_suffix` and `mask_dir/ID + mask_suffix`.
        split_file: a list of IDs, one per line (mmseg's `ann_file`); None: every image under `image_dir` whose
            name ends in `image_suffix`, recursively (mmseg's scan), sorted.
        pair_list: the split file lists `image_path mask_path [focal]` per line, relative to the set's folder
            (NYUv2's `nyu_test.txt`); lines whose mask is `None` are skipped.
    """

    roots: tuple[str, ...]
    image_dir: str
    mask_dir: str
    image_suffix: str
    mask_suffix: str
    split_file: str | None = None
    pair_list: bool = False


@dataclass(frozen=True)
class SegmentationPreset:
    """One column of Table 1: zero-shot open-vocabulary segmentation with a CLIP ViT-B/16."""

    name: str
    title: str  # column label of the printed table
    class_file: str  # file name under class_names/
    num_classes: int
    short_side: int
    crop_size: int
    stride: int
    prob_threshold: float
    reduce_zero_label: bool
    layout: Layout
    split: str = "val"
    logit_scale: float = 40.0
    ignore_index: int | None = 255
    # The reference harness's resize and position-embedding rules (see pipeline_phreg_segmentation.RESIZE_RULES
    # and clip_dense.reference_position_embeddings): what reproduces its numbers; a command can switch them off.
    resize: str = "reference"
    position_interpolation: str = "reference"
    paper: dict[str, float] = field(
        default_factory=dict
    )  # row label ("MaskCLIP", "NACLIP", "PH-Reg") -> mIoU %
    notes: str = ""

    def settings(self) -> dict:
        """The options of `phreg eval-segmentation` this preset sets (option name -> value)."""
        return {
            "class_names": str(class_file_path(self.class_file)),
            "short_side": self.short_side,
            "crop_size": self.crop_size,
            "stride": self.stride,
            "prob_threshold": self.prob_threshold,
            "logit_scale": self.logit_scale,
            "reduce_zero_label": self.reduce_zero_label,
            "ignore_index": self.ignore_index,
            "resize": self.resize,
            "position_interpolation": self.position_interpolation,
        }


_VOC2012 = ("VOCdevkit/VOC2012", "VOC2012")
_VOC2010 = ("VOCdevkit/VOC2010", "VOC2010")
_VOC_VAL = Layout(
    _VOC2012, "JPEGImages", "SegmentationClass", ".jpg", ".png", "ImageSets/Segmentation/val.txt"
)
_CONTEXT_VAL = Layout(
    _VOC2010,
    "JPEGImages",
    "SegmentationClassContext",
    ".jpg",
    ".png",
    "ImageSets/SegmentationContext/val.txt",
)

SEGMENTATION_PRESETS: dict[str, SegmentationPreset] = {
    preset.name: preset
    for preset in (
        SegmentationPreset(
            "voc21", "VOC21", "cls_voc21.txt", 21, 448, 336, 112, 0.1, False, _VOC_VAL,
            paper={"MaskCLIP": 49.27, "NACLIP": 58.88, "PH-Reg": 63.01},
            notes="Palette PNGs: 0 background (scored), 1..20 classes, 255 void border (ignored).",
        ),
        SegmentationPreset(
            "context60", "PC60", "cls_context60.txt", 60, 448, 336, 112, 0.1, False, _CONTEXT_VAL,
            paper={"MaskCLIP": 25.46, "NACLIP": 32.20, "PH-Reg": 34.52},
            notes="mmseg's pascal_context.py masks: 0 background (scored), 1..59 classes.",
        ),
        SegmentationPreset(
            "coco_object", "Object", "cls_coco_object.txt", 81, 336, 336, 112, 0.1, False,
            Layout(("coco_object", "coco_stuff164k"), "images/val2017", "annotations/val2017", ".jpg",
                   "_instanceTrainIds.png"),
            paper={"MaskCLIP": 26.94, "NACLIP": 33.15, "PH-Reg": 35.27},
            notes="NACLIP's cvt_coco_object.py from COCO-Stuff's raw PNGs: things 1..80, stuff and unlabelled 0.",
        ),
        SegmentationPreset(
            "voc20", "VOC20", "cls_voc20.txt", 20, 336, 336, 112, 0.0, True, _VOC_VAL,
            paper={"MaskCLIP": 66.56, "NACLIP": 79.70, "PH-Reg": 83.05},
            notes="VOC21's masks with reduce_zero_label: background and the border ignored, 1..20 -> 0..19.",
        ),
        SegmentationPreset(
            "context59", "PC59", "cls_context59.txt", 59, 448, 336, 112, 0.0, True, _CONTEXT_VAL,
            paper={"MaskCLIP": 28.62, "NACLIP": 35.16, "PH-Reg": 37.88},
            notes="Context60's masks with reduce_zero_label: background ignored, 1..59 -> 0..58.",
        ),
        SegmentationPreset(
            "coco_stuff", "Stuff", "cls_coco_stuff.txt", 171, 448, 336, 112, 0.0, False,
            Layout(("coco_stuff164k",), "images/val2017", "annotations/val2017", ".jpg", "_labelTrainIds.png"),
            paper={"MaskCLIP": 18.80, "NACLIP": 23.30, "PH-Reg": 24.66},
            notes="mmseg's coco_stuff164k.py trainIds: 0..170, 255 unlabelled (ignored).",
        ),
        SegmentationPreset(
            "cityscapes", "City", "cls_city_scapes.txt", 19, 560, 224, 112, 0.0, False,
            Layout(("cityscapes",), "leftImg8bit/val", "gtFine/val", "_leftImg8bit.png",
                   "_gtFine_labelTrainIds.png"),
            paper={"MaskCLIP": 28.33, "NACLIP": 35.48, "PH-Reg": 37.17},
            notes="cityscapesscripts trainIds (gtFine/val/<city>/): 0..18, 255 ignored.",
        ),
        SegmentationPreset(
            "ade20k", "ADE", "cls_ade20k.txt", 150, 448, 336, 112, 0.0, True,
            Layout(("ade/ADEChallengeData2016", "ADEChallengeData2016"), "images/validation",
                   "annotations/validation", ".jpg", ".png"),
            paper={"MaskCLIP": 13.70, "NACLIP": 17.42, "PH-Reg": 19.22},
            notes="ADEChallengeData2016: 0 'other' (ignored through reduce_zero_label), 1..150 -> 0..149.",
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class SegmentationRow:
    """One row of Table 1: which model (`option`: the command option naming it) through which dense path.

    A new row (e.g. a test-time-registers model) is one more entry in `SEGMENTATION_ROWS`; `paper` is the label of
    its numbers in `SegmentationPreset.paper` (None: the paper has none).
    """

    name: str
    option: str
    mode: str
    paper: str | None
    description: str


SEGMENTATION_ROWS: tuple[SegmentationRow, ...] = (
    SegmentationRow("base_maskclip", "base", "maskclip", "MaskCLIP", "base CLIP, MaskCLIP value path"),
    SegmentationRow("base_naclip", "base", "naclip", "NACLIP", "base CLIP, NACLIP reduced last layer"),
    SegmentationRow("student", "model", "maskclip", "PH-Reg", "PH-Reg student, distilled value path"),
    # Test-time registers (Jiang et al. 2025, arXiv 2506.08010), the training-free baseline: only with
    # `--test_time_registers DIR` (`segmentation_rows`). The paper (PH-Reg) has no numbers for it.
    SegmentationRow(
        "test_time_registers_maskclip",
        "test_time_registers",
        "maskclip",
        None,
        "base CLIP with test-time registers, MaskCLIP value path",
    ),
    SegmentationRow(
        "test_time_registers_naclip",
        "test_time_registers",
        "naclip",
        None,
        "base CLIP with test-time registers, NACLIP reduced last layer",
    ),
)


def segmentation_rows(test_time_registers: bool = False) -> tuple[SegmentationRow, ...]:
    """The rows of one run: every row of `SEGMENTATION_ROWS`, the test-time-registers rows only when asked for."""
    return tuple(r for r in SEGMENTATION_ROWS if test_time_registers or r.option != "test_time_registers")


@dataclass(frozen=True)
class ProbePreset:
    """One column group of Table 2: a linear probe on frozen DINOv2-B features (base vs student).

    `paper` maps a metric to `{"base": value, "student": value}` (mIoU in %, depth in metres / ratios / %).
    Settings map onto `phreg probe` options (`settings()`).
    """

    name: str
    title: str
    task: str
    train: Layout
    eval: Layout
    train_split: str
    eval_split: str
    num_classes: int | None = None
    reduce_zero_label: bool = False
    ignore_index: int | None = 255
    crop_size: int = 518
    stride: int = 341
    short_side: int | None = 518
    max_steps: int = 20000
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    depth_scale: float | None = None
    min_depth: float = 1e-3
    max_depth: float = 10.0
    eval_crop: tuple[int, int, int, int] | None = (
        None  # (top, bottom, left, right) scored region, e.g. Eigen's
    )
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: str = ""

    def settings(self) -> dict:
        values = {
            "task": self.task,
            "crop_size": self.crop_size,
            "stride": self.stride,
            "short_side": self.short_side if self.short_side is not None else 0,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "poly_power": self.poly_power,
        }
        if self.task == "segmentation":
            values.update(
                num_classes=self.num_classes,
                reduce_zero_label=self.reduce_zero_label,
                ignore_index=self.ignore_index,
            )
        else:
            values.update(
                depth_scale=self.depth_scale,
                min_depth=self.min_depth,
                max_depth=self.max_depth,
                eval_crop=",".join(map(str, self.eval_crop)) if self.eval_crop else None,
            )
        return values


_ADE = ("ade/ADEChallengeData2016", "ADEChallengeData2016")
_NYU = ("nyu",)
# The splits NYUv2 trains and is scored on: DVT's config (`Jiawei-Yang/Denoising-ViT`
# evaluation/configs/vitb_nyu_linear_config.py: `nyu_train.txt` / `nyu_test.txt`) names the standard files of the
# monocular-depth toolbox lineage, 24231 training pairs (BTS "sync") and the official 654 test images; PH-Reg's own
# lists are private. `--train_split_file` / `--eval_split_file` take other lists (e.g. the labelled 795 / 654).
NYU_SPLITS = {"standard": ("nyu_train.txt", "nyu_test.txt")}

PROBE_PRESETS: dict[str, ProbePreset] = {
    preset.name: preset
    for preset in (
        ProbePreset(
            "voc21", "VOC21", "segmentation",
            train=Layout(_VOC2012, "JPEGImages", "SegmentationClass", ".jpg", ".png",
                         "ImageSets/Segmentation/train.txt"),
            eval=_VOC_VAL, train_split="train (1464)", eval_split="val (1449)", num_classes=21,
            paper={"mIoU": {"base": 84.13, "student": 84.85}},
            notes="PH-Reg's voc21_cfg.py: VOC2012 train.txt (not trainaug), 20k iterations of batch 8.",
        ),
        ProbePreset(
            "ade20k", "ADE20k", "segmentation",
            train=Layout(_ADE, "images/training", "annotations/training", ".jpg", ".png"),
            eval=Layout(_ADE, "images/validation", "annotations/validation", ".jpg", ".png"),
            train_split="training (20210)", eval_split="validation (2000)", num_classes=150,
            reduce_zero_label=True, max_steps=40000,
            paper={"mIoU": {"base": 47.82, "student": 48.66}},
            notes="PH-Reg's ade20k_cfg.py: 40k iterations (VOC: 20k), reduce_zero_label.",
        ),
        ProbePreset(
            "nyu_depth", "NYUv2", "depth",
            train=Layout(_NYU, "", "", "", "", NYU_SPLITS["standard"][0], pair_list=True),
            eval=Layout(_NYU, "", "", "", "", NYU_SPLITS["standard"][1], pair_list=True),
            train_split="nyu_train.txt (24231)", eval_split="nyu_test.txt (654)",
            short_side=0, max_steps=30000, batch_size=16, learning_rate=5e-3, weight_decay=1e-2,
            depth_scale=1000.0, min_depth=1e-3, max_depth=10.0, eval_crop=(45, 471, 41, 601),
            paper={"rmse": {"base": 0.4566, "student": 0.4306}, "abs_rel": {"base": 0.1391, "student": 0.1216},
                   "delta1": {"base": 82.92, "student": 86.35}},
            notes="DVT / PH-Reg NYU config: 16-bit PNG depth in mm, valid 1e-3 < d < 10 m, Eigen crop "
                  "[45:471, 41:601] on 480x640, metrics per image then averaged; 30000 iterations, 16 per step. "
                  "Our head is the linear bins head without the gradient loss and with a poly schedule (the "
                  "reference: SigLoss + GradientLoss, cosine with 12800 warm-up steps).",
        ),
    )
}  # fmt: skip


def class_file_path(file_name: str) -> Path:
    """The path of a shipped class file (`class_names/<file_name>`)."""
    path = CLASS_NAMES_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(
            f"The class file {path} is missing; reinstall phreg-hf (it ships as package data)."
        )
    return path


def class_names(preset: SegmentationPreset) -> list[list[str]]:
    """The preset's classes with synonyms, read from its shipped file (`read_class_file`: names stripped, so
    Context60's "wood " reads "wood"; CLIP's tokenizer gives both the same tokens)."""
    return read_class_file(class_file_path(preset.class_file))


def _lookup(table: dict, name: str, kind: str):
    if name not in table:
        raise ValueError(f"Unknown {kind} benchmark {name!r}; known: {', '.join(table)}.")
    return table[name]


def segmentation_preset(name: str) -> SegmentationPreset:
    """The preset called `name`; ValueError listing the known ones."""
    return _lookup(SEGMENTATION_PRESETS, name, "segmentation")


def probe_preset(name: str) -> ProbePreset:
    return _lookup(PROBE_PRESETS, name, "probe")


def select(table: dict, names: str, kind: str) -> list:
    """`"voc21,ade20k"` or `"all"` -> the presets, in the table's order for "all" and as given otherwise."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise ValueError(f"--benchmarks is empty; pass 'all' or some of: {', '.join(table)}.")
    if wanted == ["all"]:
        return list(table.values())
    chosen = [_lookup(table, n, kind) for n in wanted]
    if len({p.name for p in chosen}) != len(chosen):
        raise ValueError(f"--benchmarks {names!r} names a benchmark twice.")
    return chosen


__all__ = [
    "Layout",
    "PROBE_PRESETS",
    "ProbePreset",
    "SEGMENTATION_PRESETS",
    "SEGMENTATION_ROWS",
    "SegmentationPreset",
    "SegmentationRow",
    "class_file_path",
    "class_names",
    "probe_preset",
    "segmentation_preset",
    "segmentation_rows",
    "select",
]
