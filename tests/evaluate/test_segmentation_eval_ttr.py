"""`phreg eval-segmentation --test_time_registers DIR` and `phreg benchmark segmentation`'s test-time-registers rows."""

from __future__ import annotations

import json

import pytest

from phreg_hf.cli import main as phreg_main
from phreg_hf.evaluate.presets import SEGMENTATION_ROWS, segmentation_rows
from phreg_hf.evaluate.segmentation_eval import format_report
from phreg_hf.models.modeling_phreg_ttr import PhregTestTimeRegistersModel
from phreg_hf.synthetic_clip import (
    build_planted_artifact_clip,
    build_tiny_clip_processor,
    save_planted_artifact_clip,
    write_synthetic_segmentation_set,
)

SMALL = ["--short_side", "64", "--crop_size", "48", "--stride", "32"]
TTR_ROWS = ("test_time_registers_maskclip", "test_time_registers_naclip")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from phreg_hf import PhregCLIPModel

    root = tmp_path_factory.mktemp("ttr_seg")
    base = save_planted_artifact_clip(root / "base", image_size=64, patch_size=8)
    PhregCLIPModel.from_base(base, 2).save_pretrained(
        root / "student"
    )  # untrained: only the harness is tested
    build_tiny_clip_processor(64).save_pretrained(root / "student")
    for name, neurons, seed in (("ttr0", {}, 0), ("ttr1", {0: [3], 1: [5]}, 0), ("other", {}, 1)):
        clip = build_planted_artifact_clip(image_size=64, patch_size=8, seed=seed)
        PhregTestTimeRegistersModel.from_base(clip, neurons).save_pretrained(root / name)
    images, masks, classes = write_synthetic_segmentation_set(root / "data", num_images=2)
    command = ["eval-segmentation", "--model", str(root / "student"), "--base", str(root / "base"), *SMALL]
    command += [
        "--class_names",
        str(classes),
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--max_images",
        "1",
    ]
    return root, command


def test_rows_only_when_asked_for():
    assert [r.name for r in segmentation_rows()] == ["base_maskclip", "base_naclip", "student"]
    rows = {r.name: r for r in segmentation_rows(True)}
    assert set(TTR_ROWS) <= set(rows) and len(rows) == len(SEGMENTATION_ROWS)
    assert all(rows[n].option == "test_time_registers" and rows[n].paper is None for n in TTR_ROWS)
    assert (rows[TTR_ROWS[0]].mode, rows[TTR_ROWS[1]].mode) == ("maskclip", "naclip")


def test_eval_segmentation_test_time_registers_rows(folders, capsys):
    root, command = folders
    out = root / "r0.json"
    assert phreg_main(command + ["--out", str(out), "--test_time_registers", str(root / "ttr0")]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in TTR_ROWS)
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["base_maskclip", "base_naclip", "student", *TTR_ROWS]
    # No register neuron: the test-time-registers model is its base, to the last pixel.
    for mode in ("maskclip", "naclip"):
        ttr, base = rows[f"test_time_registers_{mode}"], rows[f"base_{mode}"]
        assert (ttr["miou"], ttr["per_class_iou"], ttr["mode"]) == (base["miou"], base["per_class_iou"], mode)
        assert ttr["model"] == str(root / "ttr0")
    out = root / "r1.json"
    assert phreg_main(command + ["--out", str(out), "--test_time_registers", str(root / "ttr1")]) == 0
    report = json.loads(out.read_text())
    assert all(0.0 <= report["rows"][name]["miou"] <= 1.0 for name in TTR_ROWS)
    header = format_report(report).splitlines()[0]
    assert header.split()[1:] == list(report["rows"])
    # The model card's table (dense_reports) carries the rows too.
    from phreg_hf.hub.dense_reports import dense_result_tables

    card = root / "card"
    card.mkdir()
    (card / "phreg_dense_segmentation.json").write_text(out.read_text())
    (table,) = dense_result_tables(card)
    assert [row["model"] for row in table["rows"]][-2:] == list(TTR_ROWS)
    # Without the option there are no such rows.
    assert phreg_main(command + ["--out", str(root / "r2.json")]) == 0
    assert set(json.loads((root / "r2.json").read_text())["rows"]) == {
        "base_maskclip",
        "base_naclip",
        "student",
    }


def test_a_ttr_of_another_base_is_refused(folders, capsys):
    root, command = folders
    assert (
        phreg_main(command + ["--out", str(root / "r3.json"), "--test_time_registers", str(root / "other")])
        == 2
    )
    assert "was not made from --base" in capsys.readouterr().err
    assert not (root / "r3.json").exists()


def test_benchmark_segmentation_passes_the_test_time_registers_through(folders, tmp_path, capsys):
    from phreg_hf.evaluate.benchmark_synthetic import write_benchmark_layout

    root, _ = folders
    write_benchmark_layout(tmp_path / "data", "voc20")
    command = ["benchmark", "segmentation", "--model", str(root / "student"), "--base", str(root / "base"),
               "--data_root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--benchmarks", "voc20",
               "--max_images", "1", *SMALL, "--test_time_registers", str(root / "ttr0")]  # fmt: skip
    assert phreg_main(command) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "phreg_dense_benchmark_segmentation.json").read_text())
    rows = summary["rows"]
    assert list(rows) == ["base_maskclip", "base_naclip", "student", *TTR_ROWS]
    for mode in ("maskclip", "naclip"):
        ttr = rows[f"test_time_registers_{mode}"]
        assert ttr["per_benchmark"] == rows[f"base_{mode}"]["per_benchmark"]
        assert (ttr["model"], ttr["paper_label"]) == (str(root / "ttr0"), None)
    table = [line for line in printed.splitlines() if line.startswith(TTR_ROWS)]
    assert len(table) == 2 and len({len(line) for line in table}) == 1
    assert phreg_main(command) == 0
    assert "voc20: reused" in capsys.readouterr().out
    other = [
        str(root / "ttr1") if a == str(root / "ttr0") else a for a in command
    ]  # another TTR: other models
    assert phreg_main(other) == 2
    assert "other models" in capsys.readouterr().err
