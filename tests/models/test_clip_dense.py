"""NACLIP / MaskCLIP dense CLIP paths against independent formulas, and the trainer's CLIP dense mode."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_base
from safetensors.torch import load_file

from phreg_hf import PhregCLIPModel
from phreg_hf.distill.clip_training import resolve_mode
from phreg_hf.distill.teacher_cache import hash_model
from phreg_hf.distill.trainer import DistillArguments, DistillTrainer
from phreg_hf.models.clip_dense import (
    CLIPDenseModel,
    dense_features,
    gaussian_neighbourhood_bias,
    naclip_attention,
)
from phreg_hf.synthetic_clip import (
    build_planted_artifact_clip,
    build_tiny_clip_processor,
    write_synthetic_segmentation_set,
)


@pytest.fixture(scope="module")
def base():
    return build_planted_artifact_clip(image_size=64, patch_size=8)


def naclip_by_hand(block, tokens: torch.Tensor, grid: tuple[int, int], std: float = 5.0) -> torch.Tensor:
    """NACLIP's reduced block written out head by head and pair by pair, from docs/method.md's formula."""
    attention = block.self_attn
    batch, length, channels = tokens.shape
    heads, head_dim = attention.num_heads, channels // attention.num_heads
    x = block.layer_norm1(tokens)
    keys, values = attention.k_proj(x), attention.v_proj(x)
    bias = torch.zeros(length, length)
    for i in range(1, length):
        for j in range(1, length):
            (ri, ci), (rj, cj) = divmod(i - 1, grid[1]), divmod(j - 1, grid[1])
            bias[i, j] = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * std**2))
    outputs = []
    for h in range(heads):
        k = keys[..., h * head_dim : (h + 1) * head_dim]
        v = values[..., h * head_dim : (h + 1) * head_dim]
        logits = torch.einsum("bid,bjd->bij", k, k) / math.sqrt(head_dim) + bias
        outputs.append(torch.softmax(logits, dim=-1) @ v)
    return attention.out_proj(torch.cat(outputs, dim=-1))


def test_gaussian_bias_formula():
    bias = gaussian_neighbourhood_bias((3, 4), std=2.0)
    assert bias.shape == (12, 12)
    # patch (0, 0) vs patch (2, 3): d^2 = 4 + 9
    assert bias[0, 11].item() == pytest.approx(math.exp(-13 / 8))
    assert torch.allclose(bias.diagonal(), torch.ones(12))
    assert torch.equal(bias, bias.T)


def test_naclip_attention_matches_independent_formula(base):
    block = base.vision_model.encoder.layers[-1]
    tokens = torch.randn(2, 1 + 5 * 7, 32)
    with torch.no_grad():
        got = naclip_attention(block, tokens, (5, 7))
        want = naclip_by_hand(block, tokens, (5, 7))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        naclip_attention(block, tokens, (5, 6))


def test_naclip_dense_features_on_stock_clip(base):
    """0-register NACLIP features: stock trunk, hand-written reduced block, post_layernorm, projection."""
    pixel_values = torch.randn(2, 3, 48, 72)
    with torch.no_grad():
        got = CLIPDenseModel(base, "naclip").get_patch_tokens(pixel_values)
        hidden = base.vision_model(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True)
        reduced = naclip_by_hand(base.vision_model.encoder.layers[-1], hidden.hidden_states[-2], (6, 9))
        want = base.visual_projection(base.vision_model.post_layernorm(reduced[:, 1:]))
    assert got.shape == (2, 54, base.config.projection_dim)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    student = PhregCLIPModel.from_base(base, 0)
    with torch.no_grad():
        maskclip = CLIPDenseModel(base, "maskclip").get_patch_tokens(pixel_values)
        torch.testing.assert_close(maskclip, student.get_dense_image_features(pixel_values))
        assert not torch.allclose(maskclip, got, atol=1e-3)
    with pytest.raises(ValueError, match="Dense mode must be one of"):
        dense_features(student, pixel_values, "plain")


def test_dense_mode_needs_a_full_clip():
    vision = make_base("clip_vision_model")
    assert resolve_mode(vision, None) is None  # a vision tower alone distills its tokens, as before
    with pytest.raises(ValueError, match="needs a full CLIP checkpoint"):
        resolve_mode(vision, "naclip")
    with pytest.raises(ValueError, match="full CLIP model"):
        CLIPDenseModel(vision)


def test_reference_clip_defaults_and_overrides():
    args = DistillArguments(teacher="x", train_dir=".", output_dir="out")
    args.resolve_defaults(clip_dense=True)
    assert (args.per_device_train_batch_size, args.learning_rate, args.final_learning_rate) == (
        16,
        3e-4,
        1e-5,
    )
    args = DistillArguments(teacher="x", train_dir=".", output_dir="out", learning_rate=5e-4)
    args.resolve_defaults(clip_dense=True)
    assert (args.per_device_train_batch_size, args.learning_rate, args.final_learning_rate) == (
        16,
        5e-4,
        1e-5,
    )


def test_trainer_distills_a_full_clip_in_projection_space(tmp_path, base):
    images, _, _ = write_synthetic_segmentation_set(tmp_path / "data", num_images=4, size=(64, 64))
    args = DistillArguments(
        train_dir=str(images),
        output_dir=str(tmp_path / "out"),
        num_register_tokens=2,
        num_views=3,
        max_steps=2,
        resolution=80,  # not the native 64: the position embeddings are resized once to 10 x 10
        report_to="none",
        num_preview_images=0,
        checkpointing_steps=0,
        num_eval_images=4,
        teacher_cache=str(tmp_path / "cache"),  # targets in projection space, cached once per image
    )
    trainer = DistillTrainer(args, base_model=base, image_processor=build_tiny_clip_processor(64))
    assert trainer.clip_dense_mode == "naclip"
    assert (args.per_device_train_batch_size, args.learning_rate, args.final_learning_rate) == (
        16,
        3e-4,
        1e-5,
    )
    student = trainer.accelerator.unwrap_model(trainer.student)
    assert student.vision_model.embeddings.position_embedding.weight.shape[0] == 1 + 100
    assert all(
        not name.startswith(("text_model", "vision_model.encoder")) for name in trainer.trainable_names
    )
    assert any(name.startswith("dense_value_path") for name in trainer.trainable_names)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = trainer.train()
    after = load_file(tmp_path / "out" / "model.safetensors")
    for name, value in before.items():
        changed = not torch.equal(after[name], value)
        assert changed == (name in trainer.trainable_names), name
    assert result["settings"]["clip_dense_mode"] == "naclip"
    assert result["settings"]["teacher_cache"]["misses"] == 4
    # The cache fingerprint tells the teacher paths apart (same weights, other targets).
    assert hash_model(CLIPDenseModel(base, "naclip")) != hash_model(CLIPDenseModel(base, "maskclip"))
    assert result["settings"]["model_type"] == "phreg_clip"
    assert 0.0 < result["metrics"]["clip_image_feature_cosine"] <= 1.0
    assert {"tokenizer.json", "processor_config.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
    reloaded = PhregCLIPModel.from_pretrained(tmp_path / "out")
    assert reloaded.config.vision_config.image_size == 80
