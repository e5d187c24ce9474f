"""`phreg benchmark` and `eval-segmentation --benchmark` end to end on tiny synthetic sets in every preset's exact
layout and label encoding (the scores of a random-init CLIP mean nothing; the paths, rules and files do)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_base
from PIL import Image

from phreg_hf import PhregCLIPModel
from phreg_hf.cli import main as phreg_main
from phreg_hf.distill.trainer import build_demo_image_processor
from phreg_hf.evaluate import presets
from phreg_hf.evaluate.benchmark_synthetic import write_benchmark_layout, write_probe_layout
from phreg_hf.evaluate.segmentation import save_pretrained_with_pipeline
from phreg_hf.models.modeling_phreg import student_from_base
from phreg_hf.synthetic_clip import build_tiny_clip_processor, save_planted_artifact_clip

SMALL = ["--short_side", "32", "--crop_size", "32", "--stride", "16"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    # One 16-wide layer per tower: the presets send up to 171 classes x 80 prompts through the text tower, and the
    # scores of a random-init CLIP mean nothing here (the paths, rules and files do).
    base = save_planted_artifact_clip(
        root / "base", image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, projection_dim=8
    )
    save_pretrained_with_pipeline(
        PhregCLIPModel.from_base(base, 2), root / "student", build_tiny_clip_processor(32)
    )
    return root / "base", root / "student"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in presets.SEGMENTATION_PRESETS:
        write_benchmark_layout(root, name)
    return root


def seg_command(clips, data_root, out, *extra):
    base, student = clips
    return ["benchmark", "segmentation", "--model", str(student), "--base", str(base), "--data_root",
            str(data_root), "--out", str(out), *SMALL, *extra]  # fmt: skip


def test_synthetic_layouts_use_the_real_encodings(data_root):
    voc = data_root / "VOCdevkit/VOC2012"
    mask = Image.open(next((voc / "SegmentationClass").glob("*.png")))
    assert mask.mode == "P" and 255 in np.asarray(mask) and 0 in np.asarray(mask)
    assert (voc / "ImageSets/Segmentation/val.txt").is_file()
    assert (data_root / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt").is_file()
    assert list((data_root / "coco_object/annotations/val2017").glob("*_instanceTrainIds.png"))
    assert list((data_root / "cityscapes/gtFine/val/frankfurt").glob("*_gtFine_labelTrainIds.png"))
    ade = np.asarray(
        Image.open(next((data_root / "ade/ADEChallengeData2016/annotations/validation").iterdir()))
    )
    assert ade.min() == 0 and ade.max() <= 150


@pytest.mark.slow  # 5-30 s each on a busy CPU: up to 171 classes x 80 prompts through the text tower
@pytest.mark.parametrize("name", list(presets.SEGMENTATION_PRESETS))
def test_each_segmentation_preset_runs_end_to_end(clips, data_root, tmp_path, capsys, name):
    assert phreg_main(seg_command(clips, data_root, tmp_path, "--benchmarks", name)) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "segmentation" / f"{name}.json").read_text())
    preset = presets.SEGMENTATION_PRESETS[name]
    assert report["num_images"] == 2 and len(report["classes"]) == preset.num_classes
    assert report["settings"]["reduce_zero_label"] == preset.reduce_zero_label
    assert report["settings"]["prob_threshold"] == preset.prob_threshold
    assert report["settings"]["resize"] == report["settings"]["position_interpolation"] == "reference"
    assert report["overridden"]["short_side"] == {"preset": preset.short_side, "given": 32}
    assert set(report["rows"]) == {"base_maskclip", "base_naclip", "student"}
    assert f"{preset.paper['PH-Reg']:.2f}" in printed and "paper NACLIP" in printed


@pytest.mark.slow
def test_results_are_reused_refused_or_recomputed_by_fingerprint(clips, data_root, tmp_path, capsys):
    command = seg_command(clips, data_root, tmp_path, "--benchmarks", "voc21,voc20")
    assert phreg_main(command) == 0
    first = (tmp_path / "segmentation" / "voc21.json").read_text()
    summary = json.loads((tmp_path / "phreg_dense_benchmark_segmentation.json").read_text())
    assert summary["benchmarks"] == ["voc21", "voc20"] and summary["rows"]["student"]["miou"] is not None
    capsys.readouterr()
    (tmp_path / "segmentation" / "voc20.json").unlink()  # as if the run was killed during voc20
    assert phreg_main(command) == 0
    out = capsys.readouterr().out
    assert "voc21: reused (same models, data and settings)" in out and "voc20: computing" in out
    assert (tmp_path / "segmentation" / "voc21.json").read_text() == first
    other = [a if a != "16" else "8" for a in command]  # another stride: other settings
    assert phreg_main(other) == 2
    assert "voc21.json holds a result computed with other settings" in capsys.readouterr().err
    assert phreg_main(other + ["--overwrite"]) == 0
    assert "voc21: recomputing (other settings than the stored result)" in capsys.readouterr().out
    base, student = clips
    swapped = [str(base) if a == str(student) else a for a in other]  # the base as the student: other models
    assert phreg_main(swapped) == 2
    assert "other models" in capsys.readouterr().err
    from phreg_hf.hub.dense_reports import dense_result_tables

    tables = {t["file"]: t for t in dense_result_tables(tmp_path)}
    table = tables["phreg_dense_benchmark_segmentation.json"]
    assert table["columns"] == ["VOC21 mIoU (%)", "VOC20 mIoU (%)", "mean mIoU (%)"]


def test_eval_segmentation_with_a_benchmark_preset_and_check_data(clips, data_root, tmp_path, capsys):
    base, student = clips
    command = ["eval-segmentation", "--model", str(student), "--base", str(base), "--benchmark", "context59",
               "--data_root", str(data_root), "--out", str(tmp_path / "r.json"), *SMALL]  # fmt: skip
    assert phreg_main(command) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmark"] == "context59" and len(report["classes"]) == 59
    assert report["settings"]["ignore_index"] == 255 and report["settings"]["reduce_zero_label"] is True
    assert "Overrode the context59 preset: --short_side 32 (preset: 448)" in capsys.readouterr().out
    assert phreg_main(command[:-6] + ["--check_data"]) == 0
    assert "context59 (val): ok" in capsys.readouterr().out


def test_bad_layouts_get_errors_naming_the_path_and_the_fix(clips, tmp_path, capsys):
    root = tmp_path / "data"
    write_benchmark_layout(root, "voc21")
    voc = root / "VOCdevkit/VOC2012"
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    assert phreg_main(seg_command(clips, root, tmp_path / "o", "--benchmarks", "voc21")) == 2
    assert (
        f"the split file {voc / 'ImageSets/Segmentation/val.txt'} does not exist" in capsys.readouterr().err
    )
    write_benchmark_layout(root, "voc21")
    for mask in (voc / "SegmentationClass").iterdir():
        mask.unlink()
    assert phreg_main(seg_command(clips, root, tmp_path / "o", "--benchmarks", "voc21")) == 2
    assert "none of the 2 images has a mask" in capsys.readouterr().err
    write_benchmark_layout(root, "voc21")
    mask_path = next((voc / "SegmentationClass").iterdir())
    mask = Image.open(mask_path)
    values = np.asarray(mask).copy()
    values[3, 3] = 40  # VOC has 21 classes
    bad = Image.fromarray(values, "P")
    bad.putpalette(mask.getpalette())
    bad.save(mask_path)
    assert phreg_main(seg_command(clips, root, tmp_path / "o", "--benchmarks", "voc21", "--check_data")) == 2
    out = capsys.readouterr().out
    assert (
        "voc21 (val): PROBLEMS" in out and "holds the value 40 at 1 pixels, but the class list has 21" in out
    )
    assert phreg_main(seg_command(clips, root, tmp_path / "o", "--benchmarks", "voc12")) == 2
    assert "Unknown segmentation benchmark 'voc12'; known: voc21, context60" in capsys.readouterr().err
    assert phreg_main(seg_command(clips, tmp_path / "empty", tmp_path / "o", "--benchmarks", "ade20k")) == 2
    assert "--data_root" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Linear probes (Table 2)
@pytest.fixture(scope="module")
def dinos(tmp_path_factory):
    root = tmp_path_factory.mktemp("dinos")
    base = make_base("dinov2")
    base.save_pretrained(root / "base")
    student_from_base(base, 2).save_pretrained(root / "student")
    build_demo_image_processor(56).save_pretrained(root / "student")
    return root / "base", root / "student"


@pytest.mark.slow
def test_probe_presets_run_end_to_end_and_print_table_2(dinos, tmp_path, capsys):
    for name in presets.PROBE_PRESETS:
        write_probe_layout(tmp_path / "data", name)
    base, student = dinos
    command = ["benchmark", "probe", "--base", str(base), "--student", str(student), "--data_root",
               str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--max_steps", "2", "--crop_size", "16",
               "--stride", "8", "--short_side", "24"]  # fmt: skip
    assert phreg_main([*command, "--check_data"]) == 0
    checked = capsys.readouterr().out
    assert "nyu_depth (nyu_test.txt (654)): ok" in checked and "6 of 6 splits ok" in checked
    assert phreg_main(command) == 0
    printed = capsys.readouterr().out
    assert "paper DINOv2-B" in printed and "84.13" in printed and "0.4306" in printed
    voc = json.loads((tmp_path / "out" / "probe" / "voc21.json").read_text())
    assert voc["num_classes"] == 21 and voc["num_train_pairs"] == 3 and voc["num_eval_pairs"] == 2
    nyu = json.loads((tmp_path / "out" / "probe" / "nyu_depth.json").read_text())
    assert nyu["settings"]["eval_crop"] == "45,471,41,601" and nyu["settings"]["max_depth"] == 10.0
    assert {"rmse", "abs_rel", "delta1"} <= set(nyu["rows"]["student"])
    ade = json.loads((tmp_path / "out" / "probe" / "ade20k.json").read_text())
    assert ade["settings"]["reduce_zero_label"] is True and ade["overridden"]["max_steps"]["preset"] == 40000
