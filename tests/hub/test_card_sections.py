"""Model-card sections beyond the artifact table: dense-task reports (`phreg_dense_*.json`) and CLIP students."""

from __future__ import annotations

import json

import pytest
from hub_helpers import REPO_ID, save_run_folder

from phreg_hf.hub import push as hub

PROBE_REPORT = {
    "task": "segmentation",
    "primary_metric": "mIoU",
    "higher_is_better": {"mIoU": True, "pixel_accuracy": True},
    "rows": {
        "student": {"mIoU": 0.8485, "pixel_accuracy": 0.95},
        "base": {"mIoU": 0.8413, "pixel_accuracy": 0.94},
    },
    "num_train_pairs": 1464,
    "num_eval_pairs": 1449,
    "train_data": "VOC2012 train",
    "eval_data": "VOC2012 val",
}
SEGMENTATION_REPORT = {
    "task": "zero-shot open-vocabulary semantic segmentation",
    "num_images": 1449,
    "images": "voc/images",
    "classes": ["background", "cat"],
    "rows": {"base_maskclip": {"miou": 0.3221}, "base_naclip": {"miou": 0.3941}, "student": {"miou": 0.4185}},
}


def test_dense_reports_are_uploaded_and_shown_as_tables(tmp_path, fake_hub):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    (folder / "phreg_dense_voc_probe.json").write_text(json.dumps(PROBE_REPORT))
    (folder / "phreg_dense_voc_open_vocab.json").write_text(json.dumps(SEGMENTATION_REPORT))
    text = hub.render_model_card(folder, REPO_ID, license="apache-2.0").text
    assert "### Linear probe, segmentation" in text
    assert "| base | 84.13 | 94.00 |" in text and "| student | 84.85 | 95.00 |" in text
    assert text.index("| base | 84.13") < text.index(
        "| student | 84.85"
    )  # base first, whatever the JSON order
    assert "### Zero-shot open-vocabulary segmentation" in text
    assert "| base_naclip | 39.41 |" in text and "| student | 41.85 |" in text
    assert "No dense task" not in text
    hub.push_folder_to_hub(folder, REPO_ID, license="apache-2.0")
    uploaded = fake_hub.commits[-1]["files"]
    assert {"phreg_dense_voc_probe.json", "phreg_dense_voc_open_vocab.json"} <= set(uploaded)


def test_without_dense_reports_the_card_says_none_was_evaluated(tmp_path):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    assert "No dense task" in hub.render_model_card(folder, REPO_ID, license="apache-2.0").text


@pytest.mark.parametrize("content", ["{not json", json.dumps({"task": "segmentation"})])
def test_a_broken_dense_report_is_named(tmp_path, content):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    (folder / "phreg_dense_x.json").write_text(content)
    with pytest.raises(ValueError, match="phreg_dense_x.json"):
        hub.render_model_card(folder, REPO_ID, license="apache-2.0")


def test_a_clip_student_card_shows_clip_usage_and_its_segmentation_pipeline(tmp_path):
    """A full CLIP student has no `get_feature_map` and needs text: its card says how to use what it has."""
    from huggingface_hub import ModelCard

    from phreg_hf import PhregCLIPModel
    from phreg_hf.evaluate.segmentation import save_pretrained_with_pipeline
    from phreg_hf.synthetic_clip import build_planted_artifact_clip, build_tiny_clip_processor

    student = PhregCLIPModel.from_base(build_planted_artifact_clip(image_size=64, patch_size=8), 2)
    folder = tmp_path / "clip-student"
    save_pretrained_with_pipeline(student, folder, build_tiny_clip_processor(64))
    card = hub.render_model_card(folder, REPO_ID, license="apache-2.0")
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.pipeline_tag == "image-segmentation"
    assert "model.get_dense_image_features(pixel_values)  # (batch, patches, 24)" in card.text
    assert 'candidate_labels="background; cat; dog, puppy"' in card.text
    assert "get_feature_map" not in card.text and "image-feature-extraction" not in card.text
    assert "no `preprocessor_config.json`" not in card.text  # its CLIPProcessor holds the image processor
