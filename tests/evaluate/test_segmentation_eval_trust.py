"""`phreg eval-segmentation` must not report another model's rows as the base, an mIoU of a broken model, or images
decoded unlike every other command (issue 18, items 1, 4, 8, 9, 12)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from phreg_hf.cli import main as phreg_main
from phreg_hf.data import open_image
from phreg_hf.evaluate.segmentation_eval import EvalSegmentationArguments, iterate_labelled_images
from phreg_hf.synthetic_clip import save_planted_artifact_clip, write_synthetic_segmentation_set

SMALL = ["--short_side", "32", "--crop_size", "32", "--stride", "16"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return write_synthetic_segmentation_set(tmp_path_factory.mktemp("labelled"), num_images=1)


def evaluate(model, base, labelled, out, *extra) -> int:
    images, masks, class_file = labelled
    argv = ["eval-segmentation", "--model", str(model), "--base", str(base), "--class_names", str(class_file)]
    argv += ["--images", str(images), "--masks", str(masks), "--out", str(out), *SMALL]
    return phreg_main(argv + list(extra))


def test_a_base_the_student_was_not_distilled_from_is_refused(tiny_clip_folders, labelled, tmp_path, capsys):
    base, student = tiny_clip_folders
    other = tmp_path / "other_clip"
    save_planted_artifact_clip(other, image_size=64, patch_size=8, seed=1)  # same shapes, other weights
    assert evaluate(student, other, labelled, tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert f"--model {student} was not distilled from --base {other}" in err
    assert not (tmp_path / "r.json").exists()
    assert evaluate(student, student, labelled, tmp_path / "r.json") == 2  # a student as the "base"
    assert "is itself a PH-Reg CLIP student" in capsys.readouterr().err


def test_a_student_with_a_nan_weight_gets_no_miou(tiny_clip_folders, labelled, tmp_path, capsys):
    base, student = tiny_clip_folders
    broken = tmp_path / "broken"
    shutil.copytree(student, broken)
    state = load_file(broken / "model.safetensors")
    state["dense_value_path.v_proj.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    assert evaluate(broken, base, labelled, tmp_path / "r.json") == 2
    assert "the weight dense_value_path.v_proj.weight holds NaN or inf" in capsys.readouterr().err
    assert evaluate(student, base, labelled, tmp_path / "r.json", "--prob_threshold", "2") == 2
    assert "--prob_threshold must be a probability in [0, 1]" in capsys.readouterr().err


def test_out_onto_a_file_of_a_model_folder_is_refused_even_with_overwrite(
    tiny_clip_folders, labelled, capsys
):
    base, student = tiny_clip_folders
    config = (student / "config.json").read_bytes()
    assert evaluate(student, base, labelled, student / "config.json", "--overwrite") == 2
    assert "is a file of the model folder" in capsys.readouterr().err
    assert (student / "config.json").read_bytes() == config


def test_images_are_decoded_as_every_command_decodes_them(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    ramp = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 80).astype(np.uint16)
    Image.fromarray(ramp).save(images / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (32, 24), "blue").save(images / "turned.png", exif=exif)
    Image.new("L", (32, 24)).save(masks / "grey16.png")
    Image.new("L", (24, 32)).save(masks / "turned.png")
    args = EvalSegmentationArguments(
        model="m",
        base="b",
        class_names="c",
        out=str(tmp_path / "r.json"),
        images=str(images),
        masks=str(masks),
    )
    decoded = {name: image for name, image, _ in iterate_labelled_images(args)}
    grey = np.asarray(decoded["grey16.png"])
    assert np.array_equal(grey, np.asarray(open_image(images / "grey16.png"))) and grey.max() < 255
    assert decoded["turned.png"].size == (24, 32)  # upright, the size of its upright mask
    data = (images / "grey16.png").read_bytes()
    (images / "grey16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"grey16\.png cannot be read"):
        list(iterate_labelled_images(args))


def test_two_masks_for_one_image_are_refused_naming_both(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.new("RGB", (32, 24)).save(images / "a.jpg")
    Image.new("L", (32, 24)).save(masks / "a.png")
    args = EvalSegmentationArguments(
        model="m",
        base="b",
        class_names="c",
        out=str(tmp_path / "r.json"),
        images=str(images),
        masks=str(masks),
    )
    assert [name for name, _, _ in iterate_labelled_images(args)] == ["a.jpg"]
    Image.new("L", (32, 24)).save(masks / "a.bmp")
    with pytest.raises(ValueError, match=r"2 masks for a\.jpg: a\.png, a\.bmp"):
        list(iterate_labelled_images(args))
