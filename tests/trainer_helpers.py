"""Training runs shared by the trainer, cache, fault, evaluation and picture tests: a tiny planted-artifact base and
the arguments of a short run (4 registers, 4 views, 4 steps)."""

from __future__ import annotations

from pathlib import Path

import torch

from phreg_hf.distill.trainer import DistillArguments, DistillTrainer
from phreg_hf.synthetic import build_planted_artifact_model

TINY_PLANTED = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=8)


def tiny_planted(model_type: str = "dinov2", seed: int = 0):
    return build_planted_artifact_model(model_type, seed=seed, **TINY_PLANTED)


def make_args(output_dir: Path | None, train_dir: Path | None, **overrides) -> DistillArguments:
    settings = dict(
        train_dir=str(train_dir) if train_dir is not None else None,
        output_dir=str(output_dir) if output_dir is not None else None,
        num_register_tokens=4,
        num_views=4,
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=3e-3,
        final_learning_rate=3e-4,
        checkpointing_steps=0,
        report_to="none",
        num_eval_images=8,
        num_preview_images=0,
        logging_steps=1,
    )
    settings.update(overrides)
    return DistillArguments(**settings)


def run(output_dir: Path, train_dir: Path, base=None, **overrides) -> tuple[DistillTrainer, dict]:
    trainer = DistillTrainer(make_args(output_dir, train_dir, **overrides), base_model=base or tiny_planted())
    return trainer, trainer.train()


def student_state(trainer: DistillTrainer) -> dict[str, torch.Tensor]:
    student = trainer.accelerator.unwrap_model(trainer.student)
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Arguments


class Crash(Exception):
    pass
