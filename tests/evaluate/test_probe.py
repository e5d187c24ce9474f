"""`phreg probe`: metrics against hand-computed examples, the protocol's pieces, the command end to end on tiny
models, and the bad inputs it must refuse with a message naming the fix."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, make_base
from PIL import Image

import phreg_hf
from phreg_hf.cli import main as phreg_main
from phreg_hf.demos.probe_demo import write_shapes_dataset
from phreg_hf.distill.trainer import build_demo_image_processor
from phreg_hf.evaluate import probe_data
from phreg_hf.evaluate.probe import (
    LinearProbe,
    LinearProbeHead,
    ProbeArguments,
    _window_starts,
    bins_to_depth,
    build_report,
    confusion_matrix,
    depth_image_errors,
    format_probe_table,
    poly_schedule,
    prepare_data,
    probe_main,
    segmentation_scores,
    sig_loss,
)
from phreg_hf.models.modeling_phreg import student_from_base

assert phreg_hf  # registers the students with the Auto classes


# ---------------------------------------------------------------------------------------------------------------
# Metrics against hand-computed values
def test_miou_matches_a_hand_computed_example():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, probe_data.IGNORE_INDEX, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    confusion = confusion_matrix(prediction, target, num_classes=4)
    # rows = truth: class 0: 1 right, 1 as 1; class 1: 2 right, 1 as 2; class 2: 1 right, 1 as 0; 255 skipped.
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(confusion)
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3, IoU_1 = 2 / (3 + 3 - 2) = 1/2, IoU_2 = 1 / (2 + 2 - 1) = 1/3; class 3 absent.
    assert scores["per_class_iou"][:3] == pytest.approx([1 / 3, 1 / 2, 1 / 3])
    assert scores["per_class_iou"][3] is None
    assert scores["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 7) and scores["scored_pixels"] == 7


def test_confusion_matrix_names_the_fix_for_a_class_past_num_classes():
    with pytest.raises(ValueError, match="--num_classes 6"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 5]), num_classes=3)


def test_depth_errors_match_a_hand_computed_example():
    target = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    prediction = torch.tensor([[1.5, 2.0], [2.0, 9.0]])
    valid = target > 0
    rmse, abs_rel, delta1 = depth_image_errors(prediction, target, valid).tolist()
    assert rmse == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3))
    assert abs_rel == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert delta1 == pytest.approx(
        1 / 3
    )  # 1.5 and 2.0 are off by x1.5 and x2; only 2.0 == 2.0 is within 1.25


def test_depth_head_output_stays_in_range_and_sig_loss_is_zero_at_the_truth():
    depth = bins_to_depth(torch.randn(2, 16, 3, 3) * 10, min_depth=0.5, max_depth=4.0)
    assert depth.shape == (2, 1, 3, 3)
    assert float(depth.min()) >= 0.5 and float(depth.max()) <= 4.0
    target = torch.rand(2, 5, 5) + 0.5
    valid = torch.ones_like(target, dtype=torch.bool)
    assert float(sig_loss(target, target, valid)) < 1e-4
    assert float(sig_loss(target * 2, target, valid)) > 0.1  # the 0.15 mean term penalises a global scale


def test_poly_schedule_and_window_grid():
    factor = poly_schedule(100, 1.0)
    assert [factor(0), factor(50), factor(100)] == [1.0, 0.5, 0.0]
    assert poly_schedule(100, 1.0, warmup_steps=4)(1) == 0.5
    assert _window_starts(518, 518, 341) == [0]
    assert _window_starts(1000, 518, 341) == [0, 341, 482]  # the last window is flush with the end
    head = LinearProbeHead(8, 3)
    assert head(torch.randn(2, 8, 4, 5)).shape == (2, 3, 4, 5)


# ---------------------------------------------------------------------------------------------------------------
# Data and augmentation
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_images=8, size=IMAGE_SIZE, seed=0)


def test_shapes_dataset_masks_are_class_indices_of_the_image_size(shapes):
    images, masks = shapes
    mask = np.asarray(Image.open(masks / "000.png"))
    assert mask.shape == (IMAGE_SIZE, IMAGE_SIZE) and set(np.unique(mask)) <= {0, 1, 2, 3}
    assert Image.open(images / "000.png").size == (IMAGE_SIZE, IMAGE_SIZE)


def test_training_crops_are_seeded_per_sample(shapes):
    images, masks = shapes
    source = probe_data.folder_pairs(str(images), str(masks), "--images", "--masks")
    augmentation = probe_data.Augmentation(crop_size=40, short_side=48)
    labels = probe_data.LabelSettings("segmentation")

    def make() -> probe_data.ProbeTrainStream:
        return probe_data.ProbeTrainStream(source, labels, augmentation, (0.5,) * 3, (0.2,) * 3, 20, seed=3)

    first, second = make(), make()
    for index in (0, 7, 19):
        assert torch.equal(first[index]["pixel_values"], second[index]["pixel_values"])
        assert torch.equal(first[index]["labels"], second[index]["labels"])
    assert first[0]["pixel_values"].shape == (3, 40, 40) and first[0]["labels"].shape == (40, 40)
    assert not torch.equal(first[0]["pixel_values"], first[1]["pixel_values"])
    # a crop larger than the rescaled image is padded with the ignore label
    small = probe_data.Augmentation(crop_size=64, short_side=32, min_scale=1.0, max_scale=1.0)
    item = probe_data.ProbeTrainStream(source, labels, small, (0.5,) * 3, (0.2,) * 3, 1)[0]
    assert (item["labels"][32:] == probe_data.IGNORE_INDEX).all()


# ---------------------------------------------------------------------------------------------------------------
# End to end on tiny models
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = make_base("dinov2")
    base.save_pretrained(root / "base")
    student = student_from_base(base, 4)
    student.save_pretrained(root / "student")
    build_demo_image_processor(IMAGE_SIZE).save_pretrained(root / "student")
    return root / "base", root / "student"


def test_phreg_probe_segmentation_prints_one_table_and_writes_the_report(
    tiny_models, shapes, tmp_path, capsys
):
    base, student = tiny_models
    images, masks = shapes
    out = tmp_path / "probe.json"
    code = phreg_main(
        ["probe", "--task", "segmentation", "--base", str(base), "--student", str(student), "--images",
         str(images), "--masks", str(masks), "--crop_size", "48", "--max_steps", "3", "--cached_copies", "2",
         "--feature_cache", "on", "--include_teacher", "--num_views", "2", "--out", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    printed = captured.out
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["base", "teacher", "student"]
    assert report["task"] == "segmentation" and report["primary_metric"] == "mIoU"
    assert report["num_classes"] == 4 and report["num_train_pairs"] == 6 and report["num_eval_pairs"] == 2
    assert report["feature_cache"] is True and report["settings"]["max_steps"] == 3
    for row in report["rows"].values():
        assert 0.0 <= row["mIoU"] <= 1.0 and len(row["per_class_iou"]) == 4
    assert printed.splitlines()[0].split() == ["model", "mIoU", "pixel", "acc", "vs", "base"]
    assert "student" in printed and f"Wrote {out}" in printed


def test_identical_features_give_identical_rows(shapes):
    """Same seed, data, crops and head init: a 0-register student of the base must score exactly as the base."""
    images, masks = shapes
    base = student_from_base(make_base("dinov2"), 0)
    same = student_from_base(make_base("dinov2"), 0)
    args = ProbeArguments(task="segmentation", images=str(images), masks=str(masks), crop_size=48, max_steps=4,
                          short_side=40, feature_cache="off", eval_batch_size=2)  # fmt: skip
    data = prepare_data(args, (0.5,) * 3, (0.25,) * 3, progress=False)
    runner = LinearProbe(args, data, patch_size=8)
    assert not runner.use_cache  # random augmentation: every step is a fresh crop through the backbone
    rows = runner.run({"base": base, "student": same})
    rows["base"].pop("runtime_s"), rows["student"].pop("runtime_s")
    assert rows["base"] == rows["student"]
    assert "vs base" in format_probe_table(build_report(args, runner, rows))


def test_depth_probe_on_npy_and_png_maps(tmp_path):
    images, depths = tmp_path / "images", tmp_path / "depths"
    images.mkdir(), depths.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, 60, 3), dtype=np.uint8)).save(images / f"{i}.png")
        depth = rng.uniform(0.5, 5.0, (IMAGE_SIZE, 60)).astype(np.float32)
        depth[:4] = 0  # no measurement
        if i % 2:
            np.save(depths / f"{i}.npy", depth)  # metres
        else:
            Image.fromarray((depth * 1000).astype(np.uint16)).save(depths / f"{i}.png")  # millimetres
    args = ProbeArguments(task="depth", images=str(images), depths=str(depths), crop_size=48, stride=8,
                          max_steps=3, depth_bins=16, max_depth=6.0, train_val_split=0.5)  # fmt: skip
    data = prepare_data(args, (0.5,) * 3, (0.25,) * 3, progress=False)
    runner = LinearProbe(args, data, patch_size=8)
    rows = runner.run({"base": student_from_base(make_base("dinov2"), 0)})
    assert set(rows["base"]) >= {"rmse", "abs_rel", "delta1"}
    assert 0 < rows["base"]["rmse"] < 6 and 0 <= rows["base"]["delta1"] <= 1
    label = probe_data.decode_depth(depths / "0.png", "x")
    assert label.dtype == np.float32 and 0.5 <= label[10].min() and label[10].max() <= 5.0


# ---------------------------------------------------------------------------------------------------------------
# Bad input
def test_unknown_task_is_refused_with_the_tasks_that_exist(capsys):
    assert probe_main(["--task", "detection", "--base", "b", "--student", "s"]) == 2
    assert (
        "--task 'detection' does not exist; pass --task segmentation or --task depth"
        in capsys.readouterr().err
    )


def test_mask_of_another_size_names_the_file_and_the_fix(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.new("RGB", (40, 30)).save(images / "a.jpg")
    Image.new("L", (20, 15)).save(masks / "a.png")
    source = probe_data.folder_pairs(str(images), str(masks), "--images", "--masks")
    with pytest.raises(ValueError, match=r"a\.jpg is 20x15 .* image is 40x30.*nearest-neighbour"):
        probe_data.check_pairs(source, probe_data.LabelSettings("segmentation"), "training", progress=False)


def test_depth_map_without_valid_pixels_names_the_file_and_the_fix(tmp_path):
    images, depths = tmp_path / "images", tmp_path / "depths"
    images.mkdir(), depths.mkdir()
    Image.new("RGB", (16, 16)).save(images / "room.png")
    np.save(depths / "room.npy", np.full((16, 16), 50.0, dtype=np.float32))  # all beyond max_depth
    source = probe_data.folder_pairs(str(images), str(depths), "--images", "--depths")
    with pytest.raises(ValueError, match=r"room\.png has no valid pixel \(values 50\.\.50.*--depth_scale"):
        probe_data.check_pairs(source, probe_data.LabelSettings("depth"), "training", progress=False)


def test_missing_label_rgb_mask_and_wrong_label_option_are_refused(tmp_path, shapes):
    images, masks = shapes
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with pytest.raises(ValueError, match=r"have no label file .*000\.png"):
        probe_data.folder_pairs(str(images), str(lonely), "--images", "--masks")
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="class indices"):
        probe_data.decode_mask(tmp_path / "rgb.png", "the label of x")
    args = ProbeArguments(task="depth", images=str(images), masks=str(masks))
    with pytest.raises(ValueError, match="--masks does not go with --task depth; pass --depths DIR"):
        probe_data.load_sources(args)
    with pytest.raises(ValueError, match="--crop_size 48 or 56"):
        LinearProbe(ProbeArguments(task="segmentation", crop_size=50), None, patch_size=8)


def test_hub_dataset_columns_are_found_and_read_lazily(monkeypatch, shapes):
    import datasets

    images, masks = shapes
    table = (
        datasets.Dataset.from_dict(
            {
                "image": [str(p) for p in sorted(images.iterdir())],
                "annotation": [str(p) for p in sorted(masks.iterdir())],
            }
        )
        .cast_column("image", datasets.Image())
        .cast_column("annotation", datasets.Image())
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: table)
    args = ProbeArguments(task="segmentation", dataset_name="org/shapes", eval_split="")
    train, evaluation = probe_data.load_sources(args)
    assert len(train) + len(evaluation) == 8 and len(evaluation) == 2
    data = prepare_data(args, (0.5,) * 3, (0.25,) * 3, progress=False)
    assert data.num_classes == 4
    pixels, label = probe_data.load_eval_pair(data.eval, 0, data.labels, None, (0.5,) * 3, (0.25,) * 3)
    assert pixels.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and label.shape == (IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="Pass --label_column"):
        probe_data.hub_pairs("org/shapes", None, "train", "depth")


@pytest.mark.slow
def test_two_processes_print_one_table_and_score_every_image(tiny_models, shapes, tmp_path):
    """`torchrun --nproc_per_node 2` on CPUs: each process caches and trains on its share of the crops and
    scores its share of the images; the sums are reduced, so the scores cover all images, printed once."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    base, student = tiny_models
    images, masks = shapes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "probe.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "phreg_hf.cli", "probe", "--task", "segmentation", "--base", str(base), "--student", str(student),
         "--images", str(images), "--masks", str(masks), "--crop_size", "48", "--max_steps", "3",
         "--feature_cache", "on", "--cached_copies", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("vs base") == 1
    report = json.loads(out.read_text())
    assert report["num_processes"] == 2
    for row in report["rows"].values():  # each held-out pixel scored exactly once across the two processes
        assert row["scored_pixels"] == report["num_eval_pairs"] * IMAGE_SIZE * IMAGE_SIZE
