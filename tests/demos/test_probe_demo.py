"""The offline demonstration of `phreg_hf/demos/probe_demo.py`: planted artifacts cost the linear probe mIoU, and the
PH-Reg student, distilled with the demo's settings, wins it back.

The margin asserted is under half the smallest one measured over seeds 0-4 with these exact settings (README,
"Offline demonstration"), so the test fails when the recovery breaks, not on seed noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phreg_hf.data import IMAGENET_MEAN, IMAGENET_STD
from phreg_hf.demos.probe_demo import (
    TTR_NORM_TO_MEDIAN,
    _source_pixels,
    build_probe_demo_model,
    demo_test_time_registers,
    format_seed_summary,
    run_probe_demo,
    summarize_seeds,
    write_shapes_dataset,
)
from phreg_hf.evaluate.probe import format_probe_table
from phreg_hf.evaluate.probe_data import folder_pairs

# student - base mIoU with the demo's settings (72 images, 400 distillation steps, 1500 probe steps), measured
# with `python examples/probe_demo.py --seeds 0 1 2 3 4`: +5.70, +4.66, +4.34, +4.50, +8.21 (min 4.34, mean 5.48).
# The rows are probed independently, so probing only base and student gives the same two rows as the full table.
MIN_MARGIN = 0.02  # under half the smallest measured margin


@pytest.mark.slow
def test_student_beats_the_planted_artifact_model_on_the_probe(tmp_path):
    report = run_probe_demo(tmp_path, seed=0, rows=("base", "student"))
    rows = report["rows"]
    assert report["feature_cache"] is True  # no augmentation: features computed once per model
    assert report["num_eval_pairs"] == 24 and report["settings"]["max_steps"] == 1500
    assert rows["student"]["mIoU"] - rows["base"]["mIoU"] > MIN_MARGIN, rows


def test_clean_model_is_the_planted_one_minus_the_artifacts():
    planted, clean = build_probe_demo_model(), build_probe_demo_model(artifact_scale=0.0)
    differing = [
        name
        for (name, a), (_, b) in zip(planted.state_dict().items(), clean.state_dict().items(), strict=True)
        if not a.equal(b)
    ]
    assert differing == ["embeddings.position_embeddings"]
    assert len(planted.config.phreg_synthetic["artifact_positions"]) == 12


def test_shapes_dataset_is_seeded(tmp_path):
    first = write_shapes_dataset(tmp_path / "a", num_images=3, size=56, seed=5)
    second = write_shapes_dataset(tmp_path / "b", num_images=3, size=56, seed=5)
    for folder_a, folder_b in zip(first, second, strict=True):
        for name in ("000.png", "002.png"):
            assert (folder_a / name).read_bytes() == (folder_b / name).read_bytes()


def test_test_time_registers_threshold_separates_the_planted_patches(tmp_path):
    images, masks = write_shapes_dataset(tmp_path, num_images=4, seed=1)
    pixels = _source_pixels(
        folder_pairs(str(images), str(masks), "--images", "--masks"), IMAGENET_MEAN, IMAGENET_STD
    )
    model = demo_test_time_registers(pixels)
    settings = model.config.search_settings
    assert settings["num_images"] == settings["num_images_with_outliers"] == 4
    assert sum(len(ids) for ids in model.config.layer_neurons().values()) == settings["top_k"] == 10
    assert (
        settings["detect_outliers_layer"] == -1
        and f"{TTR_NORM_TO_MEDIAN:g} x the median" in settings["norm_threshold_rule"]
    )
    planted = build_probe_demo_model()
    with torch.no_grad():
        norms = planted(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:].norm(dim=-1)
    assert settings["norm_threshold"] == pytest.approx(TTR_NORM_TO_MEDIAN * float(norms.median()))
    # The outliers the search used are exactly the planted positions, in every image.
    grid = planted.config.image_size // planted.config.patch_size
    expected = torch.zeros(grid * grid, dtype=torch.bool)
    for row, col in planted.config.phreg_synthetic["artifact_positions"]:
        expected[row * grid + col] = True
    assert torch.equal(norms > settings["norm_threshold"], expected.expand_as(norms))
    # Built on the planted weights, unchanged.
    for (name, a), (_, b) in zip(model.model.state_dict().items(), planted.state_dict().items(), strict=True):
        assert a.equal(b), name


def test_test_time_registers_row_reaches_the_report_and_table(tmp_path):
    report = run_probe_demo(tmp_path, num_images=6, probe_steps=2, rows=("base", "test_time_registers"))
    assert set(report["rows"]) == {"base", "test_time_registers"}
    search = report["test_time_registers_search"]
    assert search["num_images"] == report["num_train_pairs"] == 4  # the training images only
    assert sum(len(ids) for ids in search["register_neurons"].values()) == 10
    header, _, _, base_line, ttr_line, _ = format_probe_table(report).splitlines()
    assert ttr_line.startswith("test_time_registers ") and len(ttr_line) == len(header) == len(base_line) + 12


def test_run_probe_demo_refuses_unknown_rows(tmp_path):
    with pytest.raises(ValueError, match="'ttr'"):
        run_probe_demo(tmp_path, rows=("base", "ttr"))


def test_seed_summary_has_mean_and_spread_per_row():
    def report(base, ttr):
        return {"rows": {"base": {"mIoU": base}, "test_time_registers": {"mIoU": ttr}}}

    summary = summarize_seeds({0: report(0.60, 0.61), 1: report(0.64, 0.63), 2: report(0.62, 0.65)})
    ttr = summary["test_time_registers"]
    assert ttr["vs_base"] == pytest.approx({0: 1.0, 1: -1.0, 2: 3.0})
    assert ttr["vs_base_mean"] == pytest.approx(1.0) and ttr["vs_base_std"] == pytest.approx(2.0)
    assert ttr["mIoU_mean"] == pytest.approx(63.0) and summary["base"]["vs_base"] == {}
    table = format_seed_summary(summary)
    assert "+1.00 +- 2.00" in table and "+1.00, -1.00, +3.00" in table and "62.00 +- 2.00" in table


def test_example_refuses_an_existing_out_file_before_any_work(tmp_path, capsys, monkeypatch):
    import runpy

    example = runpy.run_path(str(Path(__file__).parents[2] / "examples" / "probe_demo.py"))
    ran = []
    monkeypatch.setitem(example["main"].__globals__, "run_probe_demo", lambda **kwargs: ran.append(kwargs))
    out = tmp_path / "mine.json"
    out.write_text('{"theirs": 1}\n')
    assert example["main"](["--out", str(out), "--probe_steps", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err and not ran
    assert out.read_text() == '{"theirs": 1}\n'
