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
"""A tiny full CLIP with planted artifacts, an offline tokenizer and a synthetic labelled segmentation set.

For tests, the README picture and the benchmark: no CLIP weights can be downloaded here. The vision tower is
`synthetic.build_planted_artifact_model("clip_vision_model", ...)` (random init, position-locked artifacts
planted); the text tower is random init too. Such a model runs every code path of distillation, segmentation and
mIoU evaluation, but its text and image features are NOT aligned: its segmentations and mIoU are noise and say
nothing about PH-Reg's effect on real CLIP models.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .synthetic import build_planted_artifact_model

# CLIP's byte-level BPE: 256 byte characters, the same with the end-of-word suffix, then the two special tokens.
TINY_VOCAB_SIZE = 2 * 256 + 2


def build_tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with no merges: every byte is a token (`<w>` suffix at word ends), ids < 514, offline."""
    characters = list(bytes_to_unicode().values())
    vocab = {character: index for index, character in enumerate(characters)}
    vocab.update({character + "</w>": 256 + index for index, character in enumerate(characters)})
    vocab["<|startoftext|>"] = 2 * 256
    vocab["<|endoftext|>"] = 2 * 256 + 1
    return CLIPTokenizer(vocab=vocab, merges=[])


def build_tiny_clip_processor(image_size: int) -> CLIPProcessor:
    """`CLIPProcessor` with the tiny tokenizer and CLIP's image processor at `image_size` (OpenAI mean/std)."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=build_tiny_clip_tokenizer())


def build_planted_artifact_clip(
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    image_size: int = 64,
    patch_size: int = 8,
    projection_dim: int = 24,
    seed: int = 0,
    **artifact_kwargs,
) -> CLIPModel:
    """A tiny stock `CLIPModel` (random init) whose vision tower has planted position-locked artifacts.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads: size of both towers.
        image_size, patch_size: the vision tower's native size.
        projection_dim: joint text-image space size.
        seed: fixes every random number.
        artifact_kwargs: passed to `synthetic.build_planted_artifact_model` (positions, scale, ...).

    Returns:
        The `CLIPModel` in eval mode, `config.phreg_synthetic` describing what was planted.
    """
    vision = build_planted_artifact_model(
        "clip_vision_model",
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        image_size=image_size,
        patch_size=patch_size,
        seed=seed,
        **artifact_kwargs,
    )
    tokenizer_ids = build_tiny_clip_tokenizer()
    text_config = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=4 * hidden_size,
        vocab_size=TINY_VOCAB_SIZE,
        bos_token_id=tokenizer_ids.bos_token_id,
        eos_token_id=tokenizer_ids.eos_token_id,
        pad_token_id=tokenizer_ids.pad_token_id,
    )
    config = CLIPConfig(
        text_config=text_config, vision_config=vision.config.to_dict(), projection_dim=projection_dim
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed + 7)
    try:
        model = CLIPModel(config).eval()
    finally:
        torch.random.set_rng_state(state)
    model.vision_model.load_state_dict(vision.state_dict())
    model.config.phreg_synthetic = vision.config.phreg_synthetic
    return model


def save_planted_artifact_clip(folder: str | os.PathLike, **kwargs) -> CLIPModel:
    """Build `build_planted_artifact_clip(**kwargs)` and save it with its `CLIPProcessor` into `folder`."""
    model = build_planted_artifact_clip(**kwargs)
    model.save_pretrained(folder)
    build_tiny_clip_processor(model.config.vision_config.image_size).save_pretrained(folder)
    return model


# Colours of the synthetic segmentation set: class index -> RGB (class 0, background, is grey).
SYNTHETIC_CLASS_COLOURS = {0: (128, 128, 128), 1: (220, 40, 40), 2: (40, 60, 220)}
SYNTHETIC_CLASS_NAMES = ["background", "red square", "blue disc, blue circle"]


def write_synthetic_segmentation_set(
    root: str | os.PathLike, num_images: int = 4, size: tuple[int, int] = (72, 96), seed: int = 0
) -> tuple[Path, Path, Path]:
    """A small labelled set: grey images with a red square (class 1) and a blue disc (class 2), plus noise.

    Writes `root/images/NAME.png`, `root/masks/NAME.png` (pixel value = class index, 255 on a 1-pixel border as
    "ignore") and `root/classes.txt` (one class per line, synonyms split by ", ").

    Returns:
        `(images_dir, masks_dir, class_file)`.
    """
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    rows, cols = np.mgrid[:height, :width]
    for index in range(num_images):
        mask = np.zeros((height, width), dtype=np.uint8)
        side = int(rng.integers(height // 4, height // 2))
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width // 2 - side // 2))
        mask[top : top + side, left : left + side] = 1
        radius = int(rng.integers(height // 8, height // 4))
        cy, cx = int(rng.integers(radius, height - radius)), int(rng.integers(width // 2, width - radius))
        mask[(rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2] = 2
        image = np.zeros((height, width, 3), dtype=np.float64)
        for label, colour in SYNTHETIC_CLASS_COLOURS.items():
            image[mask == label] = colour
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        mask[0, :] = mask[-1, :] = 255
        name = f"synthetic_{index:03d}.png"
        Image.fromarray(image).save(images_dir / name)
        Image.fromarray(mask).save(masks_dir / name)
    class_file = root / "classes.txt"
    class_file.write_text("\n".join(SYNTHETIC_CLASS_NAMES) + "\n")
    return images_dir, masks_dir, class_file


__all__ = [
    "SYNTHETIC_CLASS_NAMES",
    "build_planted_artifact_clip",
    "build_tiny_clip_processor",
    "build_tiny_clip_tokenizer",
    "save_planted_artifact_clip",
    "write_synthetic_segmentation_set",
]
