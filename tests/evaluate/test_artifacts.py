"""`phreg eval`: measured on a student distilled from a planted-artifact teacher, the JSON schema the model card
reads, the trainer's own measures reproduced, the table, and the errors (folders, unreadable images, mismatched
models, resolution).

One student is distilled for the whole module (tiny synthetic DINOv2, a few seconds on a CPU); error tests that
need no trained weights use a fresh 4-register student.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_base, write_small_sample_images
from PIL import Image
from trainer_helpers import run, tiny_planted

from phreg_hf import student_from_base
from phreg_hf.constants import MEASURE_VIEW_SEED, METRICS_FILE
from phreg_hf.distill.trainer import build_demo_image_processor
from phreg_hf.evaluate.artifacts import (
    MODEL_ROWS,
    EvalArguments,
    default_resolution,
    eval_main,
    evaluate,
    format_metrics_table,
    measure_artifacts,
)
from phreg_hf.evaluate.metrics import METRIC_NAMES


def save_base(model, folder: Path, resolution: int = 56) -> Path:
    """A stock base checkpoint folder as users have it: weights, config and image processor."""
    model.save_pretrained(folder)
    build_demo_image_processor(resolution).save_pretrained(folder)
    return folder


def write_corrupt(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n definitely not the rest of a PNG")
    return path


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> SimpleNamespace:
    """A student distilled from the planted-artifact teacher (as in test_trainer), its saved base, and images."""
    root = tmp_path_factory.mktemp("eval")
    train, heldout = write_small_sample_images(root / "images")
    trainer, result = run(
        root / "student",
        train,
        num_views=10,
        max_steps=240,
        learning_rate=1e-2,
        final_learning_rate=1e-3,
        teacher_cache=str(root / "cache"),
        eval_images=str(heldout),
        logging_steps=1000,
    )
    base = save_base(tiny_planted(), root / "base")
    return SimpleNamespace(
        root=root, base=base, student=root / "student", heldout=heldout, trainer=trainer, result=result
    )


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> SimpleNamespace:
    """An untrained 4-register student (no image processor saved) and its base: for the error paths."""
    root = tmp_path_factory.mktemp("fresh")
    base_model = tiny_planted()
    base = save_base(base_model, root / "base")
    student_from_base(base_model, 4).save_pretrained(root / "student")
    images = root / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 72), (40 * i, 200 - 50 * i, 90)).save(images / f"flat_{i}.png")
    return SimpleNamespace(root=root, base=base, student=root / "student", images=images)


def eval_args(base, student, images, *extra) -> list[str]:
    return ["--base", str(base), "--student", str(student), "--images", str(images), *map(str, extra)]


# ---------------------------------------------------------------------------------------------------------------
# Measured on a distilled student
def test_eval_shows_the_planted_artifacts_removed(distilled, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert eval_main(eval_args(distilled.base, distilled.student, distilled.heldout, "--out", out)) == 0
    payload = json.loads(out.read_text())
    base, teacher, student = (payload["rows"][name] for name in MODEL_ROWS)
    # Measured, not by construction: the raw base shows the planted position-locked, high-norm tokens; the student
    # (distilled from the teacher that averages them away) far less, and it agrees better with the teacher.
    assert base["outlier_ratio"] > 3 * max(student["outlier_ratio"], 1e-3), payload["rows"]
    assert base["position_locked_energy"] > 3 * student["position_locked_energy"], payload["rows"]
    assert base["max_to_median_norm"] > student["max_to_median_norm"]
    assert student["teacher_agreement"] > base["teacher_agreement"]
    assert teacher["position_locked_energy"] < base["position_locked_energy"]
    assert payload["num_images"] == len(list(distilled.heldout.iterdir()))
    assert payload["num_skipped"] == 0 and payload["resolution"] == 56

    lines = capsys.readouterr().out.splitlines()
    table_rows = [line.split()[0] for line in lines if line.split() and line.split()[0] in MODEL_ROWS]
    assert table_rows == list(MODEL_ROWS)  # one table, three model rows, in order
    assert any("(lower)" in line and "(higher)" in line for line in lines)
    student_line = next(line for line in lines if line.startswith("student"))
    assert f"{student['outlier_ratio']:.4f}" in student_line


def test_metrics_json_schema_feeds_the_model_card(distilled, tmp_path):
    from phreg_hf.hub import render_model_card

    folder = tmp_path / "student"
    shutil.copytree(distilled.student, folder)
    assert (
        eval_main(
            eval_args(
                distilled.base, folder, distilled.heldout, "--out", folder / METRICS_FILE, "--max_images", 8
            )
        )
        == 0
    )
    payload = json.loads((folder / METRICS_FILE).read_text())
    # constants.METRICS_FILE schema (extra keys allowed)
    assert isinstance(payload["num_images"], int) and payload["num_images"] == 8
    assert isinstance(payload["resolution"], int) and isinstance(payload["images"], str)
    assert list(payload["rows"]) == list(MODEL_ROWS)
    for name, row in payload["rows"].items():
        assert set(row) <= set(METRIC_NAMES), name
        assert all(isinstance(value, float) for value in row.values())
    assert "teacher_agreement" not in payload["rows"]["teacher"]
    assert payload["settings"]["num_views"] == 10 and payload["base_model"] == str(distilled.base)

    card = str(render_model_card(folder, "someone/tiny-phreg", license="apache-2.0"))
    assert "PH-Reg student (after)" in card and "Denoised teacher" in card
    assert "8 held-out images" in card


def test_measure_artifacts_reproduces_the_trainer_measures(distilled):
    """The trainer's final report can be `measure_artifacts` called with the run's own pieces."""
    trainer = distilled.trainer
    student = trainer.accelerator.unwrap_model(trainer.student)
    pixel_values, indices, description = trainer._eval_pixel_values()
    payload = measure_artifacts(
        trainer.teacher_model,
        student,
        pixel_values,
        trainer.teacher,
        images=description,
        indices=indices,
        view_seed=MEASURE_VIEW_SEED,
        batch_size=trainer.args.per_device_train_batch_size,
        device=trainer.accelerator.device,
        autocast=trainer.accelerator.autocast,
    )
    expected = distilled.result["metrics"]
    assert {k: payload[k] for k in ("num_images", "resolution", "images")} == {
        k: expected[k] for k in ("num_images", "resolution", "images")
    }
    for name in MODEL_ROWS:
        assert payload["rows"][name] == pytest.approx(expected["rows"][name], rel=1e-5, abs=1e-6), name


def test_phreg_eval_on_the_trainers_held_out_folder_prints_the_trainers_table(distilled):
    """Same images (the first N in sorted order), same teacher views: `phreg eval` with its defaults and the run's
    final measures are one table, not two."""
    from phreg_hf.distill.arguments import DistillArguments

    defaults = {f.name: f.default for f in dataclasses.fields(DistillArguments)}
    assert defaults["num_eval_images"] == EvalArguments.max_images  # same number of images by default
    expected = distilled.result["metrics"]
    payload = evaluate(
        EvalArguments(
            base=str(distilled.base),
            student=str(distilled.student),
            images=str(distilled.heldout),
            max_images=distilled.trainer.args.num_eval_images,
        )
    )
    assert payload["num_images"] == expected["num_images"]
    for name in MODEL_ROWS:
        assert payload["rows"][name] == pytest.approx(expected["rows"][name], rel=1e-4, abs=1e-5), name


def test_unreadable_images_are_skipped_and_counted(distilled, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(distilled.heldout.iterdir())[:3]:
        shutil.copy(path, images / path.name)
    write_corrupt(images / "broken.png")
    (images / "notes.txt").write_text("not an image, not counted")
    out = tmp_path / "report.json"
    assert eval_main(eval_args(distilled.base, distilled.student, images, "--out", out)) == 0
    payload = json.loads(out.read_text())
    assert payload["num_images"] == 3 and payload["num_skipped"] == 1
    assert "1 unreadable image file skipped" in capsys.readouterr().out


def test_max_images_resolution_and_batch_size(distilled):
    args = EvalArguments(
        base=str(distilled.base),
        student=str(distilled.student),
        images=str(distilled.heldout),
        max_images=5,
        resolution=48,
        batch_size=2,
        num_views=3,
    )
    payload = evaluate(args)
    assert payload["num_images"] == 5 and payload["resolution"] == 48
    assert payload["settings"]["num_views"] == 3


# ---------------------------------------------------------------------------------------------------------------
# Errors
def test_missing_images_folder(fresh, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="--images .*nowhere does not exist or is not a folder"):
        evaluate(EvalArguments(base=str(fresh.base), student=str(fresh.student), images=str(missing)))
    assert eval_main(eval_args(fresh.base, fresh.student, missing)) == 2
    assert "phreg eval: error: --images" in capsys.readouterr().err


def test_folder_without_images(fresh, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    with pytest.raises(ValueError, match="holds no image files.*put held-out images there"):
        evaluate(EvalArguments(base=str(fresh.base), student=str(fresh.student), images=str(empty)))


def test_all_images_unreadable(fresh, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    write_corrupt(broken / "a.png")
    write_corrupt(broken / "b.jpg")
    with pytest.raises(ValueError, match=r"None of the 2 image files .* could be read \(2 unreadable"):
        evaluate(EvalArguments(base=str(fresh.base), student=str(fresh.student), images=str(broken)))


def test_base_of_another_backbone_is_refused(fresh, tmp_path):
    vit_base = save_base(make_base("vit"), tmp_path / "vit-base")
    with pytest.raises(ValueError, match="built from a 'dinov2' model but --base .* is a 'vit' checkpoint"):
        evaluate(EvalArguments(base=str(vit_base), student=str(fresh.student), images=str(fresh.images)))


def test_base_of_another_size_is_refused(fresh, tmp_path):
    from phreg_hf.synthetic import build_planted_artifact_model

    wider = build_planted_artifact_model(
        "dinov2", hidden_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=8
    )
    base = save_base(wider, tmp_path / "wider")
    with pytest.raises(ValueError, match="hidden_size=48 but the student has hidden_size=32"):
        evaluate(EvalArguments(base=str(base), student=str(fresh.student), images=str(fresh.images)))


@pytest.mark.parametrize("swap", ["student_is_base", "base_is_student"])
def test_base_and_student_swapped(fresh, swap):
    base, student = (fresh.base, fresh.base) if swap == "student_is_base" else (fresh.student, fresh.student)
    message = "not a PH-Reg student" if swap == "student_is_base" else "is itself a PH-Reg student"
    with pytest.raises(ValueError, match=message):
        evaluate(EvalArguments(base=str(base), student=str(student), images=str(fresh.images)))


def test_resolution_not_a_multiple_of_the_patch_size(fresh):
    with pytest.raises(ValueError, match="--resolution 60 must be a multiple of the patch size 8.*56 or 64"):
        evaluate(
            EvalArguments(
                base=str(fresh.base), student=str(fresh.student), images=str(fresh.images), resolution=60
            )
        )


def test_processor_falls_back_to_the_base_and_sets_the_resolution(fresh):
    # The fresh student folder has no preprocessor_config.json: the base's processor (56 px crop) is used.
    assert not (fresh.student / "preprocessor_config.json").exists()
    payload = evaluate(
        EvalArguments(base=str(fresh.base), student=str(fresh.student), images=str(fresh.images), num_views=2)
    )
    assert payload["resolution"] == 56 and payload["num_images"] == 3


# ---------------------------------------------------------------------------------------------------------------
# Options and table
def test_help_lists_every_option_with_defaults(capsys):
    assert eval_main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in dataclasses.fields(EvalArguments):
        assert f"--{option.name}" in text, option.name
        assert option.metadata.get("help"), option.name
    assert "(default: 10)" in text and "(default: 64)" in text
    device_help = " ".join(text.split("--device DEVICE")[-1].split())
    assert device_help.count("default") == 1, device_help  # its own "(default: cuda if available)", not twice
    assert "(default: None)" not in " ".join(text.split("--base BASE")[-1].split("--resolution")[0].split())


def test_missing_required_option_is_a_usage_error(capsys):
    assert eval_main(["--base", "x"]) == 2
    assert "--student" in capsys.readouterr().err


def test_default_resolution_follows_the_processor():
    from transformers import Dinov2Config

    config = Dinov2Config(image_size=518, patch_size=14)
    assert default_resolution(build_demo_image_processor(224), config) == 224
    no_crop = build_demo_image_processor(98)
    no_crop.do_center_crop = False
    assert default_resolution(no_crop, config) == 98  # its resize side
    assert default_resolution(object(), config) == 518  # no size at all: the config's


def test_table_layouts():
    metrics = {
        "num_images": 2,
        "resolution": 56,
        "images": "held",
        "num_skipped": 2,
        "rows": {
            "base": {"outlier_ratio": 0.5, "teacher_agreement": 0.8, "local_smoothness": 0.6},
            "teacher": {"outlier_ratio": 0.1, "local_smoothness": 0.7},
            "student": {"outlier_ratio": 0.0, "teacher_agreement": 0.95, "local_smoothness": 0.75},
        },
    }
    # examples/distill.py's layout, unchanged: one row per measure.
    assert format_metrics_table(metrics).splitlines()[:3] == [
        "measure                               base     teacher     student   better",
        "---------------------------------------------------------------------------",
        "outlier ratio                       0.5000      0.1000      0.0000   lower",
    ]
    by_model = format_metrics_table(metrics, models_as_rows=True).splitlines()
    assert by_model[0].split() == ["model", "outlier", "ratio", "cos", "teacher", "smoothness"]
    assert by_model[1].split() == ["better:", "(lower)", "(higher)"]
    assert by_model[4].split() == ["teacher", "0.1000", "-", "0.7000"]
    assert by_model[-1] == "(2 images at 56 px: held; 2 unreadable image files skipped)"
