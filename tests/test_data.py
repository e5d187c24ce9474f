"""Image data: every image mode becomes RGB, unreadable files are skipped and counted, sources and crops."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from phreg_hf.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DistillImageDataset,
    ImageTransform,
    IterableDistillImageDataset,
    collate_skipping_corrupt,
    decode_image,
    load_image_dataset,
    load_images,
    normalize_pixels,
    sample_image_paths,
    write_sample_images,
)

RED = (200, 30, 10)


@pytest.fixture
def mixed_folder(tmp_path):
    """Every kind of image a user folder may hold, plus three unreadable files and a non-image."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30), RED).save(folder / "rgb.png")
    Image.new("L", (30, 40), 128).save(folder / "grey.png")
    rgba = Image.new("RGBA", (32, 32), (*RED, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(folder / "rgba.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("RGB", (32, 32), RED).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(folder / "grey16.png")
    (folder / "random_bytes.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), RED).save(buffer, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_mixed_folder_loads_converts_and_counts_unreadable_files(mixed_folder):
    dataset = load_image_dataset(train_dir=mixed_folder)
    assert len(dataset) == 9  # the .txt is not an image file
    transform = ImageTransform(16, IMAGENET_MEAN, IMAGENET_STD, random_crop=False)
    items = DistillImageDataset(dataset, transform)
    batch = collate_skipping_corrupt([items[i] for i in range(len(items))])
    assert batch["num_skipped"] == 3 and batch["pixel_values"].shape == (6, 3, 16, 16)
    names = [dataset[int(i)]["image"]["path"].rsplit("/", 1)[-1] for i in batch["index"]]
    rgb = batch["pixel_values"][names.index("rgb.png")]
    expected = (torch.tensor(RED) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(rgb[:, 8, 8], expected, atol=1e-4, rtol=0)
    grey = batch["pixel_values"][names.index("grey16.png")]
    expected_grey = (round(40000 / 65535 * 255) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    torch.testing.assert_close(grey[:, 8, 8], expected_grey, atol=0.02, rtol=0)


def test_every_mode_becomes_rgb(mixed_folder):
    for name in ("grey.png", "rgba.png", "cmyk.jpg", "palette.png", "grey16.png"):
        image = decode_image(mixed_folder / name)
        assert image.mode == "RGB", name
    assert decode_image(mixed_folder / "rgba.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert (
        decode_image({"bytes": (mixed_folder / "rgb.png").read_bytes(), "path": None}).getpixel((0, 0)) == RED
    )


def test_unreadable_files_are_logged_with_their_path(mixed_folder, caplog):
    assert decode_image(mixed_folder / "truncated.jpg") is None
    assert "truncated.jpg" in caplog.text


def test_nested_folders_and_sample_images(tmp_path):
    paths = sample_image_paths()
    assert len(paths) >= 15 and all(p.is_file() for p in paths)
    written = write_sample_images(tmp_path / "nested" / "a", num_images=3)
    write_sample_images(tmp_path / "nested" / "b", num_images=2)
    assert len(written) == 3 and all(Image.open(p).mode == "RGB" for p in written)
    assert len(load_image_dataset(train_dir=tmp_path / "nested")) == 5


def test_image_transform_crops():
    landscape, portrait = Image.new("RGB", (90, 30)), Image.new("RGB", (30, 90))
    gradient = Image.fromarray(np.tile(np.arange(90, dtype=np.uint8), (30, 1)))
    transform = ImageTransform(24)
    assert transform(landscape).shape == transform(portrait).shape == (3, 24, 24)
    crops = [transform(gradient, crop_seed=seed) for seed in range(6)]
    assert torch.equal(crops[0], transform(gradient, crop_seed=0))
    assert len({c[0, 0, 0].item() for c in crops}) > 1  # different seeds, different crops
    generator_crop = transform(gradient, generator=torch.Generator().manual_seed(5))
    assert torch.equal(generator_crop, transform(gradient, generator=torch.Generator().manual_seed(5)))
    center = ImageTransform(24, random_crop=False)
    assert center.crop_box(72, 24) == (24, 0)


def test_crops_depend_on_seed_epoch_and_index_only(tmp_path):
    write_sample_images(tmp_path, num_images=2)
    dataset = load_image_dataset(train_dir=tmp_path)
    index = 1  # coffee.png, 600x400: a square crop has room to move (astronaut.png is square)
    items = DistillImageDataset(dataset, ImageTransform(32), seed=1)
    first = items[index]["pixel_values"]
    assert torch.equal(first, DistillImageDataset(dataset, ImageTransform(32), seed=1)[index]["pixel_values"])
    items.set_epoch(1)
    assert not torch.equal(first, items[index]["pixel_values"])
    fixed = DistillImageDataset(dataset, ImageTransform(32), crop_seed_fn=lambda index: 7)
    fixed_first = fixed[index]["pixel_values"]
    fixed.set_epoch(3)
    assert torch.equal(fixed_first, fixed[index]["pixel_values"])


def test_dataset_name_goes_through_load_dataset_and_streams(tmp_path):
    """The Hub path: the real `datasets.load_dataset(name, config, ...)` on a local dataset folder."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), RED).save(buffer, format="PNG")
    table = datasets.Dataset.from_dict({"picture": [{"bytes": buffer.getvalue(), "path": None}] * 3})
    table = table.cast_column("picture", datasets.Image())
    (tmp_path / "hub_like").mkdir()
    table.to_parquet(str(tmp_path / "hub_like" / "train.parquet"))
    dataset = load_image_dataset(dataset_name=str(tmp_path / "hub_like"), image_column="picture")
    assert len(dataset) == 3 and dataset.features["picture"].decode is False
    streamed = load_image_dataset(
        dataset_name=str(tmp_path / "hub_like"), image_column="picture", streaming=True
    )
    items = list(IterableDistillImageDataset(streamed, ImageTransform(8), image_column="picture"))
    assert [item["index"] for item in items] == [0, 1, 2] and items[0]["pixel_values"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match=r"no column 'image'; its columns are \['picture'\].*--image_column"):
        load_image_dataset(dataset_name=str(tmp_path / "hub_like"))


def test_source_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="exactly one image source.*--train_dir.*--dataset_name"):
        load_image_dataset()
    with pytest.raises(ValueError, match="exactly one image source"):
        load_image_dataset(train_dir=tmp_path, dataset_name="x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_dataset(train_dir=tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no image files.*\\.jpg"):
        load_image_dataset(train_dir=tmp_path)


def test_all_unreadable_batch_is_empty_not_an_error():
    batch = collate_skipping_corrupt([None, None])
    assert batch["num_skipped"] == 2 and batch["pixel_values"].shape[0] == 0 and batch["index"].numel() == 0


# ---------------------------------------------------------------------------------------------------------------
# uint8 crops (the trainer's): the float path's crops, to within a few grey levels, made with less work
def _jpeg(name: str) -> bytes:
    path = next(p for p in sample_image_paths() if p.name == name)
    buffer = io.BytesIO()
    decode_image(path).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _grey_levels(transform: ImageTransform, normalized: torch.Tensor) -> torch.Tensor:
    """A float crop back in 0..255 grey levels."""
    mean, std = (
        torch.tensor(transform.image_mean).view(3, 1, 1),
        torch.tensor(transform.image_std).view(3, 1, 1),
    )
    return (normalized * std + mean) * 255


@pytest.mark.parametrize(
    "resolution, drafted, max_levels, mean_levels",
    [
        (224, False, 1, 0.01),  # 600 x 400 -> 336 x 224: short side < 2 R, decoded at full size
        (
            150,
            True,
            21,
            1.1,
        ),  # short side >= 2 R: decoded at 300 x 200 (PIL draft), then resized to 225 x 150
    ],
)
def test_uint8_crops_equal_the_float_crops(resolution, drafted, max_levels, mean_levels):
    data = _jpeg("coffee.png")  # 600 x 400, textured: a crop one pixel off is ~7 grey levels off on average
    reference = ImageTransform(resolution, IMAGENET_MEAN, IMAGENET_STD)
    fast = ImageTransform(resolution, IMAGENET_MEAN, IMAGENET_STD, uint8=True)
    image, full_size = fast.open(data)
    assert full_size == (600, 400) and image.size == ((300, 200) if drafted else (600, 400))
    for seed in range(3):
        crop = fast.load(data, crop_seed=seed)
        assert crop.dtype == torch.uint8 and crop.shape == (3, resolution, resolution)
        expected = reference.load(data, crop_seed=seed)
        difference = (_grey_levels(reference, expected) - crop.float()).abs()
        assert difference.max() <= max_levels + 1e-3 and difference.mean() <= mean_levels, seed
        # The device's normalization of the uint8 crop is the float path's, to the same few grey levels.
        normalized = normalize_pixels(crop, reference._mean, reference._std)
        torch.testing.assert_close(
            normalized, expected, rtol=0, atol=(max_levels + 1e-3) / 255 / min(IMAGENET_STD)
        )
    # A crop one pixel off is well outside these tolerances, so the test sees a wrong crop region.
    left, top = fast.crop_box(*fast.resized_size(*full_size), crop_seed=0)
    size = fast.resized_size(*full_size)
    shifted = (
        decode_image(data)
        .resize(size, Image.Resampling.BICUBIC)
        .crop((left + 1, top, left + 1 + resolution, top + resolution))
    )
    off = torch.from_numpy(np.array(shifted)).permute(2, 0, 1).float()
    assert (off - fast.load(data, crop_seed=0).float()).abs().mean() > 5  # vs mean_levels <= 1.1


def test_uint8_crops_of_a_rotated_jpeg_and_of_any_mode(mixed_folder):
    buffer = io.BytesIO()
    photo = decode_image(next(p for p in sample_image_paths() if p.name == "coffee.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 600 x 400, shown upright as 400 x 600
    photo.save(buffer, format="JPEG", quality=90, exif=exif)
    fast = ImageTransform(100, uint8=True)
    drafted, full_size = fast.open(buffer.getvalue())
    assert full_size == (400, 600) and drafted.size == (100, 150)  # drafted at 1/4, then turned upright
    reference = ImageTransform(100)
    difference = _grey_levels(reference, reference.load(buffer.getvalue(), crop_seed=1)) - fast.load(
        buffer.getvalue(), crop_seed=1
    )
    assert difference.abs().mean() < 2
    dataset = load_image_dataset(train_dir=mixed_folder)
    items = DistillImageDataset(dataset, ImageTransform(16, uint8=True, random_crop=False))
    batch = collate_skipping_corrupt([items[i] for i in range(len(items))])
    assert batch["num_skipped"] == 3 and batch["pixel_values"].dtype == torch.uint8  # same files skipped
    names = [dataset[int(i)]["image"]["path"].rsplit("/", 1)[-1] for i in batch["index"]]
    assert batch["pixel_values"][names.index("rgb.png")][:, 8, 8].tolist() == list(RED)
    assert batch["pixel_values"][names.index("rgba.png")][:, 0, 0].tolist() != [
        0,
        0,
        0,
    ]  # composited on white


def test_normalize_pixels_takes_uint8_only(tmp_path):
    with pytest.raises(ValueError, match="float32 images; pass an ImageTransform without uint8=True"):
        load_images(tmp_path, ImageTransform(8, uint8=True))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    white = normalize_pixels(torch.full((3, 2, 2), 255, dtype=torch.uint8), mean, std)
    torch.testing.assert_close(white[:, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    with pytest.raises(TypeError, match="expects uint8.*got torch.float32"):
        normalize_pixels(white, mean, std)
