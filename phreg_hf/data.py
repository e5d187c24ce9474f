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
"""Images for PH-Reg distillation: datasets' imagefolder or any HF image dataset, decoded safely, cropped.

Images are decoded in our transform rather than by `datasets` (the image column is cast to
`Image(decode=False)`), so one corrupt or truncated file is skipped, counted and reported instead of ending an
epoch with an exception. Every image becomes RGB (grey, 16-bit, RGBA, LA, CMYK and palette images included),
its short side is resized to the resolution R, a square R x R crop is taken (random while training), and it is
normalized with the base model's image-processor mean and std: in the DataLoader (float32 crops, `load_images`),
or, for training, on the trainer's device (uint8 crops, made with less work: `ImageTransform(uint8=True)`).
Folders of held-out images (`phreg eval`, `phreg visualize`, the trainer's final measures) are read here too
(`load_images`), center-cropped.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, UnidentifiedImageError

from .file_checks import file_sha256

# Defined beside the segmentation pipeline (the file checkpoints carry), so a pipeline input and a command's
# input become the same RGB image.
from .models.pipeline_phreg_segmentation import to_rgb, upright_rgb

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How `ImageTransform` makes its crops (a teacher cache's fingerprint names the one its targets were computed on).
FLOAT_PIPELINE = "float32: full decode, bicubic resize of the whole image, crop, normalize"
UINT8_PIPELINE = "uint8: JPEG draft when >= 2x, torch bicubic antialiased resize, crop"

# Natural images that ship inside scikit-image's package folder (no download needed), in a fixed order.
SAMPLE_IMAGE_FILES = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "page.png",
    "horse.png",
    "clock_motion.png",
    "cell.png",
    "text.png",
    "motorcycle_right.png",
)

# Errors PIL raises for unreadable, truncated or corrupt files, and for decompression bombs (an image with more
# pixels than PIL's limit: possibly an attack, and in any case not a training image). Each is skipped, counted
# and named, like any other unreadable file.
UNREADABLE_IMAGE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def image_extensions() -> set[str]:
    """File extensions PIL can open, lower case with the dot (e.g. '.jpg')."""
    return {ext.lower() for ext in Image.registered_extensions()}


# The extra that installs what the offline demos need (scikit-image's photos; matplotlib for the previews).
DEMO_EXTRA_INSTALL = 'pip install "phreg-hf[demo]"'


class SampleImagesUnavailable(ImportError):
    """scikit-image, whose sample photos the offline demos use, is not installed (or ships no photos)."""


def sample_image_paths() -> list[Path]:
    """Paths of the natural sample images shipped with scikit-image (see `SAMPLE_IMAGE_FILES`).

    Raises:
        SampleImagesUnavailable: scikit-image is missing or holds none of them; the message says what to install.
    """
    try:
        import skimage
    except ImportError:
        # `from None`: the one message says it all, with no second traceback of the import machinery.
        raise SampleImagesUnavailable(
            "the offline demo's sample photos come with scikit-image, which is not installed: "
            f"{DEMO_EXTRA_INSTALL} (or pip install scikit-image)."
        ) from None
    folder = Path(skimage.__file__).parent / "data"
    paths = [folder / name for name in SAMPLE_IMAGE_FILES if (folder / name).is_file()]
    if not paths:
        raise SampleImagesUnavailable(
            f"no sample photos in {folder} (scikit-image without its data files): reinstall it with "
            f"{DEMO_EXTRA_INSTALL}."
        )
    return paths


def write_sample_images(folder: str | os.PathLike, num_images: int | None = None) -> list[Path]:
    """Write the sample images as RGB PNGs into `folder` (usable as `--train_dir`); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sample_image_paths()[:num_images]:
        target = folder / f"{path.stem}.png"
        decode_image(path).save(target)
        written.append(target)
    return written


def open_pil(value) -> Image.Image:
    """A PIL image, opened but not yet decoded, from what a dataset holds: `{"bytes": ..., "path": ...}` (datasets'
    `Image(decode=False)`), a PIL image (returned as is), bytes or a path."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data = value.get("bytes")
        return Image.open(io.BytesIO(data)) if data is not None else Image.open(value["path"])
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    return Image.open(value)


def open_image(value) -> Image.Image:
    """An RGB PIL image, upright, from what a dataset holds; raises one of `UNREADABLE_IMAGE_ERRORS` if unreadable.

    Accepts what `open_pil` does. The EXIF orientation is applied (as `datasets` and transformers' `load_image`
    do), so a photo taken in portrait is seen upright.
    """
    image = open_pil(value)
    image.load()  # decode now, so truncated files fail here
    return upright_rgb(image)


def image_source_name(value) -> str:
    """How a message names an image: its path, or `<bytes>` / `<PIL image>`."""
    if isinstance(value, dict):
        return str(value.get("path") or "<bytes>")
    if isinstance(value, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(value, Image.Image):
        return "<PIL image>"
    return str(value)


def unreadable_reason(value, error: BaseException) -> str:
    """`'path: ErrorType: message'`, the one line that names an unreadable image and why."""
    return f"{image_source_name(value)}: {type(error).__name__}: {error}"


def decode_image(value, *, log: bool = True) -> Image.Image | None:
    """`open_image`, or None when the file cannot be read (logged with its path unless `log=False`)."""
    try:
        return open_image(value)
    except UNREADABLE_IMAGE_ERRORS as error:
        if log:
            logger.warning(f"Skipping unreadable image {unreadable_reason(value, error)}")
        return None


def read_image(value, name: str | None = None, fix: str = "remove or replace it") -> Image.Image:
    """`open_image` for a command that must not skip images (`phreg segment`, `phreg eval-segmentation`, `phreg
    probe`): a ValueError naming the file (or `name`) and `fix` when it cannot be read."""
    try:
        return open_image(value)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise ValueError(
            f"{name or image_source_name(value)} cannot be read ({type(error).__name__}: {error}); {fix}."
        ) from None


def upright_size(image: Image.Image) -> tuple[int, int]:
    """`(width, height)` of an opened (not necessarily decoded) image as `open_image` returns it: EXIF
    orientations 5-8 (a quarter turn) swap the stored width and height."""
    width, height = image.size
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_file_names(folder: str | os.PathLike, option: str = "--train_dir") -> None:
    """Refuse file names that are not valid UTF-8 (datasets' imagefolder cannot read them), naming the file.

    On POSIX such bytes reach Python as lone surrogates (PEP 383); they cannot be encoded as UTF-8.
    """
    for path in Path(folder).rglob("*"):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(path)
            raise ValueError(
                f"{option} {folder}: the file name {raw!r} is not valid UTF-8, which datasets' imagefolder "
                "cannot read. Rename it (e.g. `convmv -f latin1 -t utf-8 --notest -r FOLDER`, or by hand)."
            ) from None


def folder_content_hash(folder: str | os.PathLike) -> str:
    """sha256 over the relative path and the bytes of every file under `folder` (a cache's image set).

    Content, not sizes or times: an image replaced by another of the same size changes the hash.
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def load_image_dataset(
    train_dir: str | os.PathLike | None = None,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    image_column: str = "image",
    split: str = "train",
    streaming: bool = False,
    cache_dir: str | None = None,
):
    """A `datasets.Dataset` (or `IterableDataset` when streaming) of undecoded images.

    Exactly one source: `train_dir`, a folder of images (flat or in subfolders) read with datasets'
    `imagefolder` builder, or `dataset_name` (+ `dataset_config`), any HF image dataset (Hub id or local path).
    """
    import datasets

    if (train_dir is None) == (dataset_name is None):
        raise ValueError(
            "Give exactly one image source: --train_dir FOLDER (a folder of images) or --dataset_name NAME "
            f"(a Hugging Face image dataset); got train_dir={train_dir!r}, dataset_name={dataset_name!r}."
        )
    if train_dir is not None:
        folder = Path(train_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--train_dir {folder} does not exist or is not a folder.")
        extensions = image_extensions()
        if not any(p.suffix.lower() in extensions for p in folder.rglob("*") if p.is_file()):
            raise ValueError(
                f"--train_dir {folder} holds no image files; supported extensions include "
                ".jpg, .jpeg, .png, .webp, .bmp, .tif, .gif."
            )
        check_file_names(folder)
        dataset = datasets.load_dataset(
            "imagefolder", data_dir=str(folder), split=split, streaming=streaming, cache_dir=cache_dir
        )
        image_column = "image"
    else:
        dataset = datasets.load_dataset(
            dataset_name, dataset_config, split=split, streaming=streaming, cache_dir=cache_dir
        )
    columns = list(dataset.features) if dataset.features is not None else None
    if columns is not None and image_column not in columns:
        raise ValueError(
            f"The dataset has no column {image_column!r}; its columns are {columns}. Pass --image_column with "
            "the one that holds the images."
        )
    if columns is not None and isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def normalize_pixels(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 `(..., 3, H, W)` pixels -> float32 `(x / 255 - mean) / std` (`mean`, `std` broadcast: `(3, 1, 1)`).

    The one normalization of both paths: `ImageTransform` (float output) runs it in the DataLoader, the trainer
    runs it on the device on uint8 batches (`StepLoopMixin.normalize_pixels`), with the same float32 operations,
    so both give the same values for the same uint8 crop.
    """
    if pixels.dtype != torch.uint8:
        raise TypeError(
            f"normalize_pixels expects uint8 pixels (ImageTransform(..., uint8=True) crops), got {pixels.dtype}; "
            "float pixel values are normalized already."
        )
    return (pixels.to(torch.float32) / 255.0 - mean) / std


class ImageTransform:
    """An image -> `(3, R, R)` crop: RGB, short side resized to R (bicubic), square crop, normalized.

    Args:
        resolution: R.
        image_mean, image_std: per-channel normalization (the base model's image processor's).
        random_crop: a random square crop (training), else the center crop.
        uint8: crops as uint8 `(3, R, R)` tensors, not normalized (the trainer normalizes them on its device with
            `normalize_pixels`), made with less work: a JPEG whose short side is at least 2 R is decoded at a
            reduced size (PIL's `draft` scales the DCT by 1/2, 1/4 or 1/8 while decoding, keeping the short side
            >= R), and the resize runs on uint8 (torch's antialiased bicubic, PIL's filter) with no float32 work.
            Why, measured by `benchmarks/bench_input_pipeline.py` on one (shared) core, three runs: the float path
            (full decode, PIL resize, float32 normalization in the worker) made 75-104 crops/s of a 500 x 375 JPEG
            at 518 px and 17-22 of a 2000 x 1500 one; this one 3.4x-3.9x and 3.8x-5.0x as many (268-403 and 76-97
            crops/s), and a batch moved to the device is 4x smaller (1 byte a value, not 4). Its crops are within
            2 grey levels of the float path's without draft (mean 0.00) and 18 with a 1/2 draft (2000 x 1500 at
            518 px, mean 0.34; the scaled IDCT is another low-pass filter than bicubic, so edges differ most;
            deeper drafts up to ~40, mean <= 1.4), see tests/test_data.py. The float path stays for the held-out
            images (`load_images`).
    """

    def __init__(
        self,
        resolution: int,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        random_crop: bool = True,
        uint8: bool = False,
    ):
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}.")
        self.resolution = resolution
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.random_crop = random_crop
        self.uint8 = uint8
        self._mean = torch.tensor(self.image_mean).view(3, 1, 1)
        self._std = torch.tensor(self.image_std).view(3, 1, 1)

    @property
    def pipeline(self) -> str:
        """How the crops are made (part of a teacher cache's fingerprint: its targets were computed on them)."""
        return UINT8_PIPELINE if self.uint8 else FLOAT_PIPELINE

    @classmethod
    def from_image_processor(
        cls, processor, resolution: int, random_crop: bool = True, uint8: bool = False
    ) -> ImageTransform:
        """Mean and std from any HF image processor (ImageNet's, with a warning, if it has none)."""
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if mean is None or std is None:
            logger.warning(f"{type(processor).__name__} has no image_mean/image_std; using ImageNet's.")
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        return cls(resolution, mean, std, random_crop, uint8=uint8)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """`(width, height)` of a `width x height` image with its short side resized to R."""
        scale = self.resolution / min(width, height)
        return max(self.resolution, round(width * scale)), max(self.resolution, round(height * scale))

    def crop_box(
        self, width: int, height: int, generator: torch.Generator | None = None, crop_seed: int | None = None
    ) -> tuple[int, int]:
        """Top-left corner `(left, top)` of the R x R crop of a resized `width x height` image."""
        if not self.random_crop:
            return (width - self.resolution) // 2, (height - self.resolution) // 2
        if crop_seed is not None:
            generator = torch.Generator().manual_seed(crop_seed)
        left = int(torch.randint(0, width - self.resolution + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - self.resolution + 1, (1,), generator=generator))
        return left, top

    def open(self, value) -> tuple[Image.Image, tuple[int, int]]:
        """`(decoded RGB upright image, (width, height) of the full-size upright image)` from what a dataset holds
        (see `open_pil`); raises one of `UNREADABLE_IMAGE_ERRORS` if unreadable. With `uint8`, a JPEG whose short
        side is at least 2 R is decoded at 1/2, 1/4 or 1/8 of its size (never below R on the short side)."""
        if not self.uint8:
            image = open_image(value)
            return image, image.size
        image = open_pil(value)
        full_size = upright_size(image)
        width, height = image.size  # as stored: draft works before the EXIF rotation
        short = min(width, height)
        if short >= 2 * self.resolution:
            # draft picks the largest 1/2^k scale that keeps the image at least this size (a no-op for non-JPEG).
            image.draft(
                image.mode, (-(-width * self.resolution // short), -(-height * self.resolution // short))
            )
        image.load()  # decode now, so truncated files fail here
        return upright_rgb(image), full_size

    def crop(
        self,
        image: Image.Image,
        full_size: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        crop_seed: int | None = None,
    ) -> torch.Tensor:
        """The crop of an RGB image `open` returned. The crop box is drawn on the full-size image resized
        (`full_size`, default the image's size), so a drafted image gets the crop of the same region."""
        full_size = full_size or image.size
        size = self.resized_size(*full_size)
        left, top = self.crop_box(*size, generator=generator, crop_seed=crop_seed)
        r = self.resolution
        if self.uint8:
            # torch's uint8 bicubic with antialiasing follows PIL's filter (within 1 grey level of PIL's resize) and
            # resized the whole image in half the time PIL took for the crop box alone (6.9 vs 12.4 ms at 500 x 375,
            # 11.1 vs 24.6 ms at 1000 x 750, to 518 px, one busy core). An (H, W, 3) array seen as (1, 3, H, W) is
            # channels-last in memory, the layout of torch's fast uint8 kernels.
            pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
            resized = F.interpolate(pixels, size=(size[1], size[0]), mode="bicubic", antialias=True)
            return resized[0, :, top : top + r, left : left + r].contiguous()  # not a view of the whole image
        image = image.resize(size, Image.Resampling.BICUBIC).crop((left, top, left + r, top + r))
        return normalize_pixels(torch.from_numpy(np.array(image)).permute(2, 0, 1), self._mean, self._std)

    def load(
        self, value, generator: torch.Generator | None = None, crop_seed: int | None = None
    ) -> torch.Tensor:
        """`open` then `crop`: the crop of an image as a dataset holds it."""
        return self.crop(*self.open(value), generator=generator, crop_seed=crop_seed)

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None, crop_seed: int | None = None
    ) -> torch.Tensor:
        """The crop of a PIL image: `(3, R, R)` float32 (uint8 with `uint8`). `crop_seed` fixes the crop (e.g. the
        one a cached teacher target was made on)."""
        return self.crop(to_rgb(image), generator=generator, crop_seed=crop_seed)


def default_crop_seed(seed: int, epoch: int, index: int) -> int:
    """A crop seed that depends only on (seed, epoch, image index): reproducible, and the same after a resume."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63)


class _DistillItems:
    """What the map-style and streaming datasets share: decode one example into a training item.

    The epoch lives in a shared-memory tensor, so `set_epoch` in the training process reaches persistent DataLoader
    workers too (they read it when they build an item, after the epoch's indices were sent). With a
    `target_reader` (a teacher cache's `CachedTargetReader`) and `crop_seed_fn` each item also carries the cached
    teacher target of its image when there is one, read and checksum-verified here, i.e. in the worker.
    """

    def __init__(
        self,
        dataset,
        transform: ImageTransform,
        image_column: str = "image",
        seed: int = 0,
        crop_seed_fn: Callable[[int], int] | None = None,
        target_reader=None,
    ):
        self.dataset = dataset
        self.transform = transform
        self.image_column = image_column
        self.seed = seed
        self.crop_seed_fn = crop_seed_fn
        self.target_reader = target_reader
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.numpy())  # a CPU tensor: no device sync

    def set_epoch(self, epoch: int) -> None:
        """New random crops each epoch (unless `crop_seed_fn` fixes them, as the teacher cache does)."""
        self._epoch.fill_(int(epoch))

    def item(self, example: dict, index: int) -> dict:
        """`{"pixel_values", "index"}` (+ `"target"` from the teacher cache), or `{"index", "unreadable": reason}`
        for a file that cannot be read (the trainer names each such file once, however many epochs meet it)."""
        value = example[self.image_column]
        try:
            image, full_size = self.transform.open(value)
        except UNREADABLE_IMAGE_ERRORS as error:
            return {"index": index, "unreadable": unreadable_reason(value, error)}
        crop_seed = (
            self.crop_seed_fn(index)
            if self.crop_seed_fn is not None
            else default_crop_seed(self.seed, self.epoch, index)
        )
        item = {"pixel_values": self.transform.crop(image, full_size, crop_seed=crop_seed), "index": index}
        if self.target_reader is not None and self.crop_seed_fn is not None:
            stored = self.target_reader.crop_seed(index)
            if stored is not None:
                if stored != crop_seed:
                    raise ValueError(
                        f"Image {index} was cached with crop seed {stored} but is now cropped with {crop_seed}; "
                        f"delete {self.target_reader.directory} or pass another --teacher_cache."
                    )
                item["target"] = self.target_reader.read(index)
        return item


class DistillImageDataset(_DistillItems, torch.utils.data.Dataset):
    """Map-style: item i is `{"pixel_values": (3, R, R), "index": i}` (see `item` for unreadable images)."""

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.item(self.dataset[int(index)], int(index))


class IterableDistillImageDataset(_DistillItems, torch.utils.data.IterableDataset):
    """Streaming: yields items as `DistillImageDataset`, with running indices.

    Multi-process training: Accelerate's prepared dataloader reads an iterable dataset on the main process and
    dispatches batches, so no sharding is needed here. DataLoader workers each take every n-th example.
    """

    def __iter__(self):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)  # reshuffles a shuffled streaming dataset per epoch
        worker = torch.utils.data.get_worker_info()
        for index, example in enumerate(self.dataset):
            if worker is None or index % worker.num_workers == worker.id:
                yield self.item(example, index)


def collate_skipping_corrupt(batch: list[dict | None]) -> dict:
    """Stack the readable items: `{"pixel_values": (B, 3, R, R), "index": (B,), "indices": [int] * B,
    "num_skipped": int, "unreadable": [(index, reason), ...]}`, plus, when some item carries a cached teacher
    target, `"targets"` `(B, N, C)` (as stored, zero where missing) and `"has_target"` `[bool] * B`.

    `indices` and `has_target` are Python lists, which stay on the host when the batch moves to the device (the
    trainer reads them without a device sync). B may be 0 when every image of the batch was unreadable; the
    trainer skips such a batch.
    """
    good = [item for item in batch if item is not None and "unreadable" not in item]
    unreadable = [(int(item["index"]), item["unreadable"]) for item in batch if item and "unreadable" in item]
    if good:
        pixel_values = torch.stack([item["pixel_values"] for item in good])
    else:
        pixel_values = torch.zeros(0, 3, 0, 0)
    indices = [int(item["index"]) for item in good]
    collated = {
        "pixel_values": pixel_values,
        "index": torch.tensor(indices, dtype=torch.long),
        "indices": indices,
        "num_skipped": len(batch) - len(good),
        "unreadable": unreadable,
    }
    cached = [item.get("target") for item in good]
    known = next((target for target in cached if target is not None), None)
    if known is not None:
        targets = known.new_zeros(len(good), *known.shape)
        for row, target in enumerate(cached):
            if target is not None:
                targets[row] = target
        collated["targets"] = targets
        collated["has_target"] = [target is not None for target in cached]
    return collated


# ----------------------------------------------------------------------------------------------------------------
# Folders of held-out images (`phreg eval`, `phreg visualize`, the trainer's final measures)
@dataclass
class LoadedImages:
    """Readable images of a folder, center-cropped and normalized.

    Attributes:
        pixel_values: `(n, 3, R, R)` float32.
        names: file paths relative to the folder, one per image.
        indices: position of each image among the folder's image files (sorted), seeds its teacher views.
        num_skipped: unreadable files met (and skipped) while collecting the n images.
        folder: the folder as given.
    """

    pixel_values: torch.Tensor
    names: list[str]
    indices: list[int]
    num_skipped: int
    folder: str


def list_image_files(folder: str | Path, option: str = "--images") -> list[Path]:
    """Image files under `folder` (recursive, hidden files skipped), sorted by relative path.

    Raises FileNotFoundError when the folder is missing and ValueError when it holds no image file; both name
    `option`, the command-line option that gave the folder.
    """

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{option} {root} does not exist or is not a folder; pass a folder of images (.jpg, .png, ...)."
        )
    extensions = image_extensions()
    paths = [
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix.lower() in extensions
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
    if not paths:
        raise ValueError(
            f"{option} {root} holds no image files (looked recursively for .jpg, .jpeg, .png, .webp, .bmp, "
            ".tif, ...); put held-out images there or pass another folder."
        )
    return sorted(paths, key=lambda path: path.relative_to(root).as_posix())


def load_images(
    folder: str | Path, transform, max_images: int | None = None, option: str = "--images"
) -> LoadedImages:
    """Decode, center-crop and normalize the images of `folder` (see `list_image_files`).

    Unreadable files are skipped (logged with their path) and counted; decoding stops once `max_images`
    readable images are collected (None or 0: all).

    Args:
        folder: the folder of images.
        transform: a `data.ImageTransform` with `random_crop=False` (R x R center crop).
        max_images: cap on the readable images kept.
        option: the option that gave the folder, for error messages.
    """

    if getattr(transform, "uint8", False):
        raise ValueError(
            "load_images returns normalized float32 images; pass an ImageTransform without uint8=True (uint8 crops "
            "are for the trainer, which normalizes them on its device)."
        )
    root = Path(folder)
    paths = list_image_files(root, option)
    # data.py's dataset decodes safely (RGB, upright, unreadable files reported) given any sequence of {"image": path}.
    dataset = DistillImageDataset([{"image": str(path)} for path in paths], transform)
    items, names, skipped = [], [], 0
    for index, path in enumerate(paths):
        item = dataset[index]
        if "unreadable" in item:
            logger.warning(f"Skipping unreadable image {item['unreadable']}")
            skipped += 1
            continue
        items.append(item)
        names.append(path.relative_to(root).as_posix())
        if max_images and len(items) >= max_images:
            break
    if not items:
        raise ValueError(
            f"None of the {len(paths)} image files in {option} {root} could be read ({skipped} unreadable, see "
            "the warnings above); pass a folder with readable images."
        )
    return LoadedImages(
        pixel_values=torch.stack([item["pixel_values"] for item in items]),
        names=names,
        indices=[int(item["index"]) for item in items],
        num_skipped=skipped,
        folder=str(folder),
    )
