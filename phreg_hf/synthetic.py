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
"""Small random-init backbones with planted artifacts, for the offline demo, the tests and the benchmarks.

No ViT weights can be downloaded here, and random-init models have none of the artifacts PH-Reg removes, so
we plant them, as docs/method.md describes, and say so wherever they are used:

- position-locked artifacts: a large vector is added to the position embeddings at a few grid positions, so
  those positions show (nearly) the same feature whatever the image;
- uneven final-norm weights: the artifact vector lives on a few channels whose final LayerNorm weight is large,
  so artifact tokens also have a high norm after the final norm (with all-ones weights every token would have
  the same norm and a norm-based outlier measure would see nothing).

Everything is built from a fixed seed, so the same arguments give the same model.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    PreTrainedModel,
    ViTConfig,
    ViTModel,
)

SYNTHETIC_MODEL_TYPES = ("dinov2", "vit", "clip_vision_model")


def _build_backbone(model_type: str, **config_kwargs) -> PreTrainedModel:
    if model_type == "dinov2":
        return Dinov2Model(Dinov2Config(**config_kwargs))
    if model_type == "vit":
        return ViTModel(ViTConfig(**config_kwargs))
    if model_type in ("clip_vision_model", "clip"):
        return CLIPVisionModel(CLIPVisionConfig(**config_kwargs))
    raise ValueError(f"model_type must be one of {SYNTHETIC_MODEL_TYPES}, got {model_type!r}.")


def _patch_position_embeddings(model: PreTrainedModel) -> torch.Tensor:
    """`(P, C)` view of the patch position embeddings of a stock model (CLS position excluded)."""
    embeddings = model.embeddings
    if hasattr(embeddings, "position_embeddings"):  # DINOv2, ViT: (1, 1 + P, C)
        return embeddings.position_embeddings.data[0, 1:]
    return embeddings.position_embedding.weight.data[1:]  # CLIP: (1 + P, C)


def _final_norm(model: PreTrainedModel) -> torch.nn.LayerNorm:
    return model.post_layernorm if hasattr(model, "post_layernorm") else model.layernorm


def default_artifact_positions(grid_size: int) -> list[tuple[int, int]]:
    """Three fixed grid positions, spread over the image as background artifacts tend to be."""
    last = grid_size - 1
    return [(1, 1), (last // 2, last - 1), (last - 1, last // 3)]


def build_planted_artifact_model(
    model_type: str = "dinov2",
    hidden_size: int = 64,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    image_size: int = 112,
    patch_size: int = 14,
    artifact_positions: list[tuple[int, int]] | None = None,
    artifact_scale: float = 30.0,
    artifact_channels: int = 4,
    norm_weight_boost: float = 4.0,
    seed: int = 0,
) -> PreTrainedModel:
    """A small stock `Dinov2Model` / `ViTModel` / `CLIPVisionModel` with planted, documented artifacts.

    Args:
        model_type: "dinov2", "vit" or "clip_vision_model".
        hidden_size, num_hidden_layers, num_attention_heads, image_size, patch_size: the backbone's size.
        artifact_positions: `(row, col)` patch-grid positions that get the artifact vector (default: three
            spread positions, see `default_artifact_positions`).
        artifact_scale: norm of the artifact vector in units of the typical position-embedding norm.
        artifact_channels: how many channels the artifact vector lives on.
        norm_weight_boost: final-LayerNorm weight on those channels (1.0 elsewhere).
        seed: fixes every random number, so equal arguments give equal models.

    Returns:
        The stock transformers model (eval mode), with `config.phreg_synthetic` describing what was planted.
    """
    grid_size = image_size // patch_size
    positions = (
        artifact_positions if artifact_positions is not None else default_artifact_positions(grid_size)
    )
    for row, col in positions:
        if not (0 <= row < grid_size and 0 <= col < grid_size):
            raise ValueError(
                f"Artifact position {(row, col)} lies outside the {grid_size}x{grid_size} patch grid."
            )
    if not 0 < artifact_channels <= hidden_size:
        raise ValueError(
            f"artifact_channels must be in [1, hidden_size={hidden_size}], got {artifact_channels}."
        )

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        size_kwargs = dict(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            image_size=image_size,
            patch_size=patch_size,
        )
        if model_type != "dinov2":
            size_kwargs["intermediate_size"] = 4 * hidden_size
        model = _build_backbone(model_type, **size_kwargs).eval()
        generator = torch.Generator().manual_seed(seed + 1)
        channels = torch.randperm(hidden_size, generator=generator)[:artifact_channels]
        artifact = torch.zeros(hidden_size)
        artifact[channels] = torch.randn(artifact_channels, generator=generator).sign()
        with torch.no_grad():
            position_embeddings = _patch_position_embeddings(model)
            typical_norm = position_embeddings.norm(dim=-1).median()
            artifact = artifact / artifact.norm() * artifact_scale * typical_norm
            for row, col in positions:
                position_embeddings[row * grid_size + col] += artifact
            _final_norm(model).weight[channels] = norm_weight_boost
    finally:
        torch.random.set_rng_state(generator_state)

    model.config.phreg_synthetic = {
        "description": "random-init backbone with planted position-locked artifacts (synthetic, not pretrained)",
        "artifact_positions": [list(p) for p in positions],
        "artifact_scale": artifact_scale,
        "artifact_channels": channels.tolist(),
        "norm_weight_boost": norm_weight_boost,
        "seed": seed,
    }
    return model


def artifact_patch_indices(model: PreTrainedModel) -> list[int]:
    """Flat patch indices (row-major) of the artifacts planted by `build_planted_artifact_model`."""
    info = getattr(model.config, "phreg_synthetic", None)
    if info is None:
        raise ValueError("This model has no planted artifacts; build it with build_planted_artifact_model().")
    grid_size = model.config.image_size // model.config.patch_size
    return [row * grid_size + col for row, col in info["artifact_positions"]]
