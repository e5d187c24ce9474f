"""PhregCLIPModel: CLIP's text tower unchanged, exact 0-register dense features (MaskCLIP value path), remote code."""

from __future__ import annotations

import pytest
import torch
from conftest import make_base, run_without_phreg
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor, CLIPModel

from phreg_hf import PhregCLIPConfig, PhregCLIPModel
from phreg_hf.synthetic_clip import (
    build_planted_artifact_clip,
    build_tiny_clip_processor,
    build_tiny_clip_tokenizer,
)


@pytest.fixture(scope="module")
def base() -> CLIPModel:
    return build_planted_artifact_clip(image_size=64, patch_size=8)


def stock_value_path(base: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """MaskCLIP's dense features written against the stock model: tokens entering the last block, then
    layer_norm1 -> v_proj -> out_proj (no attention, residual or MLP), post_layernorm, visual projection."""
    outputs = base.vision_model(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True)
    tokens = outputs.hidden_states[-2][:, 1:]
    block = base.vision_model.encoder.layers[-1]
    values = block.self_attn.out_proj(block.self_attn.v_proj(block.layer_norm1(tokens)))
    return base.visual_projection(base.vision_model.post_layernorm(values))


def token_ids(texts: list[str]) -> dict:
    return build_tiny_clip_tokenizer()(texts, padding=True, return_tensors="pt")


@pytest.mark.parametrize("size", [(64, 64), (40, 72), (96, 96)])
def test_zero_registers_dense_features_equal_stock_value_path(base, size):
    student = PhregCLIPModel.from_base(base, 0).eval()
    pixel_values = torch.randn(2, 3, *size)
    with torch.no_grad():
        dense = student.get_dense_image_features(pixel_values)
        want = stock_value_path(base, pixel_values)
        image = student.get_image_features(pixel_values).pooler_output
        image_want = base.get_image_features(pixel_values, interpolate_pos_encoding=True).pooler_output
    h, w = size[0] // 8, size[1] // 8
    assert dense.shape == (2, h * w, base.config.projection_dim)
    torch.testing.assert_close(dense, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, image_want, atol=1e-5, rtol=1e-5)
    feature_map = student.get_dense_feature_map(pixel_values)
    assert feature_map.shape == (2, base.config.projection_dim, h, w)
    torch.testing.assert_close(feature_map.flatten(2).transpose(1, 2), dense)


def test_openclip_style_checkpoint(tmp_path):
    """OpenCLIP / DFN weights converted to transformers' CLIPModel differ in settings (GELU instead of QuickGELU,
    other sizes), not in architecture: the student follows the checkpoint's config and stays exact."""
    from transformers import CLIPConfig

    tokenizer = build_tiny_clip_tokenizer()
    text = dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, hidden_act="gelu"
    )
    text.update(vocab_size=514, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, hidden_act="gelu"
    )
    vision.update(image_size=48, patch_size=16)
    torch.manual_seed(1)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=40)).save_pretrained(tmp_path)
    base = CLIPModel.from_pretrained(tmp_path).eval()
    student = PhregCLIPModel.from_base(str(tmp_path), 0).eval()
    assert student.config.vision_config.hidden_act == "gelu" == student.config.text_config.hidden_act
    pixel_values = torch.randn(1, 3, 64, 96)
    inputs = tokenizer(["a photo of a cat."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            student.get_dense_image_features(pixel_values),
            stock_value_path(base, pixel_values),
            atol=1e-5,
            rtol=1e-5,
        )
        # Same function and weights; loaded weights may sit in another memory layout than the student's copies,
        # which changes matmul rounding (~1e-7), hence allclose here and torch.equal in the in-memory test.
        torch.testing.assert_close(
            student.get_text_features(**inputs).pooler_output,
            base.get_text_features(**inputs).pooler_output,
            atol=1e-6,
            rtol=1e-6,
        )


def test_text_features_are_clips_own_bit_for_bit(base):
    student = PhregCLIPModel.from_base(base, 4).eval()
    inputs = token_ids(["a photo of a cat.", "a dog", "an origami red square."])
    with torch.no_grad():
        got = student.get_text_features(**inputs).pooler_output
        want = base.get_text_features(**inputs).pooler_output
    assert torch.equal(got, want)
    assert PhregCLIPModel.get_text_features is CLIPModel.get_text_features


def test_forward_matches_clip_and_returns_dense(base):
    student = PhregCLIPModel.from_base(base, 0).eval()
    inputs = token_ids(["a cat", "a dog"])
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = student(**inputs, pixel_values=pixel_values, return_dense_features=True, return_loss=True)
        want = base(**inputs, pixel_values=pixel_values, return_loss=True)
    torch.testing.assert_close(got.logits_per_image, want.logits_per_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        got.dense_image_embeds, stock_value_path(base, pixel_values), atol=1e-5, rtol=1e-5
    )
    assert student(pixel_values=pixel_values).text_embeds is None
    dense_only = student(pixel_values=pixel_values, return_dense_features=True, output_image_embeds=False)
    assert dense_only.image_embeds is None and torch.equal(
        dense_only.dense_image_embeds, got.dense_image_embeds
    )


def test_value_path_has_its_own_weights(base):
    """Training the value path (the dense features) leaves image-level outputs exactly the base's."""
    student = PhregCLIPModel.from_base(base, 0).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = student.get_image_features(pixel_values).pooler_output
        dense_before = student.get_dense_image_features(pixel_values)
        for parameter in student.trainable_parameter_groups()["last_block"]:
            parameter.add_(torch.randn_like(parameter) * 0.1)
        after = student.get_image_features(pixel_values).pooler_output
        dense_after = student.get_dense_image_features(pixel_values)
    assert torch.equal(before, after)
    assert not torch.allclose(dense_before, dense_after)
    last_block = {id(p) for p in student.vision_model.transformer_blocks[-1].parameters()}
    assert not last_block & {id(p) for p in student.trainable_parameter_groups()["last_block"]}


def test_registers_move_image_features_only_a_little(base):
    """Untrained registers (N(0, 1/C)) perturb CLS; the drift is reported, and bounded here as a sanity check."""
    student = PhregCLIPModel.from_base(base, 2).eval()
    pixel_values = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        got = student.get_image_features(pixel_values).pooler_output
        want = base.get_image_features(pixel_values).pooler_output
    cosine = torch.nn.functional.cosine_similarity(got, want).mean().item()
    assert 0.5 < cosine < 1.0


def test_resize_position_embeddings_once_keeps_outputs(base):
    student = PhregCLIPModel.from_base(base, 2).eval()
    pixel_values = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        before = student.get_dense_image_features(pixel_values)
        student.resize_position_embeddings(128)
        after = student.get_dense_image_features(pixel_values)
    assert student.config.vision_config.image_size == 128
    assert student.vision_model.embeddings.position_embedding.weight.shape == (1 + 16 * 16, 32)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        student.resize_position_embeddings(100)


def test_save_load_auto_and_remote_code(base, tmp_path):
    student = PhregCLIPModel.from_base(base, 2).eval()
    student.save_pretrained(tmp_path)
    build_tiny_clip_processor(64).save_pretrained(tmp_path)
    assert {"modeling_phreg_clip.py", "modeling_phreg.py", "configuration_phreg.py"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, PhregCLIPModel) and isinstance(loaded.config, PhregCLIPConfig)
    pixel_values = torch.randn(1, 3, 48, 80)
    inputs = token_ids(["a cat", "a red square"])
    with torch.no_grad():
        want = {
            "dense": student.get_dense_image_features(pixel_values),
            "image": student.get_image_features(pixel_values).pooler_output,
            "text": student.get_text_features(**inputs).pooler_output,
        }
    assert torch.equal(loaded.get_dense_image_features(pixel_values).detach(), want["dense"])
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    run_without_phreg(
        """
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained(".", trust_remote_code=True).eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        processor = AutoProcessor.from_pretrained(".")
        inputs = processor.tokenizer(["a cat", "a red square"], padding=True, return_tensors="pt")
        pixel_values = load_file("inputs.safetensors")["pixel_values"]
        with torch.no_grad():
            save_file({
                "dense": model.get_dense_image_features(pixel_values),
                "image": model.get_image_features(pixel_values).pooler_output,
                "text": model.get_text_features(**inputs).pooler_output,
            }, "outputs.safetensors")
        """,
        cwd=str(tmp_path),
    )
    outputs = load_file(tmp_path / "outputs.safetensors")
    for key, value in want.items():  # another process may pick other kernels: equal to float rounding
        torch.testing.assert_close(outputs[key], value, atol=1e-5, rtol=1e-5, msg=key)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__ == "CLIPProcessor"


def test_from_base_rejects_non_clip(tmp_path):
    with pytest.raises(ValueError, match="expects a transformers CLIPModel"):
        PhregCLIPModel.from_base(make_base("clip_vision_model"))
    make_base("dinov2").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'dinov2' checkpoint"):
        PhregCLIPModel.from_base(tmp_path)
    with pytest.raises(ValueError, match="needs a PhregCLIPConfig"):
        PhregCLIPModel(make_base("clip_vision_model").config)
