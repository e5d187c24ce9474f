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
"""Tiny synthetic data sets in each benchmark's exact on-disk layout and label encoding (tests, README sample).

`write_benchmark_layout(data_root, name)` writes a few small images and their masks as the real set stores them:
VOC's palette PNGs with a 255 border and `ImageSets/Segmentation/{train,val}.txt`, Pascal Context's label PNGs
with `ImageSets/SegmentationContext/val.txt`, COCO-Stuff's `*_labelTrainIds.png` (255 = unlabelled), COCO-Object's
`*_instanceTrainIds.png` (0 = stuff and unlabelled), Cityscapes' `gtFine/val/<city>/*_gtFine_labelTrainIds.png`,
ADE20k's PNGs with 0 = "other", NYUv2's 16-bit millimetre depth PNGs listed in `nyu_{train,test}.txt`. The
pictures are random rectangles: they exercise every path of the harness, and the scores they give mean nothing.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .presets import PROBE_PRESETS, SEGMENTATION_PRESETS, Layout


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map as a flat 768-value PIL palette (index 255 is (224, 224, 192) in VOC's files)."""
    palette = []
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [r, g, b]
    return palette


def _picture(rng, height: int, width: int, classes: list[int], background: int):
    """A label map of `background` with a few class rectangles, and an RGB image coloured by label."""
    label = np.full((height, width), background, dtype=np.int64)
    for value in classes:
        h, w = int(rng.integers(height // 4, height // 2)), int(rng.integers(width // 4, width // 2))
        top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        label[top : top + h, left : left + w] = value
    colours = rng.integers(0, 256, (int(label.max()) + 1, 3))
    image = np.clip(colours[label] + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    return label, image


def _save_image(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(image).save(
        path
    )


def _save_mask(label: np.ndarray, path: Path, palette: bool = False, bits16: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits16:
        Image.fromarray(label.astype(np.uint16)).save(path)
    elif palette:
        picture = Image.fromarray(label.astype(np.uint8), "P")
        picture.putpalette(voc_palette())
        picture.save(path)
    else:
        Image.fromarray(label.astype(np.uint8), "L").save(path)


def _ids_for(name: str, count: int, start: int = 0) -> list[str]:
    if name.startswith("ade"):
        return [f"ADE_val_{i + 1 + start:08d}" for i in range(count)]
    if name == "cityscapes":
        return [f"frankfurt/frankfurt_000000_{i + start:06d}" for i in range(count)]
    if name.startswith("coco"):
        return [f"{i + 139 + start:012d}" for i in range(count)]
    return [f"2008_{i + 1 + start:06d}" for i in range(count)]


def _write_split(root: Path, layout: Layout, name: str, ids: list[str], encode) -> None:
    """Images and masks of one split at `root` (the set's folder), and its split file when the layout has one."""
    rng = np.random.default_rng(zlib.crc32(f"{layout.image_dir}|{'|'.join(ids)}".encode()))
    for identifier in ids:
        label, image = encode(rng)
        _save_image(image, root / layout.image_dir / f"{identifier}{layout.image_suffix}")
        encode.save(label, root / layout.mask_dir / f"{identifier}{layout.mask_suffix}")
    if layout.split_file:
        (root / layout.split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / layout.split_file).write_text("\n".join(ids) + "\n")


class _Encoding:
    """How one set draws and stores its masks."""

    def __init__(self, values, background: int, border: int | None = None, palette=False, size=(40, 56)):
        self.values, self.background, self.border, self.palette, self.size = (
            values,
            background,
            border,
            palette,
            size,
        )

    def __call__(self, rng):
        picks = [int(v) for v in rng.choice(self.values, size=2, replace=False)]
        label, image = _picture(rng, *self.size, picks, self.background)
        if self.border is not None:
            label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = self.border
        return label, image

    def save(self, label, path):
        _save_mask(label, path, palette=self.palette)


# stored values drawn per set (the real encodings; see presets.SegmentationPreset.notes)
_ENCODINGS = {
    "voc": lambda: _Encoding(range(1, 21), 0, border=255, palette=True),
    "context": lambda: _Encoding(range(1, 60), 0),
    "coco_object": lambda: _Encoding(range(1, 81), 0),
    "coco_stuff": lambda: _Encoding(range(0, 171), 255),
    "cityscapes": lambda: _Encoding(range(0, 19), 255, size=(32, 64)),
    "ade20k": lambda: _Encoding(range(1, 151), 0),
}
_SET_OF = {
    "voc21": "voc",
    "voc20": "voc",
    "context60": "context",
    "context59": "context",
    "coco_object": "coco_object",
    "coco_stuff": "coco_stuff",
    "cityscapes": "cityscapes",
    "ade20k": "ade20k",
}


def write_benchmark_layout(data_root: str | os.PathLike, name: str, num_images: int = 2) -> Path:
    """Write segmentation benchmark `name`'s validation split (and VOC's train list) under `data_root` in the
    preset's first layout folder; returns the set's folder."""
    preset = SEGMENTATION_PRESETS[name]
    root = Path(data_root) / preset.layout.roots[0]
    encode = _ENCODINGS[_SET_OF[name]]()
    _write_split(root, preset.layout, name, _ids_for(name, num_images), encode)
    return root


def write_probe_layout(
    data_root: str | os.PathLike, name: str, num_train: int = 3, num_eval: int = 2
) -> Path:
    """Write probe benchmark `name`'s training and evaluation splits under `data_root`; returns the set's folder.

    NYUv2: 480x640 RGB JPEGs and 16-bit PNG depth in millimetres (0 = no measurement in a corner), listed as
    `/scene/rgb_N.jpg /scene/sync_depth_N.png 518.8579` lines in nyu_train.txt / nyu_test.txt (no final newline,
    as the standard files).
    """
    preset = PROBE_PRESETS[name]
    root = Path(data_root) / preset.train.roots[0]
    if preset.task == "segmentation":
        encode = _ENCODINGS["voc" if name == "voc21" else "ade20k"]()
        _write_split(root, preset.train, name, _ids_for(name, num_train, start=100), encode)
        _write_split(root, preset.eval, name, _ids_for(name, num_eval), encode)
        return root
    rng = np.random.default_rng(0)
    for layout, count, scene in (
        (preset.train, num_train, "kitchen_0028b"),
        (preset.eval, num_eval, "bathroom"),
    ):
        lines = []
        for index in range(count):
            depth = rng.uniform(0.5, 9.0) * np.ones((480, 640))
            depth[:, 320:] *= 0.5
            depth_mm = (depth * 1000).astype(np.uint16)
            depth_mm[:10, :10] = 0  # no measurement
            image = np.clip(depth[..., None] * 25 + rng.normal(0, 5, (480, 640, 3)), 0, 255).astype(np.uint8)
            rgb, sync = f"{scene}/rgb_{index:05d}.jpg", f"{scene}/sync_depth_{index:05d}.png"
            _save_image(image, root / rgb)
            (root / sync).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(depth_mm).save(root / sync)
            lines.append(f"/{rgb} /{sync} 518.8579")
        (root / layout.split_file).write_text("\n".join(lines))
    return root


__all__ = ["voc_palette", "write_benchmark_layout", "write_probe_layout"]
