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
"""Labelled images for `phreg probe`: (image, segmentation mask | depth map) pairs, checked, resized, cropped.

Two sources, both read lazily (one pair decoded at a time):

- folders: `--images DIR --masks DIR` or `--images DIR --depths DIR`; a label file pairs with the image of the
  same relative path without extension (`images/a/x.jpg` <-> `masks/a/x.png`);
- any Hugging Face dataset with an image column and a label column (`--dataset_name ID --split train`).

Segmentation masks hold class indices (a grey "L" or palette "P" PNG; 16-bit works too) and are read by
`label_maps` under the one rule every command shares (`label_maps.LabelRule`: 255 = not labelled where the class
count allows it, `--reduce_zero_label`, `--ignore_index`); unlabelled pixels are `IGNORE_INDEX` (-1) inside. Depth maps are 16-bit PNGs (NYUv2 stores millimetres: the default
`depth_scale` turns integer maps into metres by dividing by 1000), float TIFFs or `.npy` arrays (metres
already, divided by 1); a value of 0, NaN or inf is "no measurement".

`check_pairs` decodes every label before any model runs, so that a mask of the wrong size, a depth map with no
valid pixel or an unreadable image stops the run with the file named, instead of after an hour of training.

Augmentation (`augment_pair`) follows mmsegmentation's recipe the paper's reference uses: the short side is
scaled to `short_side * r`, r uniform in [min_scale, max_scale], a random crop of `crop_size` (padded with the
ignore label / invalid depth where the image is smaller), a horizontal flip with probability 1/2, and
photometric jitter (brightness, contrast, saturation). Every draw comes from a generator seeded per sample, so
the base model and the student see exactly the same crops.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data import UNREADABLE_IMAGE_ERRORS, image_extensions, open_pil, read_image, upright_size
from .label_maps import IGNORED, LabelRule, check_label_size, infer_num_classes

TASKS = ("segmentation", "depth")
# Unlabelled pixels inside the probe (label_maps.IGNORED): never a class index, whatever the class count.
IGNORE_INDEX = IGNORED
# Label columns tried, in order, when a Hub dataset is given without --label_column.
DEFAULT_LABEL_COLUMNS = {
    "segmentation": ("annotation", "semantic_segmentation", "label", "mask", "segmentation"),
    "depth": ("depth_map", "depth", "label"),
}
DEPTH_FILE_EXTENSIONS = (".npy",)


def check_task(task: str) -> str:
    """`task` itself, or a ValueError naming the tasks that exist."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r} does not exist; pass --task segmentation or --task depth.")
    return task


# ----------------------------------------------------------------------------------------------------------------
# Decoding
def _open_image(value, name: str) -> Image.Image:
    """A PIL image (not yet decoded) from a path, bytes, datasets' {"bytes", "path"} dict or a PIL image."""
    try:
        return open_pil(value)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise ValueError(
            f"{name} cannot be read ({type(error).__name__}: {error}); remove it and its label, or replace it."
        ) from None


def decode_rgb(value, name: str) -> Image.Image:
    """An RGB PIL image, upright, decoded as every command decodes images (`data.open_image`: EXIF orientation
    applied, 16-bit grey rescaled); ValueError naming `name` when it cannot be decoded."""
    return read_image(value, name, fix="remove it and its label, or replace it")


def _label_array(value, name: str) -> np.ndarray:
    """A 2-D array from a label file / image / array, before any scaling."""
    if isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(".npy"):
        try:
            array = np.load(value)
        except (ValueError, OSError, EOFError) as error:  # empty, truncated, pickled or not an .npy at all
            raise ValueError(
                f"{name} ({value}) is not a readable .npy array ({type(error).__name__}: {error}); save it again "
                "with numpy.save(path, depth) (a 2-D float array), or remove the pair."
            ) from None
    elif isinstance(value, (np.ndarray, list, torch.Tensor)):
        array = np.asarray(value)
    else:
        image = _open_image(value, name)
        try:
            image.load()
        except UNREADABLE_IMAGE_ERRORS as error:
            raise ValueError(f"{name} cannot be decoded ({type(error).__name__}: {error}).") from None
        if image.mode in ("RGB", "RGBA"):
            raise ValueError(
                f"{name} is an {image.mode} image; a label must hold one value per pixel (class indices in a grey "
                "'L' or palette 'P' PNG, or depth values). Convert colour-coded masks to class indices first."
            )
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{name} has shape {array.shape}; a label must be one 2-D map of the image's size.")
    return array


def decode_mask(
    value, name: str, reduce_zero_label: bool = False, num_classes: int | None = None, ignore_index="auto"
) -> np.ndarray:
    """`(H, W)` int64 class indices; IGNORE_INDEX where unlabelled (`label_maps.LabelRule.decode`).

    `reduce_zero_label` (ADE20k's convention): 0 means "no label" and becomes IGNORE_INDEX, other classes shift
    down by one; the ignore value (255 by default) stays ignored.
    """
    return LabelRule(num_classes, reduce_zero_label, ignore_index).decode(value, name)


def decode_depth(value, name: str, depth_scale: float | None = None) -> np.ndarray:
    """`(H, W)` float32 depth in the dataset's unit (metres for NYUv2); 0 where there is no measurement.

    `depth_scale`: stored value / depth_scale = depth. None: 1000 for integer maps (16-bit PNGs in millimetres),
    1 for float maps.
    """
    array = _label_array(value, name)
    if depth_scale is None:
        depth_scale = 1000.0 if np.issubdtype(array.dtype, np.integer) else 1.0
    depth = array.astype(np.float32) / float(depth_scale)
    depth[~np.isfinite(depth)] = 0.0
    return depth


# ----------------------------------------------------------------------------------------------------------------
# Sources
@dataclass
class LabelledSource:
    """A lazily read list of (image, label) pairs.

    Attributes:
        images, labels: per pair, what `decode_rgb` / `decode_mask` / `decode_depth` accept (paths, bytes, ...).
        names: per pair, what an error message calls it (a file path, or "split[i]").
        description: where the pairs came from, for the report.
    """

    images: Sequence
    labels: Sequence
    names: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int], description: str | None = None) -> LabelledSource:
        return LabelledSource(
            [self.images[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.names[i] for i in indices],
            description or self.description,
        )


def _files_by_stem(root: Path, extensions: set[str], option: str) -> dict[str, Path]:
    """Files under `root` by relative path without extension; ValueError naming two files of one stem (`x.jpg` and
    `x.png`): pairing by stem could keep only one of them, silently."""
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (
            path.is_file()
            and path.suffix.lower() in extensions
            and not any(p.startswith(".") for p in relative.parts)
        ):
            stem = relative.with_suffix("").as_posix()
            if stem in files:
                raise ValueError(
                    f"{option} {root} holds {files[stem].relative_to(root)} and {relative}: files pair by relative "
                    f"path without extension, so both would pair as {stem!r}. Rename or remove one of them."
                )
            files[stem] = path
    return files


def folder_pairs(images: str, labels: str, images_option: str, labels_option: str) -> LabelledSource:
    """Pair each image under `images` with the label file of the same relative path (any extension) under
    `labels`. FileNotFoundError / ValueError name the option, the folder and the fix."""
    image_root, label_root = Path(images), Path(labels)
    for root, option in ((image_root, images_option), (label_root, labels_option)):
        if not root.is_dir():
            raise FileNotFoundError(f"{option} {root} does not exist or is not a folder; pass a folder.")
    image_files = _files_by_stem(image_root, image_extensions(), images_option)
    if not image_files:
        raise ValueError(
            f"{images_option} {image_root} holds no image files (.jpg, .png, ...); pass another folder."
        )
    label_files = _files_by_stem(label_root, image_extensions() | set(DEPTH_FILE_EXTENSIONS), labels_option)
    missing = [stem for stem in image_files if stem not in label_files]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(image_files)} images in {images_option} {image_root} have no label file in "
            f"{labels_option} {label_root}, e.g. {image_files[missing[0]].relative_to(image_root)} (looked for "
            f"{missing[0]}.png, .npy, ...). Labels pair with images by relative path without extension; add the "
            "missing labels or remove those images."
        )
    stems = list(image_files)
    return LabelledSource(
        images=[image_files[s] for s in stems],
        labels=[label_files[s] for s in stems],
        names=[str(image_files[s]) for s in stems],
        description=f"{image_root} + {label_root}",
    )


class _LazyColumn(Sequence):
    """One column of a `datasets.Dataset`, read row by row (a whole column of images may not fit in memory)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[int(index)][self.column]


def hub_pairs(
    dataset_name: str,
    dataset_config: str | None,
    split: str,
    task: str,
    image_column: str = "image",
    label_column: str | None = None,
    cache_dir: str | None = None,
) -> LabelledSource:
    """Image and label columns of one split of a Hugging Face dataset (Hub id or local path), undecoded."""
    import datasets

    dataset = datasets.load_dataset(dataset_name, dataset_config, split=split, cache_dir=cache_dir)
    columns = list(dataset.features)
    if label_column is None:
        found = [c for c in DEFAULT_LABEL_COLUMNS[task] if c in columns]
        if not found:
            raise ValueError(
                f"{dataset_name} has no label column among {list(DEFAULT_LABEL_COLUMNS[task])}; its columns are "
                f"{columns}. Pass --label_column with the one that holds the {task} labels."
            )
        label_column = found[0]
    for option, column in (("--image_column", image_column), ("--label_column", label_column)):
        if column not in columns:
            raise ValueError(
                f"{dataset_name} has no column {column!r}; its columns are {columns}. Pass {option}."
            )
    for column in (image_column, label_column):
        if isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return LabelledSource(
        images=_LazyColumn(dataset, image_column),
        labels=_LazyColumn(dataset, label_column),
        names=[
            f"{dataset_name}[{split}][{i}] ({image_column} / {label_column})" for i in range(len(dataset))
        ],
        description=f"{dataset_name}"
        + (f" ({dataset_config})" if dataset_config else "")
        + f", split {split}",
    )


def split_for_validation(
    source: LabelledSource, fraction: float, seed: int
) -> tuple[LabelledSource, LabelledSource]:
    """A seeded random `fraction` of the pairs held out for evaluation (at least one, and one left to train)."""
    if not 0 < fraction < 1:
        raise ValueError(f"--train_val_split must be in (0, 1), got {fraction}.")
    if len(source) < 2:
        raise ValueError(
            f"{source.description} holds {len(source)} pair(s); a train/validation split needs at least 2. Add "
            "pairs, or pass a separate evaluation set."
        )
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed)).tolist()
    num_eval = min(max(1, round(fraction * len(source))), len(source) - 1)
    return (
        source.subset(
            sorted(order[num_eval:]), f"{source.description} ({len(source) - num_eval} train pairs)"
        ),
        source.subset(sorted(order[:num_eval]), f"{source.description} ({num_eval} held-out pairs)"),
    )


# ----------------------------------------------------------------------------------------------------------------
# Checks
@dataclass
class LabelSettings:
    """How labels are read and which pixels count (see `ProbeArguments`)."""

    task: str
    reduce_zero_label: bool = False
    depth_scale: float | None = None
    min_depth: float = 1e-3
    max_depth: float = 10.0
    num_classes: int | None = None
    ignore_index: int | str | None = "auto"
    eval_crop: tuple[int, int, int, int] | None = (
        None  # (top, bottom, left, right): the scored region (Eigen)
    )

    @property
    def rule(self) -> LabelRule:
        return LabelRule(self.num_classes, self.reduce_zero_label, self.ignore_index)

    def decode(self, value, name: str) -> np.ndarray:
        if self.task == "segmentation":
            return self.rule.decode(value, name)
        return decode_depth(value, name, self.depth_scale)

    def valid(self, label: np.ndarray | torch.Tensor):
        """Pixels that count: not IGNORE_INDEX (segmentation); min_depth < depth < max_depth (depth, strict as the
        reference's NYU evaluation)."""
        if self.task == "segmentation":
            return label != IGNORE_INDEX
        return (label > self.min_depth) & (label < self.max_depth)

    def scored(self, label: torch.Tensor, name: str = "a label") -> torch.Tensor:
        """`valid`, and inside `eval_crop` when one is set (the Eigen crop [45:471, 41:601] of NYUv2's 480x640)."""
        valid = self.valid(label)
        if self.eval_crop is None:
            return valid
        top, bottom, left, right = self.eval_crop
        if label.shape[-2] < bottom or label.shape[-1] < right:
            raise ValueError(
                f"--eval_crop {top},{bottom},{left},{right} does not fit {name} of {label.shape[-1]}x{label.shape[-2]} "
                "(width x height); the Eigen crop is for NYUv2's 480x640 maps. Drop --eval_crop or fix the data."
            )
        region = torch.zeros_like(valid)
        region[..., top:bottom, left:right] = True
        return valid & region


def check_pairs(source: LabelledSource, labels: LabelSettings, role: str, progress: bool = True) -> int:
    """Open every image (header only) and decode every label; returns the largest class index (segmentation).

    Raises ValueError naming the file for: an unreadable image or label, a label of another size than its
    image, a depth map without one valid pixel. `role` ("training" / "evaluation") goes into messages.
    """
    largest = -1
    for index in tqdm(range(len(source)), desc=f"checking {role} labels", unit="pair", disable=not progress):
        image, label, name = source.images[index], source.labels[index], source.names[index]
        opened = _open_image(image, name)
        width, height = upright_size(opened)  # the size decode_rgb gives: EXIF orientation applied
        array = labels.decode(label, f"the label of {name}")
        check_label_size(array.shape, (height, width), name, image)
        valid = labels.valid(array)
        if labels.task == "depth" and not valid.any():
            positive = array[array > 0]
            seen = f"values {positive.min():.4g}..{positive.max():.4g}" if positive.size else "only zeros"
            raise ValueError(
                f"The depth map of {name} has no valid pixel ({seen} after --depth_scale; valid is "
                f"{labels.min_depth} < depth < {labels.max_depth}). Remove the pair, or fix --depth_scale / "
                "--min_depth / --max_depth."
            )
        if labels.task == "segmentation" and valid.any():
            largest = max(largest, int(array[valid].max()))
            if int(array[valid].min()) < 0:
                raise ValueError(f"The mask of {name} holds negative class indices; classes start at 0.")
    return largest


# ----------------------------------------------------------------------------------------------------------------
# Tensors and augmentation
def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> `(3, H, W)` float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`(..., 3, H, W)` in [0, 1] -> normalized with the model's mean / std."""
    mean_t = torch.tensor(mean, dtype=pixels.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels - mean_t) / std_t


def resize_pair(
    pixels: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize `(3, H, W)` pixels bilinearly (antialiased) and a `(H, W)` label by nearest neighbour to `size`."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels, label
    pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(label.dtype)
    return pixels.clamp(0, 1), label


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """`(H', W')` with min(H', W') = short_side and the aspect ratio kept."""
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def photometric_jitter(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """mmsegmentation's PhotoMetricDistortion without the hue step: brightness +-32/255, contrast and saturation
    x[0.5, 1.5], each applied with probability 1/2. `(3, H, W)` in [0, 1]."""

    def draw(low: float, high: float) -> float | None:
        apply, value = torch.rand(2, generator=generator).tolist()
        return low + (high - low) * value if apply < 0.5 else None

    brightness, contrast, saturation = draw(-32 / 255, 32 / 255), draw(0.5, 1.5), draw(0.5, 1.5)
    if brightness is not None:
        pixels = pixels + brightness
    if contrast is not None:
        pixels = pixels * contrast
    if saturation is not None:
        grey = (0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2])[None]
        pixels = grey + (pixels - grey) * saturation
    return pixels.clamp(0, 1)


@dataclass
class Augmentation:
    """Training augmentation settings (see the module docstring); all off = deterministic crops."""

    crop_size: int
    short_side: int | None
    min_scale: float = 0.5
    max_scale: float = 2.0
    hflip: bool = True
    photometric: bool = True

    @property
    def is_random(self) -> bool:
        return self.min_scale != self.max_scale or self.hflip or self.photometric


def augment_pair(
    pixels: torch.Tensor,
    label: torch.Tensor,
    augmentation: Augmentation,
    generator: torch.Generator,
    fill_label: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training crop: `(3, H, W)` in [0, 1], `(H, W)` label -> `(3, S, S)`, `(S, S)`, S = crop_size.

    Where the rescaled image is smaller than the crop, the crop is padded with mid-grey pixels and `fill_label`
    (IGNORE_INDEX, or 0 = no depth), so padding never counts in the loss.
    """
    height, width = pixels.shape[-2:]
    base_side = augmentation.short_side or min(height, width)
    ratio = augmentation.min_scale + (augmentation.max_scale - augmentation.min_scale) * float(
        torch.rand(1, generator=generator)
    )
    pixels, label = resize_pair(
        pixels, label, short_side_size(height, width, max(1, round(base_side * ratio)))
    )
    size = augmentation.crop_size
    height, width = pixels.shape[-2:]
    top = int(torch.randint(0, max(height - size, 0) + 1, (1,), generator=generator))
    left = int(torch.randint(0, max(width - size, 0) + 1, (1,), generator=generator))
    pixels, label = (
        pixels[:, top : top + size, left : left + size],
        label[top : top + size, left : left + size],
    )
    if pixels.shape[-2:] != (size, size):
        padded_pixels = torch.full((3, size, size), 0.5)
        padded_label = torch.full((size, size), fill_label, dtype=label.dtype)
        padded_pixels[:, : pixels.shape[1], : pixels.shape[2]] = pixels
        padded_label[: label.shape[0], : label.shape[1]] = label
        pixels, label = padded_pixels, padded_label
    if augmentation.hflip and float(torch.rand(1, generator=generator)) < 0.5:
        pixels, label = pixels.flip(-1), label.flip(-1)
    if augmentation.photometric:
        pixels = photometric_jitter(pixels, generator)
    return pixels, label


def sample_seed(seed: int, index: int) -> int:
    """Seed of training sample `index` of a run seeded `seed`: the same crop for every model probed."""
    return (seed * 1_000_003 + index) % (2**63)


class ProbeTrainStream(torch.utils.data.Dataset):
    """`num_samples` augmented training crops: item i is crop i of a seeded stream over the pairs.

    Pair order is a fresh seeded permutation every pass over the data; crop i's augmentation is seeded by
    `sample_seed(seed, i)`. So item i is the same for every model and every process count.

    Item: `{"pixel_values": (3, S, S) normalized, "labels": (S, S) int64 or float32}`.
    """

    def __init__(
        self,
        source: LabelledSource,
        labels: LabelSettings,
        augmentation: Augmentation,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        num_samples: int,
        seed: int = 0,
    ):
        self.source, self.labels, self.augmentation = source, labels, augmentation
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.num_samples, self.seed = int(num_samples), int(seed)
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.num_samples

    def pair_index(self, index: int) -> int:
        epoch, position = divmod(index, len(self.source))
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, -1 - epoch))
            self._orders[epoch] = torch.randperm(len(self.source), generator=generator).tolist()
        return self._orders[epoch][position]

    def __getitem__(self, index: int) -> dict:
        pair = self.pair_index(int(index))
        name = self.source.names[pair]
        pixels = to_tensor(decode_rgb(self.source.images[pair], name))
        label = torch.from_numpy(self.labels.decode(self.source.labels[pair], f"the label of {name}"))
        fill = IGNORE_INDEX if self.labels.task == "segmentation" else 0.0
        generator = torch.Generator().manual_seed(sample_seed(self.seed, int(index)))
        pixels, label = augment_pair(pixels, label, self.augmentation, generator, fill)
        return {"pixel_values": normalize(pixels, self.image_mean, self.image_std), "labels": label}


def load_eval_pair(
    source: LabelledSource,
    index: int,
    labels: LabelSettings,
    short_side: int | None,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation pair `index`: `(3, H', W')` normalized pixels resized so the short side is `short_side` (None:
    as stored) and the `(H, W)` label at its stored size, where the prediction is scored."""
    name = source.names[index]
    pixels = to_tensor(decode_rgb(source.images[index], name))
    label = torch.from_numpy(labels.decode(source.labels[index], f"the label of {name}"))
    if short_side:
        pixels, _ = resize_pair(pixels, None, short_side_size(*pixels.shape[-2:], short_side))
    return normalize(pixels, image_mean, image_std), label


# ----------------------------------------------------------------------------------------------------------------
# From options to checked data
@dataclass
class ProbeData:
    """What every probed model trains and is scored on (see `prepare_data`)."""

    train: LabelledSource
    eval: LabelledSource
    labels: LabelSettings
    num_classes: int | None
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]


def prepare_data(
    args, image_mean: Sequence[float], image_std: Sequence[float], progress: bool = True
) -> ProbeData:
    """Read the sources named by `args`, split off an evaluation set if needed, check every pair."""
    train, evaluation = load_sources(args)
    if args.max_train_samples:
        train = train.subset(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples:
        evaluation = evaluation.subset(range(min(args.max_eval_samples, len(evaluation))))
    labels = args.label_settings()
    largest = check_pairs(train, labels, "training", progress)
    largest_eval = check_pairs(evaluation, labels, "evaluation", progress)
    num_classes = None
    if args.task == "segmentation":
        # With --num_classes the rule has checked every mask against it; else the class count is inferred
        # (and 16-bit masks above 255 are refused, see label_maps.infer_num_classes).
        num_classes = args.num_classes or infer_num_classes(largest, labels.rule, train.description)
        if max(largest, largest_eval) >= num_classes:
            raise ValueError(
                f"The evaluation masks hold class {max(largest, largest_eval)} but the training masks only reach "
                f"class {num_classes - 1}; pass --num_classes {max(largest, largest_eval) + 1}."
            )
        labels = dataclasses.replace(labels, num_classes=num_classes)
    return ProbeData(train, evaluation, labels, num_classes, tuple(image_mean), tuple(image_std))


def load_sources(args) -> tuple[LabelledSource, LabelledSource]:
    """(training pairs, evaluation pairs) from exactly one of --dataset_name, --images with --masks/--depths."""
    label_option = "--masks" if args.task == "segmentation" else "--depths"
    folder = args.masks if args.task == "segmentation" else args.depths
    other = args.depths if args.task == "segmentation" else args.masks
    if other is not None:
        wrong = "--depths" if args.task == "segmentation" else "--masks"
        raise ValueError(f"{wrong} does not go with --task {args.task}; pass {label_option} DIR.")
    if (args.dataset_name is None) == (args.images is None):
        raise ValueError(
            f"Give exactly one labelled source: --dataset_name ID, or --images DIR {label_option} DIR; got "
            f"dataset_name={args.dataset_name!r}, images={args.images!r}."
        )
    if args.dataset_name is not None:

        def read(split: str) -> LabelledSource:
            return hub_pairs(
                args.dataset_name, args.dataset_config, split, args.task, args.image_column, args.label_column
            )

        train = read(args.split)
        if args.eval_split:
            return train, read(args.eval_split)
        return split_for_validation(train, args.train_val_split, args.seed)
    if folder is None:
        raise ValueError(f"--images needs its labels: pass {label_option} DIR for --task {args.task}.")
    train = folder_pairs(args.images, folder, "--images", label_option)
    eval_folder = args.eval_masks if args.task == "segmentation" else args.eval_depths
    if args.eval_images is None:
        return split_for_validation(train, args.train_val_split, args.seed)
    if eval_folder is None:
        raise ValueError(f"--eval_images needs its labels: pass --eval_{label_option[2:]} DIR.")
    return train, folder_pairs(args.eval_images, eval_folder, "--eval_images", f"--eval_{label_option[2:]}")


__all__ = [
    "ProbeData",
    "load_sources",
    "prepare_data",
    "Augmentation",
    "IGNORE_INDEX",
    "LabelSettings",
    "LabelledSource",
    "ProbeTrainStream",
    "TASKS",
    "augment_pair",
    "check_pairs",
    "check_task",
    "decode_depth",
    "decode_mask",
    "folder_pairs",
    "hub_pairs",
    "load_eval_pair",
    "split_for_validation",
]
