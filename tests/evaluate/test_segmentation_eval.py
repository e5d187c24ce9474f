"""mIoU (hand-computed, ignore label), bad labelled sets, and the CLIP path end to end through the CLIs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from phreg_hf.cli import main as phreg_main
from phreg_hf.evaluate.label_maps import IGNORED, LabelRule, check_label_size
from phreg_hf.evaluate.segmentation_eval import IoUAccumulator, format_report
from phreg_hf.synthetic_clip import save_planted_artifact_clip, write_synthetic_segmentation_set

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--short_side", "64", "--crop_size", "48", "--stride", "16"]


def test_miou_by_hand_with_ignore_label():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORED, IGNORED]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    iou = IoUAccumulator(num_classes=4)
    iou.update(prediction, target)
    # class 0: TP 1 (0,0), FP 1 (1,1), FN 1 (0,1) -> 1/3; class 1: TP 2, FP 1 (0,1) -> 2/3;
    # class 2: TP 1, FN 1 (1,1) -> 1/2; class 3: absent everywhere -> no IoU. Pixels labelled 255 count nowhere.
    got = iou.per_class_iou()
    assert got[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and math.isnan(got[3])
    assert iou.mean_iou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    iou.update(
        torch.tensor([[3]]), torch.tensor([[0]])
    )  # accumulates over images: class 3 predicted, never true
    assert iou.per_class_iou()[3] == 0.0 and iou.per_class_iou()[0] == pytest.approx(1 / 4)


def test_reduce_labels_and_mask_checks():
    reduce = LabelRule(5, reduce_zero_label=True)
    assert reduce.apply(np.array([[0, 1, 5, 255]]), "a.png").tolist() == [[IGNORED, 0, 4, IGNORED]]
    assert LabelRule(3).apply(np.array([[0, 2, 255]]), "a.png").tolist() == [[0, 2, IGNORED]]
    with pytest.raises(ValueError, match=r"mask of a.png is 2x1 \(width x height\) but the image is 3x1"):
        check_label_size((1, 2), (1, 3), "a.png")
    with pytest.raises(
        ValueError, match="a.png holds the value 3 at 1 pixels, but the class list has 3 classes"
    ):
        LabelRule(3).apply(np.array([[0, 3]]), "a.png")


def distill_cli(base: Path, images: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "examples" / "distill.py"), "--teacher", str(base), "--train_dir"]
    command += [str(images), "--output_dir", str(out), "--num_register_tokens", "2", "--num_views", "4"]
    command += ["--max_steps", "6", "--per_device_train_batch_size", "4", "--report_to", "none"]
    command += ["--checkpointing_steps", "0", "--num_preview_images", "0", "--learning_rate", "3e-3"]
    command += ["--final_learning_rate", "3e-4"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "CLIP image embedding (get_image_features) cosine to the base" in result.stdout


@pytest.mark.slow
def test_distill_segment_and_evaluate_a_clip_student_end_to_end(tmp_path, capsys):
    """A tiny planted-artifact CLIP (random init: the numbers are noise) through every CLI of the CLIP path."""
    base = tmp_path / "base"
    save_planted_artifact_clip(base, image_size=64, patch_size=8)
    images, masks, class_file = write_synthetic_segmentation_set(tmp_path / "data", num_images=3)
    distill_cli(base, images, tmp_path / "student")
    settings = json.loads((tmp_path / "student" / "phreg_training.json").read_text())
    assert settings["clip_dense_mode"] == "naclip" and settings["student_class"] == "PhregCLIPModel"
    assert "custom_pipelines" in json.loads((tmp_path / "student" / "config.json").read_text())
    code = {p.name for p in (tmp_path / "student").glob("*.py")}  # only what trust_remote_code needs travels
    assert code == {
        "configuration_phreg.py",
        "modeling_phreg.py",
        "modeling_phreg_backbone.py",  # imported by modeling_phreg.py (students load as AutoBackbone too)
        "modeling_phreg_registers.py",  # the register mixin, imported by modeling_phreg.py
        "modeling_phreg_clip.py",
        "clip_dense.py",
        "pipeline_phreg_segmentation.py",
    }

    segment = ["segment", "--model", str(tmp_path / "student"), "--images", str(images), *SMALL]
    assert phreg_main(segment + ["--out", str(tmp_path / "seg"), "--labels_file", str(class_file)]) == 0
    assert len(list((tmp_path / "seg" / "labels").iterdir())) == 3

    report_path = tmp_path / "report.json"
    evaluate = ["eval-segmentation", "--model", str(tmp_path / "student"), "--base", str(base), *SMALL]
    evaluate += ["--class_names", str(class_file)]
    folders = ["--images", str(images), "--masks", str(masks)]
    assert phreg_main(evaluate + folders + ["--out", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "base_naclip" in printed
    report = json.loads(report_path.read_text())
    assert set(report["rows"]) == {"base_maskclip", "base_naclip", "student"}
    assert report["num_images"] == 3 and report["classes"] == ["background", "red square", "blue disc"]
    for row in report["rows"].values():
        assert 0.0 <= row["miou"] <= 1.0
    assert format_report(report).splitlines()[-2].startswith("mIoU")

    # Bad labelled sets get errors that name the file and the fix.
    out2 = ["--out", str(tmp_path / "r2.json")]
    bad_masks = tmp_path / "bad_masks"
    bad_masks.mkdir()
    for path in masks.iterdir():
        Image.fromarray(np.array(Image.open(path))[:, :-8]).save(bad_masks / path.name)
    assert phreg_main(evaluate + ["--images", str(images), "--masks", str(bad_masks)] + out2) == 2
    assert "a mask must have its image's size" in capsys.readouterr().err
    for path in masks.iterdir():
        mask = np.array(Image.open(path))
        mask[5, 5] = 7
        Image.fromarray(mask).save(bad_masks / path.name)
    assert phreg_main(evaluate + ["--images", str(images), "--masks", str(bad_masks)] + out2) == 2
    assert "holds the value 7" in capsys.readouterr().err
    empty_lines = tmp_path / "classes_bad.txt"
    empty_lines.write_text("background\n\nred square\n")
    bad_classes = [a if a != str(class_file) else str(empty_lines) for a in evaluate]
    assert phreg_main(bad_classes + folders + out2) == 2
    assert "Line 2 of the class file" in capsys.readouterr().err
    assert phreg_main(evaluate + folders + ["--out", str(report_path)]) == 2  # never overwrites the report
    assert "--overwrite" in capsys.readouterr().err


def test_labelled_images_from_a_datasets_id(tmp_path):
    """--dataset_name (the real `datasets.load_dataset` on a local parquet set, as a Hub set would load), and
    clear errors for a missing column or a missing source."""
    import datasets

    from phreg_hf.evaluate.segmentation_eval import EvalSegmentationArguments, iterate_labelled_images

    images, masks, _ = write_synthetic_segmentation_set(tmp_path / "data", num_images=2)
    names = sorted(p.name for p in images.iterdir())
    table = datasets.Dataset.from_dict(
        {"image": [str(images / n) for n in names], "annotation": [str(masks / n) for n in names]}
    )
    table = table.cast_column("image", datasets.Image()).cast_column("annotation", datasets.Image())
    (tmp_path / "hub_like").mkdir()
    table.to_parquet(str(tmp_path / "hub_like" / "validation.parquet"))
    args = EvalSegmentationArguments(
        model="s",
        base="b",
        class_names="c.txt",
        out=str(tmp_path / "r.json"),
        dataset_name=str(tmp_path / "hub_like"),
    )
    loaded = list(iterate_labelled_images(args))
    assert [name for name, _, _ in loaded] == [f"{tmp_path / 'hub_like'}[0]", f"{tmp_path / 'hub_like'}[1]"]
    want = np.array(Image.open(masks / names[1])).astype(np.int64)
    want[want == 255] = IGNORED  # the rule's ignore value
    assert np.array_equal(loaded[1][2], want)
    assert loaded[0][1].size == (96, 72)
    args.label_column = "segmentation"
    with pytest.raises(ValueError, match="no column 'segmentation'"):
        list(iterate_labelled_images(args))
    with pytest.raises(ValueError, match="Pass either --images DIR --masks DIR, or --dataset_name"):
        EvalSegmentationArguments(model="s", base="b", class_names="c", out="r.json").validate()


def test_phreg_eval_points_a_clip_student_to_eval_segmentation(tmp_path):
    from phreg_hf import PhregCLIPModel
    from phreg_hf.evaluate.artifacts import check_base_matches_student
    from phreg_hf.synthetic_clip import build_planted_artifact_clip

    base = build_planted_artifact_clip(image_size=64, patch_size=8)
    base.save_pretrained(tmp_path / "base")
    PhregCLIPModel.from_base(base, 2).save_pretrained(tmp_path / "student")
    with pytest.raises(ValueError, match="full CLIP student .*phreg eval-segmentation"):
        check_base_matches_student(str(tmp_path / "base"), str(tmp_path / "student"))
