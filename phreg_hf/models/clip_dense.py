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
"""Text-aligned dense CLIP features: the NACLIP teacher path, the MaskCLIP path, and the trainer's CLIP settings.

docs/method.md, section 7: PH-Reg distills CLIP in its joint text-image space. Both paths run the frozen vision tower up to
its last block, then replace that block, without new weights, by a *reduced* form (no residual, no MLP), and
finish with `post_layernorm` and `visual_projection`:

- MaskCLIP: each patch token alone, `layer_norm1 -> v_proj -> out_proj` (no attention mixing). This is the
  student's dense path (`PhregCLIPModel.get_dense_image_features`) and a baseline of the paper.
- NACLIP (the teacher): attention whose logits are key-key similarity `k k^T * head_dim^-0.5` plus a Gaussian
  neighbourhood bias `exp(-d^2 / (2 std^2))` between patches at grid distance d (std 5.0, NACLIP's default; CLS
  and registers get no bias), then `out_proj`.

A test-time-registers CLIP (`modeling_phreg_ttr`, a stock `CLIPModel` with hooks) goes through the same paths:
`PhregCLIPModel.from_base` copies the weights into new modules, so `as_phreg_clip` installs the model's two hooks
on the copy (`with_test_time_registers`): its extra token(s) sit after the patches through the blocks, take part
in NACLIP's attention without neighbourhood bias (as registers do), and are left out of the dense output. The dense
paths replace the last block, so register neurons of the last block have no effect there.

The teacher's targets are NACLIP tokens averaged over shifted/flipped views (`teacher.DenoisingTeacher`, which
only needs a model with `get_patch_tokens`: `CLIPDenseModel` here).

This file travels with CLIP checkpoints (the segmentation pipeline imports it): it imports only torch,
transformers and `.modeling_phreg_clip`. The trainer's CLIP settings and hooks live in `clip_training.py`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn
from transformers import CLIPModel

from .modeling_phreg_clip import PhregCLIPModel

# NACLIP's default neighbourhood standard deviation, in patches.
DEFAULT_NACLIP_STD = 5.0
DENSE_MODES = ("naclip", "maskclip")
# How position embeddings are resized to another patch grid: transformers' CLIP rule (bicubic to `size=`), or the
# rule of the reference harness (NACLIP's and PH-Reg's `interpolate_pos_encoding`), which the benchmark presets use.
POSITION_INTERPOLATIONS = ("transformers", "reference")


def gaussian_neighbourhood_bias(
    grid_size: tuple[int, int], std: float = DEFAULT_NACLIP_STD, device=None, dtype=torch.float32
) -> torch.Tensor:
    """`(h*w, h*w)` NACLIP attention bias: `exp(-d^2 / (2 std^2))`, d the distance of two patches on the grid
    (in patches, row-major order), 1 on the diagonal."""
    height, width = grid_size
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float64),
        torch.arange(width, device=device, dtype=torch.float64),
        indexing="ij",
    )
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1)
    squared = torch.cdist(coords, coords).square()
    return torch.exp(-squared / (2 * std**2)).to(dtype)


def naclip_attention(
    block: nn.Module,
    hidden_states: torch.Tensor,
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 1,
    std: float = DEFAULT_NACLIP_STD,
    num_suffix_tokens: int = 0,
) -> torch.Tensor:
    """NACLIP's reduced last block on a `CLIPEncoderLayer`: key-key attention + neighbourhood bias, out_proj only.

    Args:
        block: a transformers `CLIPEncoderLayer` (its `layer_norm1` and `self_attn` weights are used).
        hidden_states: `(B, T, C)` tokens entering the block, `[prefix (CLS, registers), patches, suffix]`.
        grid_size: `(h, w)` with `h * w = T - num_prefix_tokens - num_suffix_tokens`.
        num_prefix_tokens: tokens before the patches; they attend and are attended to, without bias.
        std: standard deviation of the Gaussian bias, in patches.
        num_suffix_tokens: tokens after the patches (test-time registers), treated as the prefix is.

    Returns:
        `(B, T, C)` attention outputs after `out_proj` (no residual, no MLP).
    """
    attention = block.self_attn
    batch, length, channels = hidden_states.shape
    num_patches = grid_size[0] * grid_size[1]
    end = length - num_suffix_tokens
    if end - num_prefix_tokens != num_patches:
        raise ValueError(
            f"{length} tokens with {num_prefix_tokens} prefix and {num_suffix_tokens} suffix tokens do not fit a "
            f"{grid_size} grid of patches."
        )
    normed = block.layer_norm1(hidden_states)
    heads = (batch, length, attention.num_heads, attention.head_dim)
    keys = attention.k_proj(normed).view(heads).transpose(1, 2)  # (B, H, T, d)
    values = attention.v_proj(normed).view(heads).transpose(1, 2)
    bias = torch.zeros(length, length, device=hidden_states.device, dtype=keys.dtype)
    bias[num_prefix_tokens:end, num_prefix_tokens:end] = gaussian_neighbourhood_bias(
        grid_size, std, hidden_states.device, keys.dtype
    )
    logits = keys @ keys.transpose(-1, -2) * attention.scale + bias
    output = logits.softmax(dim=-1) @ values  # (B, H, T, d)
    return attention.out_proj(output.transpose(1, 2).reshape(batch, length, channels))


def naclip_dense_features(
    clip: PhregCLIPModel, pixel_values: torch.Tensor, std: float = DEFAULT_NACLIP_STD
) -> torch.Tensor:
    """`(B, 3, H, W)` -> `(B, h*w, projection_dim)`: NACLIP's reduced last layer on the standard last block, then
    `post_layernorm` and `visual_projection` (registers, if any, are prefix tokens without bias; test-time
    registers are suffix tokens without bias, left out of the output)."""
    vision = clip.vision_model
    grid_size = vision.check_pixel_values(pixel_values)
    hidden_states = clip._tokens_before_last_block(pixel_values)
    prefix, suffix = vision.num_prefix_tokens, num_test_time_registers(clip)
    tokens = naclip_attention(vision.transformer_blocks[-1], hidden_states, grid_size, prefix, std, suffix)
    return clip.visual_projection(vision.post_layernorm(tokens[:, prefix : tokens.shape[1] - suffix]))


def maskclip_dense_features(clip: PhregCLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """`(B, 3, H, W)` -> `(B, h*w, projection_dim)`: `get_dense_image_features`; with test-time registers the
    extra tokens go through the blocks and are dropped before the value path (which maps each token alone)."""
    suffix = num_test_time_registers(clip)
    if not suffix:
        return clip.get_dense_image_features(pixel_values)
    hidden_states = clip._tokens_before_last_block(pixel_values)
    return clip._dense_from_tokens(hidden_states[:, :-suffix])


def is_test_time_registers_model(model: nn.Module) -> bool:
    """Whether `model` is a `PhregTestTimeRegistersModel` (also a trust_remote_code copy), of any base."""
    return type(model).__name__ in ("PhregTestTimeRegistersModel", "PhregTestTimeRegistersBackbone")


def num_test_time_registers(clip: nn.Module) -> int:
    """Test-time registers appended after the patches of a `with_test_time_registers` copy (0 for any other)."""
    return getattr(clip, "phreg_num_test_time_registers", 0)


def with_test_time_registers(ttr: nn.Module) -> PhregCLIPModel:
    """A 0-register `PhregCLIPModel` copy of a test-time-registers CLIP's base, carrying the model's two hooks.

    `from_base` copies the base's weights into new modules, so the hooks on the base do not fire there: the same
    hook functions go onto the copy's vision embeddings (the extra token(s) after the patches) and onto the `fc2` of
    each block with register neurons (their activations moved into the extra tokens). With no register neuron
    there is no hook and no extra token, and the copy computes exactly what the base computes.
    """
    if not isinstance(ttr.model, CLIPModel):
        raise ValueError(
            f"Dense CLIP features need a test-time-registers model of a full CLIP (CLIPModel, with text tower and "
            f"projections); this one wraps a {type(ttr.model).__name__}. Make it with `phreg test-time-registers "
            "--base` a full CLIP checkpoint such as openai/clip-vit-base-patch16."
        )
    clip = PhregCLIPModel.from_base(ttr.model, 0).eval()
    if not ttr.active:
        return clip
    vision = clip.vision_model
    # The hooks of the model itself; they read only the extra-token count and the prefix length (1 here, CLS).
    vision.embeddings.register_forward_hook(ttr._append_registers)
    for layer, neurons in ttr.config.layer_neurons().items():
        vision.transformer_blocks[layer].mlp.fc2.register_forward_pre_hook(ttr._move_activations(neurons))
    clip.phreg_num_test_time_registers = ttr.num_test_time_registers
    return clip


def reference_position_embeddings(table: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """The reference harness's position-embedding interpolation (NACLIP / PH-Reg `interpolate_pos_encoding`).

    Bicubic (A = -0.75, align_corners False) with `scale_factor = ((rows + 0.1) / side, (cols + 0.1) / side)` and
    `recompute_scale_factor=False`, so PyTorch samples source position `(dst + 0.5) * side / (n + 0.1) - 0.5`, not
    `side / n` as `size=` (transformers' rule) does; the difference is 1.5-2 % relative on a smooth table for
    448 -> 336 px crops, enough to move a benchmark's mIoU. At the table's own square grid the table is returned
    as is (the reference does not interpolate there either).

    Args:
        table: `(1 + side * side, C)` the stored table, CLS position first.
        grid_size: `(rows, cols)` patch grid of the input.

    Returns:
        `(1 + rows * cols, C)`, CLS position unchanged and first.
    """
    num_positions = table.shape[0] - 1
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(f"A position table of {num_positions} patch positions is not a square grid.")
    rows, cols = grid_size
    if (rows, cols) == (side, side):
        return table
    grid = table[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = nn.functional.interpolate(
        grid.float()
        if grid.dtype in (torch.float16, torch.bfloat16)
        else grid,  # bicubic needs float32+ on CPU
        scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
        mode="bicubic",
        align_corners=False,
        recompute_scale_factor=False,
    ).to(table.dtype)
    if tuple(resized.shape[-2:]) != (rows, cols):  # floor(side * (n + 0.1) / side) is n; guard float rounding
        raise ValueError(
            f"Interpolating a {side}x{side} table gave {tuple(resized.shape[-2:])}, not {grid_size}."
        )
    return torch.cat([table[:1], resized.permute(0, 2, 3, 1).reshape(rows * cols, -1)])


@contextmanager
def position_interpolation(clip: nn.Module, rule: str = "transformers") -> Iterator[None]:
    """Within the block, `clip`'s vision embeddings resize position embeddings by `rule` (`POSITION_INTERPOLATIONS`).

    "transformers" changes nothing. "reference" routes `CLIPVisionEmbeddings.interpolate_pos_encoding` of this one
    model instance through `reference_position_embeddings` (any CLIPVisionEmbeddings, also a remote-code copy),
    and restores it on exit.
    """
    if rule not in POSITION_INTERPOLATIONS:
        raise ValueError(f"position interpolation must be one of {POSITION_INTERPOLATIONS}, got {rule!r}.")
    if rule == "transformers":
        yield
        return
    vision = clip.vision_model
    embeddings = vision.embeddings
    patch = embeddings.patch_size

    def interpolate(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        table = reference_position_embeddings(
            embeddings.position_embedding.weight, (height // patch, width // patch)
        )
        return table[None]

    had_own = "interpolate_pos_encoding" in vars(embeddings)
    previous = vars(embeddings).get("interpolate_pos_encoding")
    embeddings.interpolate_pos_encoding = interpolate
    try:
        yield
    finally:
        if had_own:
            embeddings.interpolate_pos_encoding = previous
        else:
            del embeddings.interpolate_pos_encoding


def as_phreg_clip(model: nn.Module) -> PhregCLIPModel:
    """A `PhregCLIPModel` as it is; a stock `CLIPModel` wrapped with 0 registers (computes exactly the same); a
    test-time-registers CLIP as `with_test_time_registers` (its base with its hooks)."""
    if isinstance(model, CLIPModel):
        return PhregCLIPModel.from_base(model, 0).eval()
    if is_test_time_registers_model(model):
        return with_test_time_registers(model)  # ValueError naming the fix unless it wraps a full CLIP
    if type(model).__name__ == "PhregCLIPModel":  # also a trust_remote_code copy of the class
        return model
    raise ValueError(
        f"Dense CLIP features need a full CLIP model (CLIPModel or PhregCLIPModel, with text tower and projections), "
        f"got {type(model).__name__}. Pass a CLIP checkpoint such as openai/clip-vit-base-patch16, a PH-Reg CLIP "
        "student saved by the trainer with --clip_dense_mode naclip, or a test-time-registers model of a full CLIP."
    )


def dense_features(
    clip: nn.Module, pixel_values: torch.Tensor, mode: Literal["naclip", "maskclip"] = "maskclip"
) -> torch.Tensor:
    """Text-aligned dense features `(B, h*w, projection_dim)` of `(B, 3, H, W)` images.

    `maskclip` is the value path (`get_dense_image_features`: for a PH-Reg student its distilled dense output, for a
    base CLIP the MaskCLIP baseline); `naclip` runs NACLIP's reduced last layer on the standard last block.
    """
    if mode == "maskclip":
        return maskclip_dense_features(clip, pixel_values)
    if mode == "naclip":
        return naclip_dense_features(clip, pixel_values)
    raise ValueError(f"Dense mode must be one of {DENSE_MODES}, got {mode!r}.")


class CLIPDenseModel(nn.Module):
    """A frozen CLIP seen through one dense path, with the `get_patch_tokens` interface of `DenoisingTeacher`.

    Args:
        clip: a `PhregCLIPModel` (usually `from_base(base, 0)`) or a stock `CLIPModel`.
        mode: "naclip" (the PH-Reg teacher) or "maskclip".
    """

    def __init__(self, clip: nn.Module, mode: Literal["naclip", "maskclip"] = "naclip"):
        super().__init__()
        if mode not in DENSE_MODES:
            raise ValueError(f"mode must be one of {DENSE_MODES}, got {mode!r}.")
        self.clip = as_phreg_clip(clip)
        self.mode = mode
        # The vision config (patch_size for the teacher) plus the mode, so that a teacher cache's model hash
        # tells NACLIP and MaskCLIP targets apart.
        self.config = copy.deepcopy(self.clip.config.vision_config)
        self.config.phreg_clip_dense_mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def get_patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, h*w, projection_dim)` dense features of this model's mode."""
        return dense_features(self.clip, pixel_values, self.mode)


@torch.no_grad()
def image_feature_cosine(base: nn.Module, student: nn.Module, pixel_values: torch.Tensor) -> float:
    """Mean cosine between base and student `get_image_features` `(n, projection_dim)` on `(n, 3, H, W)` images:
    how far the student's image-level (classification) embedding drifted from the base's."""
    base = as_phreg_clip(base)
    want = base.get_image_features(pixel_values).pooler_output
    got = student.get_image_features(pixel_values).pooler_output
    return float(torch.nn.functional.cosine_similarity(got.float(), want.float(), dim=-1).mean())


__all__ = [
    "CLIPDenseModel",
    "DEFAULT_NACLIP_STD",
    "DENSE_MODES",
    "POSITION_INTERPOLATIONS",
    "as_phreg_clip",
    "dense_features",
    "gaussian_neighbourhood_bias",
    "image_feature_cosine",
    "is_test_time_registers_model",
    "maskclip_dense_features",
    "naclip_attention",
    "naclip_dense_features",
    "num_test_time_registers",
    "position_interpolation",
    "reference_position_embeddings",
    "with_test_time_registers",
]
