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
"""The trainer's CLIP dense mode (docs/method.md, section 7): which base class to load, the student and NACLIP teacher,
the paper's CLIP settings, and how the student is saved (with its processor and segmentation pipeline).

`trainer.py` calls these small hooks so that everything CLIP-specific stays here; the dense paths themselves are
in `clip_dense.py` (which travels with checkpoints, unlike this file).
"""

from __future__ import annotations

from torch import nn
from transformers import CLIPModel
from transformers.utils import logging

from ..models.clip_dense import DENSE_MODES, CLIPDenseModel, image_feature_cosine
from ..models.modeling_phreg_clip import PhregCLIPModel

logger = logging.get_logger(__name__)

# The paper's CLIP settings (docs/method.md, section 7); the trainer uses them for a CLIP run in a dense mode unless the user overrides them.
CLIP_REFERENCE_SETTINGS = {
    "resolution": 448,
    "per_device_train_batch_size": 16,
    "learning_rate": 3e-4,
    "final_learning_rate": 1e-5,
}


# ----------------------------------------------------------------------------------------------------------------
# Hooks (trainer.py calls these)


def base_class_for(model_type: str, mode: str | None) -> type | None:
    """`CLIPModel` when a `model_type` checkpoint is to be distilled in a dense mode, else None (the vision tower)."""
    if model_type == "clip" and mode != "tokens":
        return CLIPModel
    return None


def resolve_mode(base: nn.Module, mode: str | None) -> str | None:
    """The run's dense mode: "naclip" / "maskclip" for a full CLIP, None for tokens (and for non-CLIP models).

    Default (None): "naclip" for a full `CLIPModel` (the paper's recipe), tokens for everything else, including a
    CLIP vision tower alone, which has no projection into the text space.
    """
    is_full_clip = isinstance(base, CLIPModel)
    if mode is None:
        return "naclip" if is_full_clip else None
    if mode == "tokens":
        return None
    if mode not in DENSE_MODES:
        raise ValueError(f"--clip_dense_mode must be naclip, maskclip or tokens, got {mode!r}.")
    if not is_full_clip:
        raise ValueError(
            f"--clip_dense_mode {mode} needs a full CLIP checkpoint (model_type 'clip', with text tower and visual "
            f"projection), got a {type(base).__name__}. Pass a CLIP checkpoint such as openai/clip-vit-base-patch16, "
            "or --clip_dense_mode tokens to distill this model's patch tokens."
        )
    return mode


def build_student_and_teacher(base: CLIPModel, num_register_tokens: int, mode: str):
    """`(PhregCLIPModel student, CLIPDenseModel teacher)`, both float32 exact copies of the base CLIP."""
    student = PhregCLIPModel.from_base(base, num_register_tokens).float()
    teacher = CLIPDenseModel(PhregCLIPModel.from_base(base, 0).float(), mode)
    return student, teacher


def split_processor(image_processor, teacher_path: str | None, revision: str | None = None):
    """`(CLIPProcessor or None, image processor)`: the processor (tokenizer included) to save beside a CLIP
    student, from the given one or the teacher checkpoint; None with a warning when neither has a tokenizer."""
    if image_processor is not None and hasattr(image_processor, "tokenizer"):
        return image_processor, image_processor.image_processor
    if teacher_path is not None:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(teacher_path, revision=revision)
        except (OSError, ValueError, TypeError) as error:
            logger.warning(f"No tokenizer in {teacher_path} ({error}); the student folder will hold none.")
            processor = None
        if processor is not None and hasattr(processor, "tokenizer"):
            return processor, processor.image_processor
    logger.warning(
        "The CLIP student is saved without tokenizer files: pass a CLIPProcessor as image_processor (or a teacher "
        "checkpoint that has one), or add them later with CLIPProcessor.save_pretrained(output_dir)."
    )
    return None, image_processor


def save_student(student: PhregCLIPModel, processor, folder) -> None:
    """Save a CLIP student with its processor and the segmentation pipeline (`segmentation.py`)."""
    from ..evaluate.segmentation import save_pretrained_with_pipeline

    save_pretrained_with_pipeline(student, folder, processor)


def set_processor_resolution(image_processor, resolution: int) -> None:
    """Make a saved CLIP image processor resize/crop to the training resolution (448 for the paper's recipe)."""
    if image_processor is None:
        return
    if isinstance(getattr(image_processor, "size", None), dict) and "shortest_edge" in image_processor.size:
        image_processor.size = {"shortest_edge": resolution}
    if getattr(image_processor, "crop_size", None) is not None:
        image_processor.crop_size = {"height": resolution, "width": resolution}


__all__ = [
    "CLIP_REFERENCE_SETTINGS",
    "image_feature_cosine",
    "base_class_for",
    "build_student_and_teacher",
    "resolve_mode",
    "save_student",
    "set_processor_resolution",
    "split_processor",
]
