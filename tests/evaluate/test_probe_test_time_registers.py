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


def test_built_on_the_fly_from_the_base_and_images(folders, tmp_path, capsys):
    root, images, masks = folders
    out = tmp_path / "fly.json"
    extra = ["--ttr_images", str(images), "--ttr_min_images", "3"]
    code = phreg_main(probe_command(root, images, masks, out, *extra))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert f"built on the fly on 3 images of {images}" in captured.out
    assert f"  block  {PLANTED_LAYER}: {PLANTED_NEURON}" in captured.out  # the planted neuron ranks first
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ROWS and 0.0 <= report["rows"]["test_time_registers"]["mIoU"] <= 1.0
    record = report["test_time_registers"]
    assert (record["source"], record["images"], record["min_images"]) == ("built on the fly", str(images), 3)
    assert record["register_neurons"][str(PLANTED_LAYER)][0] == PLANTED_NEURON
    assert record["search_settings"]["num_images"] == 3 and record["search_settings"]["top_k"] == 10
    # Both sources at once, or too few images for the search, are refused before any training.
    both = probe_command(root, images, masks, out, *extra, "--test_time_registers", str(root / "ttr"))
    assert phreg_main(both) == 2
    assert "not both" in capsys.readouterr().err
    assert (
        phreg_main(probe_command(root, images, masks, tmp_path / "few.json", "--ttr_images", str(images)))
        == 2
    )
    assert "holds 3 image files, fewer than --ttr_min_images=100" in capsys.readouterr().err


def test_benchmark_probe_row_and_its_fingerprint_follow_the_images(folders, tmp_path, capsys):
    import shutil

    from phreg_hf.evaluate.benchmark_synthetic import write_probe_layout

    root, images, _ = folders
    write_probe_layout(tmp_path / "data", "voc21")
    mine = tmp_path / "ttr_images"
    shutil.copytree(images, mine)
    command = ["benchmark", "probe", "--base", str(root / "base"), "--student", str(root / "student"),
               "--data_root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--benchmarks", "voc21",
               "--max_steps", "2", "--crop_size", "16", "--stride", "8", "--short_side", "24",
               "--ttr_images", str(mine), "--ttr_min_images", "3"]  # fmt: skip
    assert phreg_main(command) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "phreg_dense_benchmark_probe.json").read_text())
    assert list(summary["rows"]) == ROWS and summary["test_time_registers"]["source"] == "built on the fly"
    (cell,) = summary["rows"]["test_time_registers"]["cells"].values()
    assert 0.0 <= cell["value"] <= 1.0 and cell["paper"] is None
    assert any(line.startswith("test_time_registers ") for line in printed.splitlines())
    assert phreg_main(command) == 0
    assert "voc21: reused" in capsys.readouterr().out
    # Other images (one file changed) or other settings: another model, never the stored result.
    first = sorted(mine.iterdir())[0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert phreg_main(command) == 2
    assert "other models" in capsys.readouterr().err
    assert phreg_main([*command[:-1], "2"]) == 2  # --ttr_min_images 2
    assert "other models" in capsys.readouterr().err
