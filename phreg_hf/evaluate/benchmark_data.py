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
"""Benchmark data on disk: the pairs of a preset's layout (`presets.Layout`), their fingerprint, `--check_data`.

`layout_pairs(data_root, layout)` finds the set's folder under `--data_root` (MMSegmentation's `data/` tree, or the
set's own folder), reads the split file or scans the image folder as mmseg does, and pairs every image with its
mask (or depth map). What is missing is an error naming the file, where it was looked for and the fix.

`check_layout` is what `--check_data` prints before a multi-hour run: per split the counts of images and masks,
unpaired files, and (decoding every mask under the preset's label rule) the label values seen against the class
count. It reads no model and takes seconds to a minute.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .label_maps import LabelRule, read_label_map
from .presets import Layout


@dataclass
class LayoutPairs:
    """The pairs of one split: `images[i]` with `labels[i]`, named `names[i]` (the ID) in messages."""

    root: Path
    names: list[str]
    images: list[Path]
    labels: list[Path]
    description: str
    unpaired_labels: list[Path] = field(default_factory=list)  # masks under the mask folder with no image

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """sha256 over every pair's relative paths and byte sizes: which files a result was computed on, in
        seconds (hashing the bytes of 5000 COCO images would take minutes)."""
        digest = hashlib.sha256()
        for image, label in zip(self.images, self.labels, strict=True):
            for path in (image, label):
                digest.update(f"{path.relative_to(self.root).as_posix()}\t{path.stat().st_size}\n".encode())
        return digest.hexdigest()


def set_root(data_root: str | Path, layout: Layout, what: str) -> Path:
    """The set's folder: the first of `data_root/<candidate>` holding the layout's image folder (or split file),
    else `data_root` itself; FileNotFoundError naming every place looked at."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(
            f"--data_root {data_root} is not a folder; pass the folder that holds the data sets."
        )
    marker = layout.split_file if layout.pair_list else layout.image_dir
    candidates = [data_root / c for c in layout.roots] + [data_root]
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    looked = ", ".join(str(c / marker) for c in candidates)
    raise FileNotFoundError(
        f"{what}: no data under --data_root {data_root} (looked for {looked}). Lay the set out as MMSegmentation's "
        f"data/ folder does (e.g. {data_root / layout.roots[0] / marker}), or pass --data_root the set's own folder."
    )


def _read_split_file(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: the split file {path} does not exist; it lists the IDs of the split, one per line (mmseg "
            "ships the VOC / Context lists with its converters). Put it there, or fix --data_root."
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{what}: the split file {path} lists no IDs; it needs one ID per line.")
    return lines


def _missing_error(
    what: str, kind: str, missing: list[Path], total: int, folder: Path, fix: str
) -> ValueError:
    return ValueError(
        f"{what}: {len(missing)} of the {total} {kind} are missing, e.g. {missing[0]} (looked in {folder}). {fix}"
    )


def layout_pairs(
    data_root: str | Path, layout: Layout, what: str, strict: bool = True
) -> tuple[LayoutPairs, tuple[list[Path], list[Path]]]:
    """Every (image, mask) pair of one split of `layout` under `data_root`, and the (missing images, missing masks).

    Args:
        what: how messages name the split, e.g. "voc21 (val)".
        strict: raise on missing files (else they are left out and listed by `check_layout`).

    Raises:
        FileNotFoundError for a missing set folder or split file; ValueError for missing images or masks, or no
        mask at all.
    """
    root = set_root(data_root, layout, what)
    image_dir, label_dir = root / layout.image_dir, root / layout.mask_dir
    if layout.pair_list:
        pairs = []
        for line in _read_split_file(root / layout.split_file, what):
            parts = line.split()
            if len(parts) < 2 or parts[1] == "None":  # the reference skips pairs without a depth map
                continue
            pairs.append((root / parts[0].lstrip("/"), root / parts[1].lstrip("/")))
        names = [p[0].relative_to(root).as_posix() for p in pairs]
        images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        description = f"{root / layout.split_file}"
    else:
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{what}: the image folder {image_dir} does not exist; fix --data_root.")
        if layout.split_file is not None:
            names = _read_split_file(root / layout.split_file, what)
            description = f"{root / layout.split_file}"
        else:
            found = sorted(p for p in image_dir.rglob(f"*{layout.image_suffix}") if p.is_file())
            names = [p.relative_to(image_dir).as_posix()[: -len(layout.image_suffix)] for p in found]
            description = f"{image_dir}/**/*{layout.image_suffix}"
        images = [image_dir / f"{n}{layout.image_suffix}" for n in names]
        labels = [label_dir / f"{n}{layout.mask_suffix}" for n in names]
    if not images:
        raise ValueError(f"{what}: no images found ({description}); fix --data_root or the layout.")
    missing_images = [p for p in images if not p.is_file()]
    missing_labels = [p for p in labels if not p.is_file()]
    if strict and missing_images:
        raise _missing_error(
            what, "images", missing_images, len(images), image_dir, "Fix --data_root or the split."
        )
    if len(missing_labels) == len(labels):
        raise ValueError(
            f"{what}: none of the {len(labels)} images has a mask (e.g. {labels[0]} is missing). The masks belong in "
            f"{label_dir} with names ending in '{layout.mask_suffix}'"
            + (
                " (made by the set's converter, see README 'Reproduce the paper')"
                if layout.mask_suffix
                else ""
            )
            + "."
        )
    if strict and missing_labels:
        raise _missing_error(
            what,
            "masks",
            missing_labels,
            len(labels),
            label_dir,
            "Add them, or remove those IDs from the split.",
        )
    keep = [i for i in range(len(images)) if images[i].is_file() and labels[i].is_file()]
    unpaired = []
    if not layout.pair_list and label_dir.is_dir() and layout.split_file is None:
        wanted = {p.resolve() for p in labels}
        unpaired = sorted(
            p for p in label_dir.rglob(f"*{layout.mask_suffix}") if p.is_file() and p.resolve() not in wanted
        )
    return LayoutPairs(
        root,
        [names[i] for i in keep],
        [images[i] for i in keep],
        [labels[i] for i in keep],
        description,
        unpaired,
    ), (missing_images, missing_labels)


def pairs_of(data_root: str | Path, layout: Layout, what: str) -> LayoutPairs:
    """`layout_pairs(..., strict=True)`, the pairs alone."""
    return layout_pairs(data_root, layout, what, strict=True)[0]


@dataclass
class SplitCheck:
    """What `check_layout` found in one split."""

    what: str
    description: str = ""
    num_images: int = 0
    num_labels: int = 0
    missing_images: list[Path] = field(default_factory=list)
    missing_labels: list[Path] = field(default_factory=list)
    unpaired_labels: list[Path] = field(default_factory=list)
    values_seen: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.problems or self.missing_images or self.missing_labels)

    def lines(self) -> list[str]:
        status = "ok" if self.ok else "PROBLEMS"
        out = [f"{self.what}: {status}  ({self.description})"]
        out.append(f"  images {self.num_images}, masks {self.num_labels}")
        for label, paths in (
            ("missing images", self.missing_images),
            ("missing masks", self.missing_labels),
            ("masks without an image", self.unpaired_labels),
        ):
            if paths:
                out.append(f"  {label}: {len(paths)}, e.g. {paths[0]}")
        if self.values_seen:
            shown = (
                self.values_seen
                if len(self.values_seen) <= 12
                else [*self.values_seen[:6], "...", *self.values_seen[-4:]]
            )
            out.append(
                f"  stored label values seen: {len(self.values_seen)} distinct ({', '.join(map(str, shown))})"
            )
        out += [f"  {problem}" for problem in self.problems[:10]]
        if len(self.problems) > 10:
            out.append(f"  ... and {len(self.problems) - 10} more problems")
        return out


def check_layout(
    data_root: str | Path,
    layout: Layout,
    what: str,
    rule: LabelRule | None,
    progress: bool = True,
    depth: bool = False,
) -> SplitCheck:
    """Check one split without any model: files present, every mask decodable and within the class list.

    Args:
        rule: the label rule masks are read under (None for depth maps, which are only opened).
    """
    check = SplitCheck(what)
    try:
        pairs, (missing_images, missing_labels) = layout_pairs(data_root, layout, what, strict=False)
    except (FileNotFoundError, ValueError) as error:
        check.problems.append(str(error))
        return check
    check.description = pairs.description
    check.num_images = len(pairs) + len([p for p in missing_labels if p not in missing_images])
    check.num_labels = len(pairs) + len([p for p in missing_images if p not in missing_labels])
    check.missing_images, check.missing_labels = missing_images, missing_labels
    check.unpaired_labels = pairs.unpaired_labels
    seen: set[int] = set()
    for label in tqdm(pairs.labels, desc=f"checking {what}", unit="mask", disable=not progress):
        if depth:
            continue  # depth maps are read by the probe's own decoder; here only their presence counts
        try:
            stored = read_label_map(label, str(label))
            seen.update(np.unique(stored).tolist())
            rule.apply(stored, str(label))
        except ValueError as error:
            check.problems.append(str(error))
    check.values_seen = sorted(seen)
    return check


def format_checks(checks: Sequence[SplitCheck]) -> str:
    lines = []
    for check in checks:
        lines += check.lines()
    bad = [c.what for c in checks if not c.ok]
    lines.append(
        f"{len(checks) - len(bad)} of {len(checks)} splits ok" + (f"; fix: {', '.join(bad)}" if bad else ".")
    )
    return "\n".join(lines)


__all__ = [
    "LayoutPairs",
    "SplitCheck",
    "check_layout",
    "format_checks",
    "layout_pairs",
    "pairs_of",
    "set_root",
]
