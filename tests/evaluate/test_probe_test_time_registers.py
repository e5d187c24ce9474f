"""`phreg probe` and `phreg benchmark probe` with the test-time-registers row: a saved folder
(`--test_time_registers`, refused unless made from `--base`) or one built on the fly (`--ttr_images`); the row
reaches the model card's table."""

from __future__ import annotations

import json

import pytest
from conftest import IMAGE_SIZE, make_base
from hub_helpers import image_processor
from models.test_test_time_registers import PLANTED_LAYER, PLANTED_NEURON, planted_dinov2

from phreg_hf import PhregTestTimeRegistersModel
from phreg_hf.cli import main as phreg_main
from phreg_hf.demos.probe_demo import write_shapes_dataset
from phreg_hf.models.modeling_phreg import student_from_base

ROWS = ["base", "student", "test_time_registers"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_ttr")
    planted_dinov2().save_pretrained(root / "base")
    student_from_base(planted_dinov2(), 2).save_pretrained(root / "student")
    for name in ("base", "student"):
        image_processor().save_pretrained(root / name)
    PhregTestTimeRegistersModel.from_base(
        planted_dinov2(), {PLANTED_LAYER: [PLANTED_NEURON]}
    ).save_pretrained(root / "ttr")
    PhregTestTimeRegistersModel.from_base(make_base("dinov2", seed=1), {}).save_pretrained(root / "other")
    images, masks = write_shapes_dataset(root / "shapes", num_images=3, size=IMAGE_SIZE, seed=0)
    return root, images, masks


def probe_command(root, images, masks, out, *extra):
    return ["probe", "--task", "segmentation", "--base", str(root / "base"), "--student", str(root / "student"),
            "--images", str(images), "--masks", str(masks), "--crop_size", "48", "--max_steps", "2",
            "--feature_cache", "on", "--cached_copies", "1", "--out", str(out), *extra]  # fmt: skip


def test_the_row_appears_with_numbers_and_reaches_the_model_card(folders, tmp_path, capsys):
    root, images, masks = folders
    out = tmp_path / "phreg_dense_probe.json"
    code = phreg_main(probe_command(root, images, masks, out, "--test_time_registers", str(root / "ttr")))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ROWS
    row = report["rows"]["test_time_registers"]
    assert 0.0 <= row["mIoU"] <= 1.0 and len(row["per_class_iou"]) == 4
    record = report["test_time_registers"]
    assert record["source"] == "folder" and record["folder"] == str(root / "ttr")
    assert record["register_neurons"] == {str(PLANTED_LAYER): [PLANTED_NEURON]}
    lines = {line.split()[0]: line for line in captured.out.splitlines()[3:6]}
    assert list(lines) == ROWS and len(lines["student"]) == len(lines["test_time_registers"])  # aligned
    from phreg_hf.hub.dense_reports import dense_result_tables

    (card,) = dense_result_tables(tmp_path)
    assert [r["model"] for r in card["rows"]] == ROWS
    assert all(cell != "n/a" for cell in card["rows"][-1]["cells"])


def test_a_folder_not_made_from_the_base_is_refused(folders, tmp_path, capsys):
    root, images, masks = folders
    out = tmp_path / "r.json"
    assert (
        phreg_main(probe_command(root, images, masks, out, "--test_time_registers", str(root / "other"))) == 2
    )
    assert "was not made from --base" in capsys.readouterr().err
    assert (
        phreg_main(probe_command(root, images, masks, out, "--test_time_registers", str(root / "student")))
        == 2
    )
    assert "not a test-time-registers model" in capsys.readouterr().err
    assert not out.exists()
