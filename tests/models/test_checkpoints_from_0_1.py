"""Students saved by phreg-hf 0.1 (the flat layout, `tests/fixtures/checkpoints_v0_1_0`) still load and compute the
same, with phreg_hf importable and without it, and today's code saves the same set of code files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_without_phreg
from safetensors.torch import load_file
from transformers import AutoModel

import phreg_hf
from phreg_hf.evaluate.segmentation import save_pretrained_with_pipeline
from phreg_hf.synthetic_clip import build_tiny_clip_processor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v0_1_0"


@pytest.fixture
def saved(tmp_path) -> Path:
    target = tmp_path / "checkpoints"
    shutil.copytree(FIXTURES, target)
    return target


NEW_CODE_FILE = "modeling_phreg_registers.py"  # the register mixin, split out of modeling_phreg.py in 0.2


def code_files(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("*.py")}


def test_a_dinov2_student_saved_by_0_1_loads_and_computes_the_same(saved, tmp_path):
    expected = load_file(saved / "dinov2_student_expected.safetensors")
    student = AutoModel.from_pretrained(saved / "dinov2_student").eval()
    assert isinstance(student, phreg_hf.PhregDinov2Model)
    with torch.no_grad():
        output = student(expected["pixel_values"]).last_hidden_state
    torch.testing.assert_close(output, expected["last_hidden_state"], rtol=0, atol=1e-6)

    # Re-saved by today's code: the same code files at the top of the folder, plus the register mixin's own file
    # (split out of modeling_phreg.py in 0.2).
    student.save_pretrained(tmp_path / "resaved")
    assert code_files(tmp_path / "resaved") == code_files(saved / "dinov2_student") | {NEW_CODE_FILE}

    run_without_phreg(
        f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        expected = load_file({str(saved / "dinov2_student_expected.safetensors")!r})
        for folder in ({str(saved / "dinov2_student")!r}, {str(tmp_path / "resaved")!r}):
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            with torch.no_grad():
                output = model(expected["pixel_values"]).last_hidden_state
            torch.testing.assert_close(output, expected["last_hidden_state"], rtol=0, atol=1e-6)
        """,
        cwd=str(tmp_path),
    )


def test_a_clip_student_saved_by_0_1_loads_and_computes_the_same(saved, tmp_path):
    expected = load_file(saved / "clip_student_expected.safetensors")
    student = AutoModel.from_pretrained(saved / "clip_student").eval()
    assert isinstance(student, phreg_hf.PhregCLIPModel)
    with torch.no_grad():
        dense = student.get_dense_image_features(expected["pixel_values"])
    torch.testing.assert_close(dense, expected["dense_image_features"], rtol=0, atol=1e-6)

    save_pretrained_with_pipeline(student, tmp_path / "resaved", build_tiny_clip_processor(32))
    assert code_files(tmp_path / "resaved") == code_files(saved / "clip_student") | {NEW_CODE_FILE}

    run_without_phreg(
        f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        expected = load_file({str(saved / "clip_student_expected.safetensors")!r})
        for folder in ({str(saved / "clip_student")!r}, {str(tmp_path / "resaved")!r}):
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            with torch.no_grad():
                dense = model.get_dense_image_features(expected["pixel_values"])
            torch.testing.assert_close(dense, expected["dense_image_features"], rtol=0, atol=1e-6)
        """,
        cwd=str(tmp_path),
    )
