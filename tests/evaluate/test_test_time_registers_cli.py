"""`phreg test-time-registers`: find the register neurons of a stock model on a folder, save the model; refuse bad
input and never write into a folder that is not its own."""

from __future__ import annotations

import numpy as np
import pytest
from hub_helpers import image_processor

# The planted model of tests/models/test_test_time_registers.py: one neuron fires hugely at three tokens.
from models.test_test_time_registers import (
    PLANTED_LAYER,
    PLANTED_NEURON,
    planted_dinov2,
    planted_signed_dinov2,
)
from PIL import Image
from transformers import AutoModel

from phreg_hf import PhregTestTimeRegistersModel
from phreg_hf.cli import main


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ttr")
    planted_dinov2().save_pretrained(root / "base")
    image_processor().save_pretrained(root / "base")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return root


def run(folders, out, *extra):
    return main(
        [
            "test-time-registers",
            *("--base", str(folders / "base"), "--images", str(folders / "images"), "--out", str(out)),
            *("--min_images", "6", "--norm_threshold", "1000", "--top_k", "1", "--batch_size", "4"),
            *extra,
        ]
    )


def test_finds_the_planted_neuron_saves_the_model_and_prints_it(folders, tmp_path, capsys):
    out = tmp_path / "ttr"
    assert run(folders, out) == 0
    printed = capsys.readouterr().out
    assert "found on 6 images (6 with outliers)" in printed
    assert f"block  {PLANTED_LAYER}: {PLANTED_NEURON}\n" in printed
    assert f"Saved the test-time-registers model to {out}" in printed
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, PhregTestTimeRegistersModel)
    assert {int(k): v for k, v in model.config.register_neurons.items()} == {PLANTED_LAYER: [PLANTED_NEURON]}
    assert (out / "preprocessor_config.json").is_file()

    # A second run into the same folder needs --overwrite, and then replaces it.
    assert run(folders, out) == 2
    assert "already holds a test-time-registers model; pass --overwrite" in capsys.readouterr().err
    assert run(folders, out, "--overwrite") == 0


def test_never_writes_into_a_folder_that_is_not_its_own(folders, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in (folders / "base").iterdir()}
    assert run(folders, folders / "base", "--overwrite") == 2
    assert "is the --base folder" in capsys.readouterr().err
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert run(folders, user, "--overwrite") == 2
    assert "not a test-time-registers model; it is never written into" in capsys.readouterr().err
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    assert {p.name: p.read_bytes() for p in (folders / "base").iterdir()} == before


def test_bad_input_is_refused_with_the_fix(folders, tmp_path, capsys):
    assert run(folders, tmp_path / "a", "--min_images", "100") == 2
    assert "fewer than min_images=100" in capsys.readouterr().err
    assert run(folders, tmp_path / "b", "--top_k", "0") == 2
    assert "--top_k must be at least 1" in capsys.readouterr().err
    missing = main(
        [
            "test-time-registers",
            "--base",
            str(tmp_path / "nope"),
            "--images",
            str(folders / "images"),
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert missing == 2 and "does not exist" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_phreg_eval_measures_the_test_time_registers_row_beside_the_others(folders, tmp_path, capsys):
    import json

    from conftest import make_base

    from phreg_hf.models.modeling_phreg import student_from_base

    base = planted_signed_dinov2()  # its outliers survive the final norm, what `phreg eval` measures
    for name, model in (("base", base), ("student", student_from_base(base, 2))):
        model.save_pretrained(tmp_path / name)
        image_processor().save_pretrained(tmp_path / name)
    (tmp_path / "images").symlink_to(folders / "images", target_is_directory=True)
    assert run(tmp_path, tmp_path / "ttr") == 0  # `run` reads tmp_path / "base" and tmp_path / "images"
    capsys.readouterr()
    common = ["eval", "--base", str(tmp_path / "base"), "--student", str(tmp_path / "student")]
    common += ["--images", str(folders / "images"), "--num_views", "2"]
    report = tmp_path / "report.json"
    assert main([*common, "--test_time_registers", str(tmp_path / "ttr"), "--out", str(report)]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = json.loads(report.read_text())["rows"]
    assert list(rows) == ["base", "teacher", "student", "test_time_registers"]
    assert [line.split()[0] for line in table[3:7]] == list(rows)  # after the header, directions and rule
    # The row is the transformed model's: it moves the planted neuron's activations, which the base and the
    # untrained student (their rows agree to 1e-3) keep.
    assert abs(rows["student"]["teacher_agreement"] - rows["base"]["teacher_agreement"]) < 1e-3
    assert abs(rows["test_time_registers"]["teacher_agreement"] - rows["base"]["teacher_agreement"]) > 0.01

    # A test-time-registers model of another base, or a folder of another kind, is refused by name.
    other = tmp_path / "other_base"
    make_base("dinov2").save_pretrained(other)
    image_processor().save_pretrained(other)
    made = main(
        ["test-time-registers", "--base", str(other), "--images", str(folders / "images")]
        + ["--out", str(tmp_path / "other_ttr"), "--min_images", "6", "--norm_threshold", "0"]
    )
    assert made == 0
    capsys.readouterr()
    assert main([*common, "--test_time_registers", str(tmp_path / "other_ttr")]) == 2
    assert "was not made from --base" in capsys.readouterr().err
    assert main([*common, "--test_time_registers", str(tmp_path / "student")]) == 2
    assert "not a test-time-registers model" in capsys.readouterr().err
