"""Issue 18 items 5, 6 and 12: one reading of masks and class files for every command.

These tests use only entry points that existed before `label_maps.py` (eval-segmentation's arguments and CLI,
the probe's `decode_mask` / `ProbeArguments` / `prepare_data`, `read_class_file`), so each one ran against the
code before the fix (d5eefa1) and failed there.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from phreg_hf.cli import main as phreg_main
from phreg_hf.evaluate import probe_data
from phreg_hf.evaluate.probe import ProbeArguments
from phreg_hf.evaluate.segmentation_eval import EvalSegmentationArguments, iterate_labelled_images
from phreg_hf.models.pipeline_phreg_segmentation import read_class_file
from phreg_hf.synthetic_clip import save_planted_artifact_clip


def _folder(tmp_path, mask: Image.Image | np.ndarray, mask_name: str = "a.png", image_size=(12, 10)):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.new("RGB", image_size, (90, 90, 90)).save(images / "a.png")
    if isinstance(mask, np.ndarray):
        np.save(masks / mask_name, mask)
    else:
        mask.save(masks / mask_name)
    return images, masks


def _eval_args(tmp_path, images, masks, **kwargs) -> EvalSegmentationArguments:
    return EvalSegmentationArguments(
        model="m", base="b", class_names="c.txt", out=str(tmp_path / "r.json"), images=str(images), masks=str(masks),
        **kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Item 5: masks
def test_a_lossy_jpeg_mask_is_refused(tmp_path):
    mask = Image.fromarray(np.tile(np.array([0, 0, 1, 1, 2, 2], dtype=np.uint8) * 60, (10, 2)))
    images, masks = _folder(tmp_path, mask, "a.jpg")
    with pytest.raises(
        ValueError, match=r"masks/a\.jpg \(of a\.png\) is a JPEG file: lossy compression .* Save masks as PNG"
    ):
        list(iterate_labelled_images(_eval_args(tmp_path, images, masks)))


def test_a_float_tiff_mask_is_refused_not_truncated(tmp_path):
    values = np.zeros((10, 12), dtype=np.float32)
    values[2, 3] = 1.7
    images, masks = _folder(tmp_path, Image.fromarray(values, "F"), "a.tif")
    with pytest.raises(ValueError, match=r"non-integer values \(e\.g\. 1\.7 at 1 pixels\)"):
        list(iterate_labelled_images(_eval_args(tmp_path, images, masks)))


def test_reduce_zero_label_keeps_the_255_border_ignored_and_infers_the_right_class_count(tmp_path):
    stored = np.array([[0, 1, 2, 255]])
    got = probe_data.decode_mask(stored, "m", reduce_zero_label=True)
    assert got.tolist() == [
        [probe_data.IGNORE_INDEX, 0, 1, probe_data.IGNORE_INDEX]
    ]  # the border is no class 254
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for index in range(4):
        mask = np.full((8, 8), 255, dtype=np.uint8)  # VOC-like: a 255 border
        mask[2:6, 2:6] = 1 + index % 3  # stored 1..3: classes 0..2 after the reduction
        Image.fromarray(mask).save(masks / f"{index}.png")
        Image.new("RGB", (8, 8)).save(images / f"{index}.png")
    args = ProbeArguments(task="segmentation", images=str(images), masks=str(masks), reduce_zero_label=True)
    data = probe_data.prepare_data(args, (0.5,) * 3, (0.25,) * 3, progress=False)
    assert data.num_classes == 3  # not 255


def test_16_bit_masks_with_more_than_255_classes_are_accepted_and_255_is_a_class():
    stored = np.array([[0, 255, 300]], dtype=np.uint16)
    labels = ProbeArguments(task="segmentation", num_classes=301).label_settings()
    assert labels.decode(stored, "m").tolist() == [[0, 255, 300]]
    with pytest.raises(ValueError, match="holds the value 300 .* 300 classes"):
        ProbeArguments(task="segmentation", num_classes=300).label_settings().decode(stored, "m")


def test_eval_segmentation_and_the_probe_read_a_mask_the_same_way(tmp_path):
    stored = np.array([[0, 1, 2, 255], [3, 0, 255, 1]], dtype=np.uint8)
    images, masks = _folder(tmp_path, Image.fromarray(stored), image_size=(4, 2))
    for reduce in (False, True):
        args = _eval_args(tmp_path, images, masks, reduce_labels=reduce)
        (_, _, from_eval), = iterate_labelled_images(args)  # fmt: skip
        from_probe = probe_data.decode_mask(masks / "a.png", "m", reduce_zero_label=reduce)
        assert np.array_equal(from_eval, from_probe), (reduce, from_eval, from_probe)


# ---------------------------------------------------------------------------------------------------------------
# Item 6: class files
def test_class_file_bom_duplicates_and_encoding(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes("background\ncat\n".encode("utf-8-sig"))
    assert read_class_file(bom) == [["background"], ["cat"]]
    twice = tmp_path / "twice.txt"
    twice.write_text("background\ncat\ncat, kitten\n")
    with pytest.raises(ValueError, match=r"Line 3 of the class file .*twice\.txt \('cat'\) repeats line 2"):
        read_class_file(twice)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("background\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"The class file .*latin\.txt is not UTF-8 \(byte 0xe9"):
        read_class_file(latin)


# ---------------------------------------------------------------------------------------------------------------
# Item 12: mask messages that name the problem (through the CLI, as a user meets them)
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    save_planted_artifact_clip(folder, image_size=32, patch_size=8)
    return folder


def _run_eval(clip_dir, tmp_path, images, masks, capsys) -> tuple[int, str]:
    classes = tmp_path / "classes.txt"
    classes.write_text("background\nthing\n")
    command = [
        "eval-segmentation",
        "--model",
        str(clip_dir),
        "--base",
        str(clip_dir),
        "--class_names",
        str(classes),
    ]
    command += ["--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "r.json")]
    command += ["--short_side", "32", "--crop_size", "32", "--stride", "16"]
    code = phreg_main(command)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("mode", ["RGB", "LA"])
def test_a_colour_mask_is_named_as_such(clip_dir, tmp_path, capsys, mode):
    images, masks = _folder(tmp_path, Image.new(mode, (12, 10)))
    code, err = _run_eval(clip_dir, tmp_path, images, masks, capsys)
    assert code == 2
    assert (
        "pixels but the image is" not in err
    )  # the old message contradicted itself ("is 12x10 ... is 12x10")
    assert "values per pixel); a label map holds one class index per pixel" in err


def test_an_exif_rotated_image_is_read_upright_and_a_mask_of_its_stored_pixels_is_named(
    clip_dir, tmp_path, capsys
):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 24 wide x 16 high, shown 16 wide x 24 high
    Image.new("RGB", (24, 16), (200, 30, 30)).save(images / "photo.jpg", exif=exif)
    Image.fromarray(np.zeros((24, 16), dtype=np.uint8)).save(masks / "photo.png")  # upright, as it is shown
    code, err = _run_eval(clip_dir, tmp_path, images, masks, capsys)
    assert code == 0, err
    Image.fromarray(np.zeros((16, 24), dtype=np.uint8)).save(
        masks / "photo.png"
    )  # drawn on the stored pixels
    (tmp_path / "r.json").unlink()
    code, err = _run_eval(clip_dir, tmp_path, images, masks, capsys)
    assert code == 2
    assert (
        "EXIF orientation 6 (rotated 90 degrees), its stored pixels are 24x16, which the mask matches" in err
    )
