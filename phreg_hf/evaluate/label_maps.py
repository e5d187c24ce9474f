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
"""Label maps (segmentation masks): reading one, checking it against its image, and the ONE ignore/reduce rule.

Every command that reads masks (`phreg eval-segmentation`, `phreg probe`, `phreg benchmark`) goes through this
module, so a mask means the same thing everywhere:

- `read_label_map` decodes a mask file (or what a dataset column holds) into a 2-D integer array of stored values.
  It refuses what cannot be a label map, naming the file: a JPEG (lossy compression invents values at every edge),
  a colour image (RGB / RGBA / LA / CMYK: more than one value per pixel), non-integer values (a float TIFF of 1.7
  is not class 1), negative values. Palette PNGs (VOC) give their palette indices, as mmseg reads them;
  16-bit PNGs (`I;16`) and 32-bit integer images keep their values.
- `LabelRule` turns stored values into class indices, with `IGNORED` (-1) where a pixel is not scored:
  * the ignore value (`ignore_index`) is 255 by default, but only when 255 cannot be a class: with more classes
    than that (a 16-bit mask with class 300), "auto" means no ignore value, and an explicit 255 is refused;
  * `reduce_zero_label` (ADE20k, VOC20, Context59): stored 0 is "no label" and becomes ignored, stored k > 0 is
    class k - 1; the ignore value stays ignored (mmseg's `gt[gt == 0] = 255; gt -= 1; gt[gt == 254] = 255`), so a
    255 border never becomes class 254;
  * a stored value that is no class (above the class count) is an error naming the file, the value and the fix.
- `check_label_size` compares a mask with its image and says what went wrong, EXIF orientation included.

Ignored pixels are -1 inside the library (never a class index, whatever the class count), so a 300-class set
can use 255 as a class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data import UNREADABLE_IMAGE_ERRORS, open_pil

# The value of an ignored pixel inside the library (after `LabelRule.apply`).
IGNORED = -1
# The stored value that means "not labelled" in VOC, COCO-Stuff, Cityscapes and mmseg's conventions.
DEFAULT_IGNORE_VALUE = 255
# EXIF orientations that turn the image by 90 degrees (width and height swap when it is shown upright).
_TRANSPOSING_ORIENTATIONS = {
    5: "transposed",
    6: "rotated 90 degrees",
    7: "transversed",
    8: "rotated 270 degrees",
}
_LOSSY_FORMATS = {"JPEG", "MPO", "WEBP"}
_MODE_WORDS = {
    "RGB": "an RGB image (3 values per pixel)",
    "RGBA": "an RGBA image (4 values per pixel)",
    "RGBX": "an RGBX image (4 values per pixel)",
    "LA": "a grey + alpha (LA) image (2 values per pixel)",
    "La": "a grey + alpha (La) image (2 values per pixel)",
    "PA": "a palette + alpha (PA) image (2 values per pixel)",
    "CMYK": "a CMYK image (4 values per pixel)",
    "YCbCr": "a YCbCr image (3 values per pixel)",
    "LAB": "a LAB image (3 values per pixel)",
    "HSV": "an HSV image (3 values per pixel)",
}


# ----------------------------------------------------------------------------------------------------------------
# Reading
def _from_image(image: Image.Image, name: str) -> np.ndarray:
    if image.format in _LOSSY_FORMATS and not (image.format == "WEBP" and image.info.get("lossless")):
        raise ValueError(
            f"{name} is a {image.format} file: lossy compression changes pixel values (values that were never "
            "labelled appear at every edge), so it cannot hold class indices. Save masks as PNG (grey 'L', palette "
            "'P' or 16-bit)."
        )
    try:
        image.load()
    except UNREADABLE_IMAGE_ERRORS as error:
        raise ValueError(f"{name} cannot be decoded ({type(error).__name__}: {error}).") from None
    if image.mode in _MODE_WORDS:
        raise ValueError(
            f"{name} is {_MODE_WORDS[image.mode]}; a label map holds one class index per pixel (a grey 'L', palette "
            "'P' or 16-bit PNG). Convert a colour-coded mask to class indices first (e.g. map each palette colour "
            "to its index), and drop any alpha channel."
        )
    # A palette image ("P", VOC's PNGs) gives its palette indices, which are the class indices (as mmseg reads it).
    return np.asarray(image)


def read_label_map(value, name: str) -> np.ndarray:
    """The stored values of one mask as a 2-D integer array `(H, W)` (not yet `LabelRule`-applied).

    Args:
        value: a path (PNG, TIFF, BMP, ... or `.npy`), bytes, datasets' `{"bytes", "path"}` dict, a PIL image, or
            an array / tensor / nested list.
        name: how messages call it (a path, "ade20k[3]", ...).

    Raises:
        ValueError naming `name` for a JPEG, a multi-channel image, non-integer or negative values, not 2-D.
    """
    if isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(".npy"):
        try:
            array = np.load(value, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(
                f"{name} cannot be read as a .npy array ({type(error).__name__}: {error})."
            ) from None
    elif isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
    else:
        try:
            image = open_pil(value)
        except UNREADABLE_IMAGE_ERRORS as error:
            raise ValueError(f"{name} cannot be read ({type(error).__name__}: {error}).") from None
        array = _from_image(image, name)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(
            f"{name} has shape {tuple(array.shape)}; a label map is one 2-D map of class indices of its image's size."
        )
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            example = array[bad].flat[0]
            raise ValueError(
                f"{name} holds non-integer values (e.g. {example:g} at {int(bad.sum())} pixels), so it is no label "
                "map (a float TIFF is usually depth or a probability map). Store class indices as integers in an "
                "8-bit or 16-bit PNG."
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} holds {array.dtype} values; a label map holds integer class indices.")
    array = array.astype(np.int64)
    if array.size and int(array.min()) < 0:
        raise ValueError(f"{name} holds negative values (e.g. {int(array.min())}); class indices start at 0.")
    return array


# ----------------------------------------------------------------------------------------------------------------
# The rule
def parse_ignore_index(value) -> int | str:
    """`--ignore_index` as given: None / "auto" -> "auto"; -1 / "none" -> -1 (nothing ignored); else an int >= 0."""
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return "auto"
    if isinstance(value, str) and value.lower() == "none":
        return -1
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--ignore_index must be a number, -1 (no ignore value) or auto, got {value!r}."
        ) from None
    if number < -1:
        raise ValueError(f"--ignore_index must be >= 0, -1 (no ignore value) or auto, got {value!r}.")
    return number


@dataclass(frozen=True)
class LabelRule:
    """How stored mask values become class indices (see the module docstring).

    Attributes:
        num_classes: classes of the class list (after reduction); None while the probe infers it from the masks.
        reduce_zero_label: stored 0 = no label (ignored), stored k = class k - 1.
        ignore_index: the stored "not labelled" value: "auto" (255 when 255 cannot be a class, else none), -1 or
            None (nothing ignored) or a value.
    """

    num_classes: int | None
    reduce_zero_label: bool = False
    ignore_index: int | str | None = "auto"

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"A label rule needs at least 1 class, got {self.num_classes}.")
        ignore = self.ignore_value
        if ignore is not None and self.num_classes is not None and self.is_class_value(ignore):
            shift = " stored as k + 1 with --reduce_zero_label" if self.reduce_zero_label else ""
            raise ValueError(
                f"--ignore_index {ignore} is also a class: with {self.num_classes} classes{shift}, stored values "
                f"{self.first_class_value}..{self.last_class_value} are classes. Pass --ignore_index -1 (no ignore "
                "value) or a value above the classes (e.g. 65535 in 16-bit masks)."
            )

    @property
    def first_class_value(self) -> int:
        return 1 if self.reduce_zero_label else 0

    @property
    def last_class_value(self) -> int | None:
        """The largest stored value that is a class (None while the class count is unknown)."""
        if self.num_classes is None:
            return None
        return self.num_classes if self.reduce_zero_label else self.num_classes - 1

    def is_class_value(self, stored: int) -> bool:
        last = self.last_class_value
        return self.first_class_value <= stored and (last is None or stored <= last)

    @property
    def ignore_value(self) -> int | None:
        """The stored value that is ignored: the resolved `ignore_index`."""
        if self.ignore_index is None or self.ignore_index == -1:
            return None
        if self.ignore_index != "auto":
            return int(self.ignore_index)
        last = self.last_class_value
        # 255 is "no label" unless the class list is long enough for 255 to be a class.
        return DEFAULT_IGNORE_VALUE if last is None or last < DEFAULT_IGNORE_VALUE else None

    def describe(self) -> dict:
        """What the report records: the resolved rule."""
        return {
            "num_classes": self.num_classes,
            "reduce_zero_label": self.reduce_zero_label,
            "ignore_index": self.ignore_value,
        }

    def apply(self, stored: np.ndarray, name: str) -> np.ndarray:
        """Stored values `(H, W)` -> `(H, W)` int64 class indices, `IGNORED` where not scored.

        Raises:
            ValueError naming `name` when a stored value is no class (nor the ignore value), with the fix.
        """
        stored = np.asarray(stored, dtype=np.int64)
        ignore = self.ignore_value
        ignored = stored == ignore if ignore is not None else np.zeros(stored.shape, dtype=bool)
        if self.reduce_zero_label:
            ignored = ignored | (stored == 0)
            labels = stored - 1
        else:
            labels = stored.copy()
        labels[ignored] = IGNORED
        if self.num_classes is not None:
            bad = ~ignored & ((labels < 0) | (labels >= self.num_classes))
            if bad.any():
                value = int(stored[bad].max())
                ignore_text = f"{ignore} = ignore" if ignore is not None else "no ignore value"
                reduce_hint = (
                    ""
                    if self.reduce_zero_label
                    else " For ADE-style masks whose 0 means 'other', pass --reduce_zero_label."
                )
                raise ValueError(
                    f"{name} holds the value {value} at {int(bad.sum())} pixels, but the class list has "
                    f"{self.num_classes} classes (stored values {self.first_class_value}..{self.last_class_value}, "
                    f"{ignore_text}{', 0 = ignore' if self.reduce_zero_label else ''}). Check that the masks and the "
                    f"class file belong together (or pass --ignore_index).{reduce_hint}"
                )
        return labels

    def decode(self, value, name: str) -> np.ndarray:
        """`read_label_map` then `apply`: `(H, W)` int64 class indices, `IGNORED` where not scored."""
        return self.apply(read_label_map(value, name), name)


def infer_num_classes(largest_class: int, rule: LabelRule, description: str) -> int:
    """The class count the probe infers from the largest class index seen under `rule` (num_classes None).

    With the default ignore value (255), masks holding values above 255 (16-bit) cannot be read without knowing
    the class count, so they are refused with the fix rather than guessed.
    """
    if largest_class < 0:
        raise ValueError(
            f"Every training mask of {description} is unlabelled (only the ignore value "
            f"{rule.ignore_value}); pass masks with classes, or check --ignore_index / --reduce_zero_label."
        )
    if rule.ignore_index == "auto" and largest_class + rule.first_class_value > DEFAULT_IGNORE_VALUE:
        raise ValueError(
            f"The masks of {description} hold class {largest_class} (16-bit masks), so 255 may be a class too; pass "
            f"--num_classes (and --ignore_index, -1 for none) instead of letting the probe infer them."
        )
    return largest_class + 1


# ----------------------------------------------------------------------------------------------------------------
# Masks against their images
def exif_orientation(value) -> int:
    """The EXIF orientation tag (1..8) of an image path / bytes / PIL image; 1 when absent or unreadable."""
    try:
        image = value if isinstance(value, Image.Image) else open_pil(value)
        return int(image.getexif().get(0x0112, 1) or 1)
    except (*UNREADABLE_IMAGE_ERRORS, TypeError):
        return 1


def check_label_size(
    label_shape: tuple[int, int], image_size: tuple[int, int], name: str, image_value=None
) -> None:
    """ValueError naming the mask's and the image's sizes (width x height) when they differ.

    Args:
        label_shape: `(H, W)` of the mask.
        image_size: `(H, W)` of the image as the commands see it (upright: EXIF orientation applied).
        name: the image's name.
        image_value: the image's path / bytes, to tell an EXIF rotation apart from a plain mismatch.
    """
    label_shape, image_size = tuple(label_shape), tuple(image_size)
    if label_shape == image_size:
        return
    mask_text = f"{label_shape[1]}x{label_shape[0]}"
    image_text = f"{image_size[1]}x{image_size[0]}"
    orientation = exif_orientation(image_value) if image_value is not None else 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        stored = f"{image_size[0]}x{image_size[1]}"
        matches = label_shape == image_size[::-1]
        raise ValueError(
            f"The mask of {name} is {mask_text} (width x height) but the image is {image_text} upright: the image has "
            f"EXIF orientation {orientation} ({_TRANSPOSING_ORIENTATIONS[orientation]}), its stored pixels are "
            f"{stored}{', which the mask matches' if matches else ''}. Images are read upright (EXIF applied, as "
            "mmcv/OpenCV and datasets read them); rotate the mask to the upright image, or re-save the image without "
            "its EXIF orientation (PIL.ImageOps.exif_transpose)."
        )
    raise ValueError(
        f"The mask of {name} is {mask_text} (width x height) but the image is {image_text}; a mask must have its "
        "image's size. Resize it with nearest-neighbour interpolation (never bilinear, which invents classes), or "
        "fix the pairing."
    )


def load_image_and_label(image_value, label_value, rule: LabelRule, name: str):
    """`(RGB PIL image, (H, W) int64 labels)` of one pair: the image upright (EXIF applied, any mode decoded by
    `data.open_image`), the mask read and checked under `rule` and against the image's size."""
    from ..data import open_image

    try:
        image = open_image(image_value)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise ValueError(
            f"The image {name} cannot be read ({type(error).__name__}: {error}); remove it and its mask, or replace "
            "it."
        ) from None
    is_file = isinstance(label_value, (str, os.PathLike))
    labels = rule.decode(
        label_value, f"the mask {label_value} (of {name})" if is_file else f"the mask of {name}"
    )
    check_label_size(labels.shape, (image.height, image.width), name, image_value)
    return image, labels


__all__ = [
    "DEFAULT_IGNORE_VALUE",
    "IGNORED",
    "LabelRule",
    "check_label_size",
    "exif_orientation",
    "infer_num_classes",
    "load_image_and_label",
    "parse_ignore_index",
    "read_label_map",
]
