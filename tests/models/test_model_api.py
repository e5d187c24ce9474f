"""The forward API a transformers user expects: typed kwargs, bool_masked_pos, interpolate_pos_encoding, errors."""

import inspect
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, make_base
from transformers import ViTConfig, ViTModel

import phreg_hf
from phreg_hf import PhregCLIPVisionModel, PhregDinov2Model, PhregViTModel, student_from_base

REPO = Path(__file__).resolve().parents[2]


def pixels(height=IMAGE_SIZE, width=IMAGE_SIZE, batch=2):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def masked_patches(batch=2, num_patches=(IMAGE_SIZE // 8) ** 2):
    mask = torch.zeros(batch, num_patches, dtype=torch.bool)
    mask[0, [0, 5, 17]] = True
    mask[1, 30:] = True
    return mask


@pytest.mark.parametrize("model_class", [PhregDinov2Model, PhregViTModel, PhregCLIPVisionModel])
def test_forward_declares_transformers_kwargs_introspectably(model_class):
    """What transformers' tests read to decide that `output_attentions` is supported (no string annotations)."""
    kwargs = inspect.signature(model_class.forward).parameters["kwargs"]
    assert "output_attentions" in kwargs.annotation.__args__[0].__annotations__
    assert "output_hidden_states" in kwargs.annotation.__args__[0].__annotations__


def test_no_postponed_annotations_in_the_model_files():
    for name in ("modeling_phreg.py", "modeling_phreg_backbone.py", "configuration_phreg.py"):
        assert (
            "from __future__ import annotations" not in (REPO / "phreg_hf" / "models" / name).read_text()
        ), name


def test_license_headers_on_the_source_files():
    for path in sorted((REPO / "phreg_hf").rglob("*.py")):
        head = path.read_text().splitlines()[:3]
        assert head and "Licensed under the Apache License, Version 2.0" in "\n".join(
            path.read_text().splitlines()[:6]
        ), path.name


def test_bool_masked_pos_matches_stock_dinov2_with_zero_registers():
    base = make_base("dinov2")
    student = student_from_base(base, 0).eval()
    with torch.no_grad():
        base.embeddings.mask_token.normal_()
        student.embeddings.mask_token.copy_(base.embeddings.mask_token)
        want = base(pixels(), bool_masked_pos=masked_patches()).last_hidden_state
        got = student(pixels(), bool_masked_pos=masked_patches()).last_hidden_state
        unmasked = student(pixels()).last_hidden_state
    assert torch.equal(want, got) and not torch.equal(got, unmasked)


def test_bool_masked_pos_with_registers_masks_patches_only():
    base = make_base("dinov2")
    student = student_from_base(base, 4).eval()
    with torch.no_grad():
        student.embeddings.mask_token.normal_()
        layer_input = student(
            pixels(), bool_masked_pos=masked_patches(), output_hidden_states=True
        ).hidden_states[0]
    mask_token = student.embeddings.mask_token[0]
    patches = layer_input[:, 1 + 4 :] - student.embeddings.position_embeddings[:, 1:]
    torch.testing.assert_close(patches[0, 5], mask_token, rtol=0, atol=1e-6)
    assert not torch.allclose(patches[0, 6], mask_token)
    torch.testing.assert_close(layer_input[:, 1:5], student.register_tokens.expand(2, -1, -1), rtol=0, atol=0)


def test_bool_masked_pos_on_a_vit_with_a_mask_token_matches_stock():
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=8
    )
    config._attn_implementation = "eager"
    base = ViTModel(config, use_mask_token=True).eval()
    with torch.no_grad():
        base.embeddings.mask_token.normal_()
    student = student_from_base(base, 0).eval()
    assert student.config.use_mask_token
    with torch.no_grad():
        want = base(pixels(), bool_masked_pos=masked_patches()).last_hidden_state
        assert torch.equal(student(pixels(), bool_masked_pos=masked_patches()).last_hidden_state, want)


@pytest.mark.parametrize("backbone", ["vit", "clip_vision_model"])
def test_bool_masked_pos_without_a_mask_token_is_a_clear_error(backbone):
    student = student_from_base(make_base(backbone), 2)
    with pytest.raises(ValueError, match="bool_masked_pos needs a mask token.*has none"):
        student(pixels(), bool_masked_pos=masked_patches())


def test_bool_masked_pos_of_the_wrong_shape_names_the_right_one():
    student = student_from_base(make_base("dinov2"), 2)
    with pytest.raises(ValueError, match=r"shape \(batch, num_patches\) = \(2, 49\).*got \(2, 51\)"):
        student(pixels(), bool_masked_pos=torch.zeros(2, 51, dtype=torch.bool))


def test_interpolate_pos_encoding_false_needs_the_native_size(backbone):
    base = make_base(backbone)
    student = student_from_base(base, 3).eval()
    with torch.no_grad():
        native = student(pixels()).last_hidden_state
        assert torch.equal(student(pixels(), interpolate_pos_encoding=False).last_hidden_state, native)
        assert torch.equal(student(pixels(), interpolate_pos_encoding=True).last_hidden_state, native)
    with pytest.raises(
        ValueError, match="40x72 does not match the model's 56x56.*interpolate_pos_encoding=True"
    ):
        student(pixels(40, 72), interpolate_pos_encoding=False)
    if backbone != "dinov2":  # the stock ViT / CLIP refuse it as well (DINOv2 has no such argument)
        with pytest.raises(ValueError, match="doesn't match model"):
            base(pixels(40, 72), interpolate_pos_encoding=False)


def test_attention_mask_is_a_clear_error(backbone):
    student = student_from_base(make_base(backbone), 2)
    with pytest.raises(ValueError, match="takes no attention_mask.*Drop attention_mask"):
        student(pixels(), attention_mask=torch.ones(2, 50))


def test_output_attentions_through_the_config_and_the_call(backbone):
    student = student_from_base(make_base(backbone), 2).eval()
    with torch.no_grad():
        by_call = student(pixels(), output_attentions=True).attentions
        student.config.output_attentions = True
        by_config = student(pixels()).attentions
    assert len(by_call) == len(by_config) == 2 and by_call[0].shape == (2, 2, 1 + 2 + 49, 1 + 2 + 49)
    assert phreg_hf  # imported for the Auto registrations the students' save/load rely on
