# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""What a finished distillation run writes: final measures, previews, the settings record, the saved student.

`TrainingOutputsMixin` is part of `trainer.DistillTrainer`. Everything is written as one set (`run_files.py`):
staged, then moved into `--output_dir`, so a run that fails while saving leaves the earlier outputs whole.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.logging import get_logger

from .. import constants
from . import clip_training
from .checkpointing import remove_tree
from .demo import DEMO_BASE_DIR
from .run_files import atomic_write_json, commit_staged_outputs, new_staging_folder

logger = get_logger(__name__)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class TrainingOutputsMixin:
    """Output methods of `DistillTrainer` (they read the trainer's models, state and settings)."""

    @torch.no_grad()
    def evaluate(self, preview_dir: Path | None = None) -> dict:
        """Artifact measures of base, denoised teacher and student on held-out images (`evaluation.py`).

        Returns the `constants.METRICS_FILE` payload: `{"num_images", "resolution", "images", "rows": {"base",
        "teacher", "student"}}`, the same as `phreg eval` computes. The teacher views are seeded per image with
        `constants.MEASURE_VIEW_SEED` (as `phreg eval`'s default), the images center-cropped, so base/teacher
        rows are comparable across runs and `phreg eval` on the same folder prints the same table. Also writes
        `previews/*.png` into `preview_dir` (default: output_dir; see `--num_preview_images`), named after their
        images. The images were loaded (and checked) before training.
        """
        from ..evaluate.artifacts import measure_artifacts

        args, accelerator = self.args, self.accelerator
        student = accelerator.unwrap_model(self.student)
        pixel_values, indices, description = self.eval_images
        common = dict(
            indices=indices,
            view_seed=constants.MEASURE_VIEW_SEED,  # the views `phreg eval` draws by default
            batch_size=args.per_device_train_batch_size,
            device=accelerator.device,
            autocast=accelerator.autocast,
        )
        metrics = measure_artifacts(
            self.teacher_model, student, pixel_values, self.teacher, images=description, **common
        )
        if self.clip_dense_mode is not None:
            # How far the image-level embedding (classification, retrieval) drifted from the base CLIP's.
            metrics["clip_image_feature_cosine"] = clip_training.image_feature_cosine(
                self.teacher_model.clip, student, pixel_values.to(accelerator.device)
            )
        if args.num_preview_images > 0:
            self._write_previews(preview_dir or self.output_dir, student, pixel_values, common)
        return metrics

    def _write_previews(self, folder: Path, student, pixel_values: torch.Tensor, common: dict) -> int:
        """Write the previews into `folder` (the staging folder of `save_outputs`); returns how many."""
        try:
            from ..evaluate.visualization import write_previews

            paths = write_previews(
                folder,
                self.teacher_model,
                student,
                self.teacher,
                pixel_values,
                self.image_mean,
                self.image_std,
                names=self.eval_image_names,
                max_images=self.args.num_preview_images,
                **common,
            )
        except ImportError as error:
            logger.warning(f"No preview pictures: {error} (or pass --num_preview_images 0 to skip them).")
            return 0
        # Not logged here: `folder` is the hidden staging folder, gone once the set is moved into place.
        self.num_previews_written = len(paths)
        return len(paths)

    def hardware(self) -> str:
        n = self.accelerator.num_processes
        device = self.accelerator.device
        if device.type == "cuda":
            return f"{n} x {torch.cuda.get_device_name(device)}"
        if device.type == "cpu":
            return f"{n} x CPU process ({platform.machine()}, {os.cpu_count()} cores on the machine)"
        return f"{n} x {device.type}"

    def _license(self) -> str | None:
        """The student's license: --hub_license, else the base model's (its card's metadata), else unknown.

        The synthetic demo model is random weights made by this library, so it carries the library's license.
        """
        if self.args.hub_license:
            return self.args.hub_license
        if self.is_synthetic:
            return "apache-2.0"
        from ..hub.student_folder import base_model_license

        return base_model_license(self.base_model_id, self.args.hub_token)

    def training_settings(self) -> dict:
        """The `constants.TRAINING_SETTINGS_FILE` payload (read by the model card and `phreg eval`)."""
        from ..constants import VERSION

        args, state, accelerator = self.args, self.state, self.accelerator
        student = accelerator.unwrap_model(self.student)
        # Field names as the model card (hub.py) reads them.
        dataset = {
            "name": args.dataset_name,
            "config": args.dataset_config,
            "split": args.dataset_split if args.dataset_name else None,
            "train_dir": str(self.train_dir) if self.train_dir is not None else None,
            "image_column": args.image_column,
            "streaming": args.streaming,
            "num_images": self.num_train_images,
        }
        if self.demo_images_note:
            dataset["description"] = self.demo_images_note
        cache = None
        if self.teacher_cache is not None:
            cache = {
                "dir": str(args.teacher_cache),
                "dtype": args.teacher_cache_dtype,
                "hits": state.cache_hits,
                "misses": state.cache_misses,
                "note": "crops and views fixed per image for the whole run (computed once, reused every epoch)",
            }
        return {
            "base_model": self.base_model_id,
            "base_model_synthetic": self.synthetic_info,
            "license": self._license(),
            "model_type": student.config.model_type,
            "base_model_type": self.model_type,
            "student_class": type(student).__name__,
            "clip_dense_mode": self.clip_dense_mode,  # CLIP: teacher path (naclip / maskclip), None otherwise
            "num_register_tokens": args.num_register_tokens,
            "trainable_parts": args.enabled_parts(),
            "num_trainable_parameters": self.num_trainable_parameters,
            "dataset": dataset,
            "resolution": self.resolution,
            "patch_grid": list(self.grid_size),
            "num_views": args.num_views,
            "shift_frac": args.shift_frac,
            "flip_prob": args.flip_prob,
            "fill_value": args.fill_value,
            "loss": "(1 - mean cosine) + mse_scale * MSE on final-normed patch tokens",
            "mse_scale": args.mse_scale,
            "learning_rate": args.learning_rate,
            "final_learning_rate": args.final_learning_rate,
            "weight_decay": args.weight_decay,
            "optimizer": {
                "name": "AdamW",
                "betas": [args.adam_beta1, args.adam_beta2],
                "max_grad_norm": args.max_grad_norm,
                "schedule": "exponential decay "
                + ("per epoch" if self.lr_schedule.per_epoch else "per step"),
            },
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": args.per_device_train_batch_size
            * accelerator.num_processes
            * args.gradient_accumulation_steps,
            "num_processes": accelerator.num_processes,
            "global_steps": state.global_step,
            "optimizer_steps": state.global_step - state.skipped_steps,
            "epochs": round(state.global_step / self.steps_per_epoch, 3) if self.steps_per_epoch else None,
            "images_seen": state.images_seen,
            "teacher_images": state.teacher_images,
            "teacher_cache": cache,
            "mixed_precision": accelerator.mixed_precision,
            "torch_compile": args.torch_compile,
            "hardware": self.hardware(),
            "train_runtime_s": round(self.train_runtime_s, 3),
            # Unreadable files met during training, each counted once (however many epochs met it).
            "skipped_images": state.skipped_images,
            "unreadable_images": sorted(state.unreadable_images.values()),
            "skipped_steps": state.skipped_steps,
            "versions": {
                "phreg_hf": VERSION,
                "transformers": _version("transformers"),
                "torch": torch.__version__,
                "accelerate": _version("accelerate"),
                "datasets": _version("datasets"),
            },
            "args": asdict(args),
        }

    def save_outputs(self) -> dict:
        """Main process: the student, image processor, settings and metrics JSONs and previews, as one set.

        Everything is written into a hidden staging folder first and moved into output_dir only once complete
        (`run_files.commit_staged_outputs`), so a run that fails while saving or measuring leaves the earlier
        outputs as they were, and a finished run never sits beside an earlier run's previews or JSONs.
        """
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            student = accelerator.unwrap_model(self.student)
            self.num_previews_written = 0
            staging = new_staging_folder(self.output_dir)
            try:
                if (
                    self.clip_dense_mode is not None
                ):  # CLIP: processor, tokenizer and segmentation pipeline too
                    clip_training.save_student(student, self.processor or self.image_processor, staging)
                else:
                    student.save_pretrained(staging, safe_serialization=True)
                    self.image_processor.save_pretrained(staging)
                if self.demo_base is not None:
                    demo_base_dir = staging / DEMO_BASE_DIR
                    self.demo_base.save_pretrained(demo_base_dir)
                    self.image_processor.save_pretrained(demo_base_dir)
                metrics = self.evaluate(preview_dir=staging)
                atomic_write_json(staging / constants.METRICS_FILE, metrics)
                atomic_write_json(staging / constants.TRAINING_SETTINGS_FILE, self.training_settings())
                commit_staged_outputs(staging, self.output_dir)
            finally:
                if staging.exists():
                    remove_tree(staging)
            previews = (
                f" and {self.num_previews_written} preview pictures ({self.output_dir / constants.PREVIEWS_DIR})"
                if self.num_previews_written
                else ""
            )
            logger.info(
                f"Saved the student, image processor, settings, metrics{previews} to {self.output_dir}"
            )
        accelerator.wait_for_everyone()
        return {
            "settings": json.loads((self.output_dir / constants.TRAINING_SETTINGS_FILE).read_text()),
            "metrics": json.loads((self.output_dir / constants.METRICS_FILE).read_text()),
        }
