"""Loading and re-saving CLIP students: the weights asked for or a clear refusal, never random weights with only
a load report as a sign, and a re-saved folder whose pipeline still works (issue 18, items 9 and 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import phreg_hf
from phreg_hf import PhregCLIPModel
from phreg_hf.models import modeling_phreg_clip
from phreg_hf.models.modeling_phreg import PhregCLIPVisionModel
from phreg_hf.models.modeling_phreg_backbone import PhregCLIPVisionBackbone, PhregDinov2Backbone
from phreg_hf.models.pipeline_phreg_segmentation import PIPELINE_TASK

MODELS = Path(phreg_hf.__file__).parent / "models"


def assert_same_tensors(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_the_vision_backbone_of_a_full_clip_student_is_its_vision_tower(tiny_clip_folders, tmp_path):
    student = PhregCLIPModel.from_pretrained(tiny_clip_folders[1])
    want = student.vision_model.state_dict()
    backbone = PhregCLIPVisionBackbone.from_pretrained(tiny_clip_folders[1], out_indices=[1, 2])
    assert_same_tensors(backbone.state_dict(), want)
    assert_same_tensors(PhregCLIPVisionModel.from_pretrained(tiny_clip_folders[1]).state_dict(), want)
    backbone.save_pretrained(tmp_path / "backbone")  # saved under its own names, reloads as itself
    assert_same_tensors(PhregCLIPVisionBackbone.from_pretrained(tmp_path / "backbone").state_dict(), want)
    with pytest.raises(ValueError, match="stock 'clip' checkpoint, not a PH-Reg student: build one with"):
        PhregCLIPVisionModel.from_pretrained(tiny_clip_folders[0])


def test_a_backbone_of_another_student_type_names_the_real_type(tiny_clip_folders, tmp_path):
    PhregCLIPVisionModel.from_pretrained(tiny_clip_folders[1]).save_pretrained(tmp_path / "vision")
    with pytest.raises(ValueError) as error:
        PhregDinov2Backbone.from_pretrained(tmp_path / "vision")
    message = str(error.value)
    assert "model_type 'phreg_clip_vision_model'" in message and "got PhregDinov2Config" not in message
    assert "PhregCLIPVisionBackbone.from_pretrained" in message


def test_a_resaved_clip_student_keeps_a_working_pipeline_entry(tiny_clip_folders, tmp_path):
    student = AutoModel.from_pretrained(tiny_clip_folders[1])
    student.save_pretrained(tmp_path / "resaved")
    config = json.loads((tmp_path / "resaved" / "config.json").read_text())
    impl = config["custom_pipelines"][PIPELINE_TASK]["impl"]
    for name in (impl.split(".")[0] + ".py", "clip_dense.py"):  # the pipeline file and what it imports
        assert (tmp_path / "resaved" / name).read_bytes() == (MODELS / name).read_bytes()


def test_a_resave_without_the_pipeline_code_drops_the_entry_and_says_so(
    tiny_clip_folders, tmp_path, monkeypatch, caplog
):
    student = AutoModel.from_pretrained(tiny_clip_folders[1])
    monkeypatch.setattr(modeling_phreg_clip, "_custom_pipeline_files", lambda pipelines: None)
    with caplog.at_level("WARNING"):
        student.save_pretrained(tmp_path / "resaved")
    assert "custom_pipelines" not in json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert "saved without its custom_pipelines entry" in caplog.text
    assert student.config.custom_pipelines  # the loaded model keeps its own entry


def test_a_clip_student_config_without_vision_config_is_named(tiny_clip_folders, tmp_path):
    broken = tmp_path / "student"
    shutil.copytree(tiny_clip_folders[1], broken)
    config = json.loads((broken / "config.json").read_text())
    del config["vision_config"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json has no vision_config"):
        AutoModel.from_pretrained(broken)
    with pytest.raises(ValueError, match="config without vision_config"):
        PhregCLIPModel.from_base(str(broken))
