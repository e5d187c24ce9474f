"""`--ttr_images DIR` in `phreg eval` and `phreg eval-segmentation` / `phreg benchmark segmentation`: the
test-time-registers model built on the fly from --base (the neurons printed and recorded), both sources at once
refused, and a benchmark fingerprint that changes with the images and the settings (`phreg probe` and
`phreg benchmark probe`: tests/evaluate/test_probe_test_time_registers.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from hub_helpers import image_processor
from models.test_test_time_registers import PLANTED_LAYER, PLANTED_NEURON, planted_signed_dinov2
from PIL import Image

from phreg_hf.cli import main as phreg_main
from phreg_hf.evaluate import ttr_rows
from phreg_hf.models.modeling_phreg import student_from_base

TTR_ROWS = ("test_time_registers_maskclip", "test_time_registers_naclip")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ttr_fly")
    base = planted_signed_dinov2()  # moving its planted neuron changes what `phreg eval` measures
    for name, model in (("base", base), ("student", student_from_base(base, 2))):
        model.save_pretrained(root / name)
        image_processor().save_pretrained(root / name)
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return root


def test_phreg_eval_builds_the_row_on_the_fly_and_records_it(folders, capsys):
    root = folders
    common = ["eval", "--base", str(root / "base"), "--student", str(root / "student")]
    common += ["--images", str(root / "images"), "--num_views", "2", "--max_images", "2"]
    out = root / "eval.json"
    extra = ["--ttr_images", str(root / "images"), "--ttr_min_images", "4"]
    assert phreg_main([*common, *extra, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "built on the fly on 4 images" in printed and f"  block  {PLANTED_LAYER}: {PLANTED_NEURON}" in printed
    )
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert list(rows) == ["base", "teacher", "student", "test_time_registers"]
    assert abs(rows["test_time_registers"]["teacher_agreement"] - rows["base"]["teacher_agreement"]) > 0.01
    record = report["test_time_registers"]
    assert record["source"] == "built on the fly" and record["images"] == str(root / "images")
    assert record["register_neurons"][str(PLANTED_LAYER)][0] == PLANTED_NEURON
    assert record["search_settings"]["norm_threshold"] == 30.0  # the published default
    # Both sources at once: refused, naming both options.
    assert phreg_main([*common, *extra, "--test_time_registers", str(root / "base")]) == 2
    err = capsys.readouterr().err
    assert "--test_time_registers DIR" in err and "--ttr_images DIR" in err and "not both" in err


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from phreg_hf import PhregCLIPModel
    from phreg_hf.synthetic_clip import (
        build_tiny_clip_processor,
        save_planted_artifact_clip,
        write_synthetic_segmentation_set,
    )

    root = tmp_path_factory.mktemp("ttr_fly_clip")
    base = save_planted_artifact_clip(root / "base", image_size=64, patch_size=8)
    PhregCLIPModel.from_base(base, 2).save_pretrained(root / "student")
    build_tiny_clip_processor(64).save_pretrained(root / "student")
    images, masks, classes = write_synthetic_segmentation_set(root / "data", num_images=2)
    small = ["--short_side", "64", "--crop_size", "48", "--stride", "32", "--max_images", "1"]
    common = ["--model", str(root / "student"), "--base", str(root / "base"), *small]
    common += ["--ttr_images", str(images), "--ttr_min_images", "2"]
    return root, images, masks, classes, common


@pytest.fixture
def every_patch_an_outlier(monkeypatch):
    # The tiny CLIP's norms stay far below the published threshold: every patch counts as an outlier here.
    published = ttr_rows.search_settings
    monkeypatch.setattr(ttr_rows, "search_settings", lambda base: {**published(base), "norm_threshold": 0.0})


def test_eval_segmentation_builds_the_rows_on_the_fly(clips, every_patch_an_outlier, tmp_path, capsys):
    root, images, masks, classes, common = clips
    out = tmp_path / "seg.json"
    command = ["eval-segmentation", *common, "--class_names", str(classes), "--images", str(images)]
    assert phreg_main([*command, "--masks", str(masks), "--out", str(out)]) == 0
    assert "built on the fly on 2 images" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert list(report["rows"])[-2:] == list(TTR_ROWS)
    assert all(0.0 <= report["rows"][name]["miou"] <= 1.0 for name in TTR_ROWS)
    named = report["rows"][TTR_ROWS[0]]["model"]
    assert named == f"{root / 'base'} + test-time registers found on {images}"
    assert report["test_time_registers"]["source"] == "built on the fly"


def test_benchmark_segmentation_builds_the_rows_on_the_fly(clips, every_patch_an_outlier, tmp_path):
    from phreg_hf.evaluate.benchmark_synthetic import write_benchmark_layout

    root, images, _, _, common = clips
    write_benchmark_layout(tmp_path / "bench", "voc20")
    bench = [
        "benchmark",
        "segmentation",
        *common,
        "--data_root",
        str(tmp_path / "bench"),
        "--benchmarks",
        "voc20",
    ]
    assert phreg_main([*bench, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "phreg_dense_benchmark_segmentation.json").read_text())
    assert list(summary["rows"])[-2:] == list(TTR_ROWS)
    assert summary["test_time_registers"]["images"] == str(images)


def test_the_fingerprint_follows_base_images_and_settings(folders, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(folders / "images", images)
    args = SimpleNamespace(base="B", test_time_registers=None, ttr_images=str(images), ttr_min_images=4)
    first = ttr_rows.on_the_fly_fingerprint(args, "base-sha")
    assert first == ttr_rows.on_the_fly_fingerprint(args, "base-sha")
    assert first != ttr_rows.on_the_fly_fingerprint(args, "other-base-sha")
    assert first != ttr_rows.on_the_fly_fingerprint(
        SimpleNamespace(**{**vars(args), "ttr_min_images": 3}), "base-sha"
    )
    published = SimpleNamespace(**{**vars(args), "base": "facebook/dinov2-large"})  # its published settings
    assert first != ttr_rows.on_the_fly_fingerprint(published, "base-sha")
    (images / "0.png").write_bytes((images / "0.png").read_bytes() + b"\0")
    assert first != ttr_rows.on_the_fly_fingerprint(args, "base-sha")
