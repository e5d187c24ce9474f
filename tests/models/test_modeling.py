"""The register models: exactness against the stock models, token order, weights, errors, HF features."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from conftest import BACKBONES, IMAGE_SIZE, PATCH_SIZE, make_base
from transformers import (
    AutoConfig,
    AutoModel,
    CLIPConfig,
    CLIPModel,
    CLIPVisionModel,
    Dinov2ForImageClassification,
)

import phreg_hf
from phreg_hf import PhregCLIPVisionModel, PhregDinov2Model, PhregViTModel, student_from_base

GRID = IMAGE_SIZE // PATCH_SIZE
NUM_PATCHES = GRID * GRID
STUDENT_CLASS = {"dinov2": PhregDinov2Model, "vit": PhregViTModel, "clip_vision_model": PhregCLIPVisionModel}


def pixels(batch=2, height=IMAGE_SIZE, width=IMAGE_SIZE, seed=1):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_same_outputs(expected, actual, exact=True):
    pairs = [
        (expected.last_hidden_state, actual.last_hidden_state),
        (expected.pooler_output, actual.pooler_output),
    ]
    for name in ("hidden_states", "attentions"):
        expected_list, actual_list = getattr(expected, name), getattr(actual, name)
        assert (expected_list is None) == (actual_list is None), name
        if expected_list is not None:
            assert len(expected_list) == len(actual_list), name
            pairs += list(zip(expected_list, actual_list, strict=True))
    for want, got in pairs:
        if exact:
            assert torch.equal(want, got)
        else:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_zero_registers_reproduce_base_exactly(backbone, attn_implementation):
    base = make_base(backbone, attn_implementation)
    student = student_from_base(base, num_register_tokens=0).eval()
    assert type(student) is STUDENT_CLASS[backbone]
    assert student.config._attn_implementation == attn_implementation
    x = pixels()
    with torch.no_grad():
        kwargs = dict(output_hidden_states=True, output_attentions=attn_implementation == "eager")
        assert_same_outputs(base(x, **kwargs), student(x, **kwargs))


def test_zero_registers_match_base_at_other_resolutions(backbone):
    """Non-native and non-square sizes: the student interpolates position embeddings as the base does."""
    base = make_base(backbone)
    student = student_from_base(base, 0).eval()
    x = pixels(height=40, width=72)
    extra = {} if backbone == "dinov2" else {"interpolate_pos_encoding": True}
    with torch.no_grad():
        assert torch.equal(base(x, **extra).last_hidden_state, student(x).last_hidden_state)


def test_from_base_copies_every_tensor_and_initializes_registers(backbone):
    base = make_base(backbone)
    student = student_from_base(base, num_register_tokens=16)
    base_state, student_state = base.state_dict(), student.state_dict()
    assert set(student_state) == set(base_state) | {"register_tokens"}
    for name, tensor in base_state.items():
        assert torch.equal(student_state[name], tensor), name
    registers = student.register_tokens
    assert registers.shape == (1, 16, 32)
    # N(0, 1 / hidden_size): std about 1/sqrt(32) = 0.177 over 512 draws.
    assert 0.14 < registers.std().item() < 0.21 and abs(registers.mean().item()) < 0.03


def test_register_token_order_and_sequence_length(backbone):
    """[CLS, reg_1..reg_N, patches]: registers enter right after the position-embedded CLS/patch tokens."""
    base = make_base(backbone)
    student = student_from_base(base, num_register_tokens=5).eval()
    x = pixels()
    with torch.no_grad():
        out = student(x, output_hidden_states=True)
        base_out = base(x, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 1 + 5 + NUM_PATCHES, 32)
    layer_input, base_layer_input = out.hidden_states[0], base_out.hidden_states[0]
    registers = student.register_tokens.expand(2, -1, -1)
    if backbone == "clip_vision_model":  # CLIP normalizes every token entering the encoder
        registers = student.pre_layrnorm(registers)
    torch.testing.assert_close(layer_input[:, 0], base_layer_input[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(layer_input[:, 1:6], registers, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer_input[:, 6:], base_layer_input[:, 1:], rtol=0, atol=1e-6)
    # Registers change the patch outputs (they take part in attention) but not the shapes of dense helpers.
    assert student.get_patch_tokens(x).shape == (2, NUM_PATCHES, 32)
    assert not torch.allclose(
        student.get_patch_tokens(x), student_from_base(base, 0).eval().get_patch_tokens(x)
    )


def test_dense_helpers_any_multiple_of_patch_size(backbone):
    student = student_from_base(make_base(backbone), 3).eval()
    x = pixels(batch=1, height=32, width=64)
    with torch.no_grad():
        tokens = student.get_patch_tokens(x)
        feature_map = student.get_feature_map(x)
        last = student(x).last_hidden_state
    assert tokens.shape == (1, 4 * 8, 32)
    assert feature_map.shape == (1, 32, 4, 8)
    # Row-major: feature_map[..., i, j] is patch token i * w + j.
    torch.testing.assert_close(feature_map[0, :, 1, 5], tokens[0, 1 * 8 + 5])
    expected = last[:, 4:] if backbone != "clip_vision_model" else student.post_layernorm(last[:, 4:])
    torch.testing.assert_close(tokens, expected)


def test_attentions_hidden_states_and_tuple_outputs(backbone):
    student = student_from_base(make_base(backbone), 4).eval()
    x = pixels()
    with torch.no_grad():
        out = student(x, output_attentions=True, output_hidden_states=True)
        as_tuple = student(x, return_dict=False)
    length = 1 + 4 + NUM_PATCHES
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, length, length)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, length, 32) for h in out.hidden_states)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.last_hidden_state)


def test_eager_and_sdpa_agree_with_registers(backbone):
    eager = student_from_base(make_base(backbone, "eager"), 4).eval()
    sdpa = student_from_base(make_base(backbone, "sdpa"), 4).eval()
    sdpa.load_state_dict(eager.state_dict())
    x = pixels()
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(x).last_hidden_state, eager(x).last_hidden_state, atol=1e-5, rtol=1e-5
        )


def test_gradient_checkpointing_gives_the_same_gradients(backbone):
    student = student_from_base(make_base(backbone), 4)
    x = pixels()

    def gradients(model):
        model.zero_grad()
        model.train()
        model.get_patch_tokens(x).square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients(student)
    student.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in student.transformer_blocks)
    checkpointed = gradients(student)
    assert plain.keys() == checkpointed.keys() and "register_tokens" in plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_trainable_parameter_groups_name_the_method_parts(backbone):
    student = student_from_base(make_base(backbone), 4)
    groups = student.trainable_parameter_groups()
    assert tuple(groups) == phreg_hf.TRAINABLE_PARTS
    names = {id(p): n for n, p in student.named_parameters()}
    assert [names[id(p)] for p in groups["registers"]] == ["register_tokens"]
    assert all("position" in names[id(p)] for p in groups["position_embeddings"])
    assert all("patch_embedding" in names[id(p)] for p in groups["patch_embeddings"])
    assert all(re.search(r"layers?\.1\.", names[id(p)]) for p in groups["last_block"])  # block 1 of 0..1
    assert len(groups["last_block"]) == len(list(student.transformer_blocks[-1].parameters()))


def test_save_and_load_through_auto_model(backbone, tmp_path):
    student = student_from_base(make_base(backbone), 4).eval()
    student.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    for name in ("configuration_phreg.py", "modeling_phreg.py"):
        assert (tmp_path / name).exists()
    loaded = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is type(student) and loaded.config.num_register_tokens == 4
    x = pixels()
    with torch.no_grad():
        assert torch.equal(loaded(x).last_hidden_state, student(x).last_hidden_state)


def test_from_base_accepts_paths_and_wrappers(tmp_path):
    base = make_base("dinov2")
    base.save_pretrained(tmp_path / "dinov2")
    from_path = student_from_base(str(tmp_path / "dinov2"), 2)
    assert isinstance(from_path, PhregDinov2Model)
    assert torch.equal(from_path.embeddings.cls_token, base.embeddings.cls_token)

    classifier = Dinov2ForImageClassification(base.config)
    assert torch.equal(
        PhregDinov2Model.from_base(classifier, 0).layernorm.weight, classifier.dinov2.layernorm.weight
    )
    clip_base = make_base("clip_vision_model")
    clip = CLIPModel(CLIPConfig(vision_config=clip_base.config.to_dict(), text_config={"hidden_size": 32}))
    student = student_from_base(clip, 0)
    assert isinstance(student, PhregCLIPVisionModel)
    assert torch.equal(student.post_layernorm.weight, clip.vision_model.post_layernorm.weight)


def test_full_checkpoints_load_their_vision_tower_without_an_unexpected_keys_report(tmp_path):
    """A full CLIP checkpoint (text tower, projections) or a classifier checkpoint: only the base model is used, so
    transformers' load report must not list the rest as UNEXPECTED."""
    clip_base = make_base("clip_vision_model")
    text = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    clip = CLIPModel(CLIPConfig(vision_config=clip_base.config.to_dict(), text_config=text))
    clip.save_pretrained(tmp_path / "clip")
    Dinov2ForImageClassification(make_base("dinov2").config).save_pretrained(tmp_path / "classifier")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        CLIPVisionModel.from_pretrained(tmp_path / "clip")  # the stock class reports them: the check can fail
        assert any("UNEXPECTED" in message for message in records)
        records.clear()
        student = student_from_base(str(tmp_path / "clip"), 2)
        dinov2 = student_from_base(str(tmp_path / "classifier"), 2)
    finally:
        transformers_logger.removeHandler(handler)
    assert not any("UNEXPECTED" in message or "LOAD REPORT" in message for message in records), records
    assert type(student) is PhregCLIPVisionModel and type(dinov2) is PhregDinov2Model
    vision = clip.vision_model.state_dict()
    for name, tensor in student.state_dict().items():
        if name != "register_tokens":
            assert torch.equal(tensor, vision[name]), name  # every weight of the vision tower, exactly


def test_from_base_keeps_dtype():
    student = student_from_base(make_base("vit").to(torch.bfloat16), 2)
    assert student.dtype == torch.bfloat16 and student.register_tokens.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda: torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE), "3 channels|expects 3"),
        (lambda: torch.randn(1, 3, 60, IMAGE_SIZE), r"60x56 is not a multiple of the patch size 8.*56 or 64"),
        (
            lambda: torch.randn(3, IMAGE_SIZE, IMAGE_SIZE),
            r"\(batch, channels, height, width\).*pixel_values\[None\]",
        ),
    ],
)
def test_bad_pixel_values_get_clear_errors(backbone, make_input, message):
    student = student_from_base(make_base(backbone), 2)
    with pytest.raises(ValueError, match=message):
        student(make_input())


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_register_counts(bad):
    with pytest.raises(ValueError, match="num_register_tokens must be an integer >= 0"):
        student_from_base(make_base("vit"), bad)


def test_wrong_base_types_are_named(tmp_path):
    with pytest.raises(ValueError, match="expects a Dinov2Model.*got ViTModel"):
        PhregDinov2Model.from_base(make_base("vit"))
    make_base("vit").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'vit' checkpoint.*Use PhregViTModel"):
        PhregDinov2Model.from_base(str(tmp_path))
    with pytest.raises(ValueError, match="expects a transformers ViT, DINOv2, CLIP, SigLIP or DINOv3 model"):
        student_from_base(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs a PhregViTConfig"):
        PhregViTModel(phreg_hf.PhregDinov2Config(**make_base("dinov2").config.to_diff_dict()))


@pytest.mark.parametrize("model_type", BACKBONES)
def test_config_round_trip(model_type, tmp_path):
    student = student_from_base(make_base(model_type), 7)
    student.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is type(student.config) and config.num_register_tokens == 7
    assert config.auto_map == {
        "AutoConfig": f"configuration_phreg.{type(student.config).__name__}",
        "AutoModel": f"modeling_phreg.{type(student).__name__}",
        "AutoBackbone": f"modeling_phreg_backbone.{type(student).__name__.replace('Model', 'Backbone')}",
    }
