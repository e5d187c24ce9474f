"""`phreg probe` on the inputs a careless or adversarial user gives: no replaced file, no dropped image, no
traceback, no report lost at the last step (issue 18, items 1, 2, 4, 11, 12)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import IMAGE_SIZE, make_base
from PIL import Image

from phreg_hf.cli import main as phreg_main
from phreg_hf.demos.probe_demo import write_shapes_dataset
from phreg_hf.distill.trainer import build_demo_image_processor
from phreg_hf.evaluate import probe_data
from phreg_hf.evaluate.probe import finite_report, format_probe_table, write_report
from phreg_hf.file_checks import check_output_file
from phreg_hf.models.modeling_phreg import student_from_base


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = make_base("dinov2")
    base.save_pretrained(root / "base")
    student_from_base(base, 2).save_pretrained(root / "student")
    build_demo_image_processor(IMAGE_SIZE).save_pretrained(root / "student")
    return root / "base", root / "student"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_images=4, size=IMAGE_SIZE, seed=0)


def probe_argv(base, student, images, masks, out) -> list[str]:
    return ["probe", "--task", "segmentation", "--base", str(base), "--student", str(student), "--images",
            str(images), "--masks", str(masks), "--crop_size", "48", "--max_steps", "1", "--cached_copies", "1",
            "--feature_cache", "on", "--out", str(out)]  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------
# Item 1: --out onto an existing file
def test_out_onto_a_file_of_the_model_folder_is_refused_even_with_overwrite(models, shapes, capsys):
    base, student = models
    config = (student / "config.json").read_bytes()
    for extra in ([], ["--overwrite"]):
        assert phreg_main(probe_argv(base, student, *shapes, student / "config.json") + extra) == 2
        assert "is a file of the model folder" in capsys.readouterr().err
    assert (student / "config.json").read_bytes() == config


def test_out_onto_an_existing_report_needs_overwrite(models, shapes, tmp_path, capsys):
    base, student = models
    out = tmp_path / "report.json"
    out.write_text('{"mine": true}')
    assert phreg_main(probe_argv(base, student, *shapes, out)) == 2
    assert f"--out {out} already exists; pass --overwrite" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"mine": True}
    assert phreg_main(probe_argv(base, student, *shapes, out) + ["--overwrite"]) == 0
    assert json.loads(out.read_text())["task"] == "segmentation"


def test_check_output_file(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_phreg.py",
        "tokenizer.json",
        "phreg_training.json",
    ):
        with pytest.raises(ValueError, match="refused even with --overwrite"):
            check_output_file(model / name, overwrite=True)
    assert check_output_file(model / "phreg_dense_voc.json") == model / "phreg_dense_voc.json"
    assert check_output_file(tmp_path / "config.json")  # a folder without a model: an ordinary new file
    with pytest.raises(ValueError, match="is a folder"):
        check_output_file(model)


# ------------------------------------------------------------------------------------------------------------------
# Item 2: two images of one stem
def test_two_images_pairing_with_one_mask_are_refused_naming_both(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.new("RGB", (8, 8)).save(images / "x.jpg")
    Image.new("RGB", (8, 8)).save(images / "x.png")
    Image.new("L", (8, 8)).save(masks / "x.png")
    with pytest.raises(ValueError, match=r"--images .* holds x\.jpg and x\.png: .* both would pair as 'x'"):
        probe_data.folder_pairs(str(images), str(masks), "--images", "--masks")
    (images / "x.png").unlink()
    np.save(masks / "x.npy", np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"--masks .* holds x\.npy and x\.png"):
        probe_data.folder_pairs(str(images), str(masks), "--images", "--masks")


# ------------------------------------------------------------------------------------------------------------------
# Item 4: images upright, as every command decodes them
def test_an_exif_rotated_image_pairs_with_its_upright_mask(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 x 30, shown 30 x 40
    Image.new("RGB", (40, 30), "red").save(images / "photo.png", exif=exif)
    Image.new("L", (30, 40)).save(masks / "photo.png")
    source = probe_data.folder_pairs(str(images), str(masks), "--images", "--masks")
    probe_data.check_pairs(source, probe_data.LabelSettings("segmentation"), "training", progress=False)
    assert probe_data.decode_rgb(images / "photo.png", "photo").size == (30, 40)
    Image.new("L", (40, 30)).save(masks / "photo.png")  # a mask of the stored, sideways pixels
    with pytest.raises(
        ValueError,
        match=r"EXIF orientation 6 \(rotated 90 degrees\), its stored pixels are 40x30, which the mask matches",
    ):
        probe_data.check_pairs(source, probe_data.LabelSettings("segmentation"), "training", progress=False)


# ------------------------------------------------------------------------------------------------------------------
# Items 11, 12: clear errors, and a report that survives a NaN
def test_a_truncated_weight_file_is_named(models, shapes, tmp_path, capsys):
    base, student = models
    broken = tmp_path / "student"
    shutil.copytree(student, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:-64])
    assert phreg_main(probe_argv(base, broken, *shapes, tmp_path / "r.json")) == 2
    assert f"{broken / 'model.safetensors'}" in capsys.readouterr().err


def test_an_empty_or_corrupt_depth_npy_is_named(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    for name in ("empty.npy", "corrupt.npy"):
        with pytest.raises(ValueError, match=rf"{name}\) is not a readable \.npy array.*numpy\.save"):
            probe_data.decode_depth(tmp_path / name, "the label of x.png")


def test_a_missing_absolute_model_path_is_a_missing_folder(models, shapes, tmp_path, capsys):
    base, _ = models
    assert phreg_main(probe_argv(base, tmp_path / "gone", *shapes, tmp_path / "r.json")) == 2
    err = capsys.readouterr().err
    assert f"--student {tmp_path / 'gone'} does not exist" in err and "Repo id" not in err


def test_a_nan_metric_is_written_as_null_and_named(tmp_path):
    report = {
        "task": "depth",
        "rows": {"base": {"rmse": 0.5, "abs_rel": 0.1, "delta1": 0.9},
                 "student": {"rmse": math.nan, "abs_rel": math.inf, "delta1": 0.8}},
        "num_train_pairs": 3, "train_data": "d", "num_eval_pairs": 1, "eval_data": "e", "crop_size": 48,
        "stride": 32, "settings": {"max_steps": 2},
    }  # fmt: skip
    path = write_report(tmp_path / "depth.json", report)
    written = json.loads(path.read_text())
    assert written["rows"]["student"] == {"rmse": None, "abs_rel": None, "delta1": 0.8}
    assert written["rows"]["base"]["rmse"] == 0.5
    assert written["non_finite"] == ["rows.student.rmse", "rows.student.abs_rel"]
    assert finite_report(report)[1] == written["non_finite"]
    table = format_probe_table(written)  # the card and a reprint read the written report
    assert table.splitlines()[-2].split() == ["student", "-", "-", "80.00"]
