"""Benchmark presets: the shipped class files, the settings table, and the reference resize / interpolation rules
checked against formulas written here."""

from __future__ import annotations

import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from phreg_hf.evaluate import presets
from phreg_hf.models.clip_dense import position_interpolation, reference_position_embeddings
from phreg_hf.models.pipeline_phreg_segmentation import reference_rescale_size, reference_resize
from phreg_hf.synthetic_clip import build_tiny_clip_tokenizer

REPO = Path(__file__).resolve().parents[2]


def test_class_files_have_the_reference_counts_and_synonyms():
    counts = {name: len(presets.class_names(p)) for name, p in presets.SEGMENTATION_PRESETS.items()}
    assert counts == {"voc21": 21, "context60": 60, "coco_object": 81, "voc20": 20, "context59": 59,
                      "coco_stuff": 171, "cityscapes": 19, "ade20k": 150}  # fmt: skip
    assert all(p.num_classes == counts[n] for n, p in presets.SEGMENTATION_PRESETS.items())
    voc21 = presets.class_names(presets.SEGMENTATION_PRESETS["voc21"])
    stuff_words = ["sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk",
                   "bed", "building", "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain",
                   "stair", "floor", "hill", "rail", "fence"]  # fmt: skip
    assert voc21[0] == stuff_words
    person = ["person", "person in shirt", "person in jeans", "person in dress", "person in sweater",
              "person in skirt", "person in jacket"]  # fmt: skip
    assert voc21[15] == person
    assert voc21[20] == ["television monitor", "tv monitor", "monitor", "television", "screen"]
    coco_object = presets.class_names(presets.SEGMENTATION_PRESETS["coco_object"])
    assert coco_object[0] == stuff_words and coco_object[1] == [*person, "body"]
    voc20 = presets.class_names(presets.SEGMENTATION_PRESETS["voc20"])
    assert voc20[14] == person and voc20[19] == voc21[20]
    context60 = presets.class_names(presets.SEGMENTATION_PRESETS["context60"])
    assert context60[0] == ["background"] and context60[59] == ["wood"]  # the file's "wood " is stripped


def test_stripping_context60s_trailing_space_changes_no_clip_token():
    """The reference prompts read "a photo of a wood ."; CLIP's tokenizer splits off punctuation and drops spaces,
    so "a photo of a wood." gives the same tokens (checked with the byte-level tokenizer, CLIP's pre-tokenizer)."""
    tokenizer = build_tiny_clip_tokenizer()
    assert tokenizer("a photo of a wood .")["input_ids"] == tokenizer("a photo of a wood.")["input_ids"]


def test_the_preset_table_holds_the_reference_settings():
    table = {n: (p.short_side, p.crop_size, p.stride, p.prob_threshold, p.reduce_zero_label)
             for n, p in presets.SEGMENTATION_PRESETS.items()}  # fmt: skip
    assert table == {
        "voc21": (448, 336, 112, 0.1, False),
        "context60": (448, 336, 112, 0.1, False),
        "coco_object": (336, 336, 112, 0.1, False),
        "voc20": (336, 336, 112, 0.0, True),
        "context59": (448, 336, 112, 0.0, True),
        "coco_stuff": (448, 336, 112, 0.0, False),
        "cityscapes": (560, 224, 112, 0.0, False),
        "ade20k": (448, 336, 112, 0.0, True),
    }
    for preset in presets.SEGMENTATION_PRESETS.values():
        assert preset.logit_scale == 40.0 and preset.ignore_index == 255 and preset.split == "val"
        assert (preset.resize, preset.position_interpolation) == ("reference", "reference")
    assert (
        presets.SEGMENTATION_PRESETS["context60"].layout.split_file == "ImageSets/SegmentationContext/val.txt"
    )
    assert presets.SEGMENTATION_PRESETS["coco_object"].layout.mask_suffix == "_instanceTrainIds.png"
    means = {label: round(sum(p.paper[label] for p in presets.SEGMENTATION_PRESETS.values()) / 8, 2)
             for label in ("MaskCLIP", "NACLIP", "PH-Reg")}  # fmt: skip
    assert means == {"MaskCLIP": 32.21, "NACLIP": 39.41, "PH-Reg": 41.85}  # the paper's Table 1 means
    probe = presets.PROBE_PRESETS
    assert (
        probe["voc21"].train.split_file == "ImageSets/Segmentation/train.txt"
        and probe["voc21"].max_steps == 20000
    )
    assert probe["ade20k"].max_steps == 40000 and probe["ade20k"].reduce_zero_label
    assert probe["nyu_depth"].eval_crop == (45, 471, 41, 601) and probe["nyu_depth"].max_depth == 10.0
    assert probe["nyu_depth"].paper["rmse"] == {"base": 0.4566, "student": 0.4306}
    with pytest.raises(ValueError, match="Unknown segmentation benchmark 'voc12'; known: voc21, context60"):
        presets.select(presets.SEGMENTATION_PRESETS, "voc21,voc12", "segmentation")


def test_reference_resize_size_and_pixels_follow_mmcv_imrescale():
    for (height, width, short), want in [((375, 500, 448), (448, 597)), ((1024, 2048, 560), (560, 1120)),
                                         ((375, 500, 336), (336, 448)), ((100, 1000, 448), (205, 2048))]:  # fmt: skip
        factor = min(2048 / max(height, width), short / min(height, width))
        assert reference_rescale_size(height, width, short) == want == (int(height * factor + 0.5),
                                                                        int(width * factor + 0.5))  # fmt: skip
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 7, 9)).astype(np.float64)
    out_h, out_w = 5, 13
    got = reference_resize(torch.from_numpy(image).to(torch.uint8), (out_h, out_w)).numpy()

    def axis(out_size, in_size):  # half-pixel centres, clamped at the borders (OpenCV INTER_LINEAR)
        src = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0)
        low = np.minimum(np.floor(src).astype(int), in_size - 1)
        return low, np.minimum(low + 1, in_size - 1), src - low

    y0, y1, wy = axis(out_h, 7)
    x0, x1, wx = axis(out_w, 9)
    want = np.empty((3, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            top = image[:, y0[i], x0[j]] * (1 - wx[j]) + image[:, y0[i], x1[j]] * wx[j]
            bottom = image[:, y1[i], x0[j]] * (1 - wx[j]) + image[:, y1[i], x1[j]] * wx[j]
            want[:, i, j] = np.floor(top * (1 - wy[i]) + bottom * wy[i] + 0.5)
    assert np.abs(got - want).max() <= 1e-3  # whole uint8 values, equal up to float32 rounding at .5 ties


def _cubic(t: float, a: float = -0.75) -> list[float]:
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def test_reference_position_interpolation_is_bicubic_with_scale_factor_n_plus_0_1_over_n():
    side, dim, rows, cols = 4, 3, 3, 5
    table = torch.randn(1 + side * side, dim, dtype=torch.float64)
    got = reference_position_embeddings(table, (rows, cols))
    grid = table[1:].reshape(side, side, dim).numpy()

    def weights(out_size):  # source = (dst + 0.5) * side / (n + 0.1) - 0.5, indices clamped
        result = []
        for dst in range(out_size):
            src = (dst + 0.5) * side / (out_size + 0.1) - 0.5
            base = math.floor(src)
            result.append(
                [(min(max(base - 1 + k, 0), side - 1), w) for k, w in enumerate(_cubic(src - base))]
            )
        return result

    want = np.zeros((rows, cols, dim))
    for i, row_taps in enumerate(weights(rows)):
        for j, col_taps in enumerate(weights(cols)):
            for r, wr in row_taps:
                for c, wc in col_taps:
                    want[i, j] += wr * wc * grid[r, c]
    assert torch.equal(got[0], table[0])  # CLS position unchanged and first
    np.testing.assert_allclose(got[1:].reshape(rows, cols, dim).numpy(), want, atol=1e-10)
    assert torch.equal(reference_position_embeddings(table, (side, side)), table)  # native grid: as stored
    size_rule = torch.nn.functional.interpolate(
        torch.from_numpy(grid).permute(2, 0, 1)[None], size=(rows, cols), mode="bicubic", align_corners=False
    )[0].permute(1, 2, 0)
    assert not torch.allclose(size_rule, got[1:].reshape(rows, cols, dim))  # it is another rule than size=


def test_position_interpolation_switch_changes_only_off_native_sizes_and_restores_the_model():
    from phreg_hf import PhregCLIPModel
    from phreg_hf.synthetic_clip import build_planted_artifact_clip

    clip = PhregCLIPModel.from_base(build_planted_artifact_clip(image_size=32, patch_size=8), 0)
    native, other = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        plain = [clip.get_dense_image_features(x) for x in (native, other)]
        with position_interpolation(clip, "reference"):
            reference = [clip.get_dense_image_features(x) for x in (native, other)]
        after = clip.get_dense_image_features(other)
    assert torch.equal(plain[0], reference[0]) and not torch.allclose(plain[1], reference[1])
    assert torch.equal(after, plain[1])
    assert "interpolate_pos_encoding" not in vars(clip.vision_model.embeddings)


@pytest.mark.slow
def test_the_wheel_ships_the_class_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(REPO),
                             "-w", str(tmp_path)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("phreg_hf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("phreg_hf/evaluate/class_names/"))
    assert shipped == sorted(p.name for p in presets.CLASS_NAMES_DIR.glob("*.txt")) and len(shipped) == 8
