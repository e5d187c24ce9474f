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

DINOv3 has no position table: its only absolute-position signal is rotary attention seen from an unrotated token.
There the artifacts are planted in the first block's attention (`_plant_rope_artifacts`): each target position
gets one of DINOv3's own registers, whose key matches the rotated query of that position only, and whose value
writes the artifact vector into it, whatever the image.

Everything is built from a fixed seed, so the same arguments give the same model.
"""

from __future__ import annotations

import math

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

SYNTHETIC_MODEL_TYPES = ("dinov2", "vit", "clip_vision_model", "siglip_vision_model", "dinov3_vit")
# DINOv3's own registers (as the released ViTs have); each carries one planted artifact, so at most this many.
DINOV3_BASE_REGISTERS = 4


def _build_backbone(model_type: str, **config_kwargs) -> PreTrainedModel:
    if model_type == "dinov2":
        return Dinov2Model(Dinov2Config(**config_kwargs))
    if model_type == "vit":
        return ViTModel(ViTConfig(**config_kwargs))
    if model_type in ("clip_vision_model", "clip"):
        return CLIPVisionModel(CLIPVisionConfig(**config_kwargs))
    if model_type in ("siglip_vision_model", "siglip"):
        return SiglipVisionModel(SiglipVisionConfig(**config_kwargs))
    if model_type == "dinov3_vit":
        return DINOv3ViTModel(DINOv3ViTConfig(**config_kwargs, num_register_tokens=DINOV3_BASE_REGISTERS))
    raise ValueError(f"model_type must be one of {SYNTHETIC_MODEL_TYPES}, got {model_type!r}.")


def _patch_position_embeddings(model: PreTrainedModel) -> torch.Tensor:
    """`(P, C)` view of the patch position embeddings of a stock model (CLS position excluded)."""
    embeddings = model.embeddings
    if hasattr(embeddings, "position_embeddings"):  # DINOv2, ViT: (1, 1 + P, C)
        return embeddings.position_embeddings.data[0, 1:]
    if model.config.model_type.startswith("siglip"):  # SigLIP: (P, C), no CLS row
        return embeddings.position_embedding.weight.data
    return embeddings.position_embedding.weight.data[1:]  # CLIP: (1 + P, C)


def _final_norm(model: PreTrainedModel) -> torch.nn.LayerNorm:
    for name in ("post_layernorm", "layernorm", "norm"):  # CLIP / SigLIP, DINOv2 / ViT, DINOv3
        if hasattr(model, name):
            return getattr(model, name)
    raise ValueError(f"{type(model).__name__} has no final norm to plant on.")


@torch.no_grad()
def _plant_rope_artifacts(
    model: DINOv3ViTModel,
    positions: list[tuple[int, int]],
    artifact: torch.Tensor,
    generator: torch.Generator,
) -> None:
    """Position-locked artifacts in a stock `DINOv3ViTModel`, through head 0 of its first block (weights only).

    A patch query is rotated by its grid position, a register key is not, so `q_p . k_reg` depends on where p is:
    - every patch's head-0 query is one constant (the `q_proj` bias), with one unit on three RoPE frequency pairs
      per axis (a fast one, a slower one to remove the fast one's alias, and the slowest, nearly constant one);
    - register m holds a large value on its own marker channel (0 elsewhere), so after `norm1` only its key and
      value are non-zero on head 0. Its key is the rotated query of target m on the fast and slower pairs, minus
      an offset on the slowest pair: its logit is about +6 at target m and far below 0 elsewhere, against about 0
      for every other key, so only target m attends to it;
    - its value, through `o_proj`, is `artifact`: the target token gets it added whatever the image.
    The patch embedding is made zero-mean over channels and zero on the marker channels, so that `norm1` keeps the
    patches' marker channels at 0 (their keys and values on head 0 vanish; otherwise the image would leak in).
    """
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    pairs = (
        head_dim // 4
    )  # RoPE pairs per axis: dim i (y: i < pairs, x: pairs <= i < 2 pairs) pairs with i + hd/2
    if pairs < 3:
        raise ValueError(
            f"A planted DINOv3 needs a head size of at least 12 (3 rotary frequencies per axis), got {head_dim}; "
            "use fewer attention heads or a larger hidden_size."
        )
    grid_height = config.image_size // config.patch_size
    fast, slower, slowest = 0, 1, pairs - 1
    strength = 8.0  # logit scale of the fast and slower pairs
    inv_freq = model.rope_embeddings.inv_freq
    attention = model.model.layer[0].attention
    head = slice(0, head_dim)
    hidden = config.hidden_size
    markers = torch.randperm(hidden, generator=generator)[: len(positions)]

    embeddings = model.embeddings
    registers = embeddings.register_tokens
    registers.zero_()
    registers[0, torch.arange(len(positions)), markers] = 10.0
    conv = embeddings.patch_embeddings
    keep = torch.ones(hidden, dtype=torch.bool)
    keep[markers] = False
    conv.weight[markers] = 0
    conv.bias[markers] = 0
    conv.weight[keep] -= conv.weight[keep].mean(0, keepdim=True)
    conv.bias[keep] -= conv.bias[keep].mean()
    embeddings.cls_token[..., markers] = 0
    embeddings.mask_token[..., markers] = 0

    query = torch.zeros(head_dim)
    for axis in (0, 1):
        query[axis * pairs + torch.tensor([fast, slower, slowest])] = 1.0
    attention.q_proj.weight[head] = 0
    attention.q_proj.bias[head] = query
    attention.k_proj.weight[head] = 0
    attention.v_proj.weight[head] = 0
    if attention.v_proj.bias is not None:
        attention.v_proj.bias[head] = 0
    scaling = head_dim**-0.5
    for m, (row, col) in enumerate(positions):
        key = torch.zeros(head_dim)
        for axis, index in ((0, row), (1, col)):
            coordinate = 2.0 * (index + 0.5) / grid_height - 1.0  # patch centre in [-1, 1], as DINOv3
            for pair in (fast, slower):
                phase = 2 * math.pi * coordinate * inv_freq[pair].item()
                dim = axis * pairs + pair
                key[dim], key[dim + head_dim // 2] = strength * math.cos(phase), strength * math.sin(phase)
            key[axis * pairs + slowest] = -(2 * strength - 3.0)
        # After norm1 the register is a one-hot scaled by its LayerNorm factor: divide it out.
        normed = torch.nn.functional.layer_norm(registers[0, m], (hidden,))[markers[m]]
        attention.k_proj.weight[head, markers[m]] = key / scaling / normed
        attention.v_proj.weight[head, markers[m]] = 1.0 / normed
    # Head 0's output is ~1 on each of its dims at a target: `o_proj` maps it onto the artifact vector.
    attention.o_proj.weight[:, head] = (artifact / head_dim)[:, None]


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
    """A small stock `Dinov2Model` / `ViTModel` / `CLIPVisionModel` / `SiglipVisionModel` / `DINOv3ViTModel` with
    planted, documented artifacts.

    Args:
        model_type: one of `SYNTHETIC_MODEL_TYPES`. For "dinov3_vit" (no position table) the artifacts are planted
            through rotary attention (`_plant_rope_artifacts`), at most `DINOV3_BASE_REGISTERS` of them.
        hidden_size, num_hidden_layers, num_attention_heads, image_size, patch_size: the backbone's size.
        artifact_positions: `(row, col)` patch-grid positions that get the artifact vector (default: three
            spread positions, see `default_artifact_positions`).
        artifact_scale: norm of the artifact vector in units of the typical position-embedding norm (DINOv3: of
            the typical patch-embedding token of unit-variance pixels, the Frobenius norm of its projection).
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
    if model_type == "dinov3_vit" and len(positions) > DINOV3_BASE_REGISTERS:
        raise ValueError(
            f"A planted DINOv3 takes at most {DINOV3_BASE_REGISTERS} artifact positions (one per register of its "
            f"own), got {len(positions)}."
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
            if model_type == "dinov3_vit":
                typical_norm = model.embeddings.patch_embeddings.weight.norm()
                artifact = artifact / artifact.norm() * artifact_scale * typical_norm
                _plant_rope_artifacts(model, positions, artifact, generator)
            else:
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
        "planted_in": "first block's attention to the base registers (rotary positions)"
        if model_type == "dinov3_vit"
        else "position embeddings",
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


def planted_model_image_processor(model_type: str, image_size: int):
    """The image processor a saved planted model comes with, as its family's own: SigLIP's (resize to
    `image_size` square, mean and std 0.5), else a DINOv2-style one (short side to `image_size`, center crop,
    ImageNet mean and std; DINOv3 uses the same statistics)."""
    import importlib.util

    import transformers
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    siglip = model_type.startswith("siglip")
    name = "SiglipImageProcessor" if siglip else "BitImageProcessor"
    # Without torchvision, transformers 5 falls back to (and warns about) the PIL backend; pick it directly.
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, name + "Pil"):
        name += "Pil"
    processor_class = getattr(transformers, name)
    if siglip:
        return processor_class(
            size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
    return processor_class(
        size={"shortest_edge": image_size},
        resample=3,
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


def save_planted_artifact_model(folder, model_type: str = "dinov2", **kwargs) -> PreTrainedModel:
    """Build `build_planted_artifact_model(model_type, **kwargs)` and save it, with its image processor
    (`planted_model_image_processor`), into `folder`: a local base for `examples/distill.py --teacher FOLDER`
    and `phreg eval --base FOLDER`."""
    model = build_planted_artifact_model(model_type, **kwargs)
    model.save_pretrained(folder)
    planted_model_image_processor(model_type, model.config.image_size).save_pretrained(folder)
    return model
