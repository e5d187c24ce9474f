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
"""How far a CLIP student's image-level embedding drifts from the base, and why the value path has its own weights.

    python benchmarks/bench_clip_drift.py              # ~1 minute on 2 CPU cores

A tiny planted-artifact CLIP (`synthetic_clip.py`, random init) is distilled with the trainer in the paper's CLIP
mode (NACLIP teacher, value-path student, 2 registers) on synthetic images, for a few step counts. For each
result, on held-out synthetic images at the training resolution, the mean cosine between the student's and the
base's `get_image_features` is printed for:

- as built: the value path keeps its own copy of the last block's `layer_norm1` / `v_proj` / `out_proj`
  (`PhregCLIPModel`), so only the registers, position embeddings and patch embedding move the CLS path;
- shared (counterfactual): the same trained student with the trained value-path weights also put into the
  standard last block, i.e. what sharing one set of weights between both paths would give.

Random-init weights: the absolute numbers say nothing about a pretrained CLIP; the comparison between the two
columns in the same run is the point.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from PIL import Image

from phreg_hf.distill.trainer import DistillArguments, DistillTrainer
from phreg_hf.models.clip_dense import image_feature_cosine
from phreg_hf.synthetic_clip import (
    build_planted_artifact_clip,
    build_tiny_clip_processor,
    write_synthetic_segmentation_set,
)


def shared_counterfactual(student):
    shared = copy.deepcopy(student)
    block = shared.vision_model.transformer_blocks[-1]
    with torch.no_grad():
        block.layer_norm1.load_state_dict(shared.dense_value_path.layer_norm1.state_dict())
        block.self_attn.v_proj.load_state_dict(shared.dense_value_path.v_proj.state_dict())
        block.self_attn.out_proj.load_state_dict(shared.dense_value_path.out_proj.state_dict())
    return shared


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="phreg-drift-"))
    train, _, _ = write_synthetic_segmentation_set(root / "train", num_images=16, size=(64, 64), seed=0)
    heldout, _, _ = write_synthetic_segmentation_set(root / "heldout", num_images=16, size=(64, 64), seed=1)
    processor = build_tiny_clip_processor(64)
    images = [Image.open(p).convert("RGB") for p in sorted(heldout.iterdir())]
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    base = build_planted_artifact_clip(image_size=64, patch_size=8)
    print("| optimizer steps | cosine to base, as built (own value-path weights) | cosine, shared weights |")
    print("|---|---|---|")
    for steps in (1, 10, 40):
        args = DistillArguments(
            train_dir=str(train),
            output_dir=str(root / f"out-{steps}"),
            num_register_tokens=2,
            num_views=4,
            max_steps=steps,
            per_device_train_batch_size=8,
            learning_rate=3e-3,
            final_learning_rate=3e-4,
            report_to="none",
            num_preview_images=0,
            checkpointing_steps=0,
            num_eval_images=4,
        )
        trainer = DistillTrainer(args, base_model=base, image_processor=processor)
        trainer.train()
        student = trainer.accelerator.unwrap_model(trainer.student).eval()
        separate = image_feature_cosine(base, student, pixel_values)
        shared = image_feature_cosine(base, shared_counterfactual(student), pixel_values)
        print(f"| {steps} | {separate:.4f} | {shared:.4f} |")
    print(
        f"\n(16 held-out synthetic images at 64 px, tiny random-init CLIP, lr 3e-3 -> 3e-4; outputs in {root})"
    )


if __name__ == "__main__":
    main()
