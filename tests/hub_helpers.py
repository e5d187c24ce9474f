"""A saved training output folder as the trainer writes it, for the card, push, fault and Hub-loading tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import IMAGE_SIZE, make_base
from PIL import Image
from transformers import BitImageProcessor

import phreg_hf
from phreg_hf.constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE

REPO_ID = "alice/dinov2-phreg-tiny"

NUM_REGISTERS = 4

# ---------------------------------------------------------------------------------------------------------------
# The run files as the trainer writes them (constants.py). Their field names live here only, to align with the
# trainer in one place.
TRAINING_SETTINGS = {
    "base_model": "facebook/dinov2-small",
    "model_type": "phreg_dinov2",
    "num_register_tokens": NUM_REGISTERS,
    "trainable_parts": ["registers", "position_embeddings", "patch_embeddings", "last_block"],
    "dataset": {"name": "nlphuji/flickr30k", "config": None, "num_images": 31014},
    "resolution": 518,
    "num_views": 10,
    "shift_frac": 0.15,
    "mse_scale": 1.0,
    "learning_rate": 1e-4,
    "final_learning_rate": 5e-6,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 2,
    "num_processes": 1,
    "global_steps": 3877,
    "epochs": 2,
    "mixed_precision": "bf16",
    "hardware": "1 x NVIDIA H100 80GB HBM3",
    "train_runtime_s": 2843.2,
    "skipped_images": 3,
    "versions": {"torch": "2.13.0", "transformers": "5.23.0", "phreg_hf": "0.1.0"},
    "args": {"teacher": "facebook/dinov2-small", "output_dir": "/runs/dinov2-phreg"},
}
METRICS = {
    "num_images": 32,
    "resolution": 518,
    "images": "/data/coco/val2017",
    "rows": {
        "base": {
            "outlier_ratio": 0.02134,
            "max_to_median_norm": 6.4123,
            "teacher_agreement": 0.81234567,
            "position_locked_energy": 0.1121,
            "local_smoothness": 0.5311,
        },
        "teacher": {
            "outlier_ratio": 0.0011,
            "max_to_median_norm": 2.1,
            "teacher_agreement": 1.0,
            "position_locked_energy": 0.0213,
            "local_smoothness": 0.7102,
        },
        "student": {
            "outlier_ratio": 0.001923,
            "max_to_median_norm": 2.5432198,
            "teacher_agreement": 0.9412345,
            "position_locked_energy": 0.03012,
            "local_smoothness": 0.6933,
        },
    },
}
# What one commit of a full training output holds (previews included; checkpoints and logs never).
EXPECTED_REPO_FILES = [
    "README.md",
    "config.json",
    "configuration_phreg.py",
    "model.safetensors",
    "modeling_phreg.py",
    "modeling_phreg_backbone.py",
    "modeling_phreg_registers.py",
    METRICS_FILE,
    TRAINING_SETTINGS_FILE,
    "preprocessor_config.json",
    f"{PREVIEWS_DIR}/norms.png",
]


def image_processor() -> BitImageProcessor:
    return BitImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def make_student(backbone: str = "dinov2"):
    return phreg_hf.student_from_base(make_base(backbone), NUM_REGISTERS).eval()


def save_run_folder(
    folder: Path,
    student=None,
    *,
    settings: dict | None = TRAINING_SETTINGS,
    metrics: dict | None = METRICS,
    processor: bool = True,
    previews: bool = True,
    training_state: bool = True,
    max_shard_size: str | None = None,
):
    """A training --output_dir: student, image processor, the two JSONs, a preview, a checkpoint and logs."""
    student = make_student() if student is None else student
    if max_shard_size:
        student.save_pretrained(folder, max_shard_size=max_shard_size)
    else:
        student.save_pretrained(folder)
    if processor:
        image_processor().save_pretrained(folder)
    if settings is not None:
        (folder / TRAINING_SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    if metrics is not None:
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    if previews:
        (folder / PREVIEWS_DIR).mkdir()
        Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / PREVIEWS_DIR / "norms.png")
    if training_state:
        # What Accelerate's save_state and the trackers leave behind: pickles in checkpoints, event logs.
        (folder / "checkpoint-500").mkdir()
        (folder / "checkpoint-500" / "optimizer.bin").write_bytes(b"pickle")
        (folder / "checkpoint-500" / "random_states_0.pkl").write_bytes(b"pickle")
        (folder / "runs").mkdir()
        (folder / "runs" / "events.out.tfevents.1").write_bytes(b"log")
        (folder / "train.log").write_text("step 1 loss 0.5\n")
    return student


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder, by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
