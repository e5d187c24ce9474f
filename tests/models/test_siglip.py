"""SigLIP students (`PhregSiglipVisionModel`): exactness against `SiglipVisionModel`, the token order and the pooled
output, building from every form of SigLIP checkpoint, the backbone form, and the inputs it refuses."""

import logging

import pytest
import torch
from conftest import TINY, make_base
from transformers import (
    Dinov2Model,
    SiglipConfig,
    SiglipForImageClassification,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from phreg_hf import PhregSiglipVisionBackbone, PhregSiglipVisionModel, student_from_base

TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)


def make_siglip(attn_implementation="eager", use_head=True, seed=0) -> SiglipVisionModel:
    torch.manual_seed(seed)
    config = SiglipVisionConfig(**TINY, intermediate_size=64, vision_use_head=use_head)
    config._attn_implementation = attn_implementation
    return SiglipVisionModel(config).eval()


def pixels(height=56, width=56, batch=2):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(5))


def assert_same_outputs(want, got, attentions: bool) -> None:
    assert torch.equal(want.last_hidden_state, got.last_hidden_state)
    assert (want.pooler_output is None) == (got.pooler_output is None)
    if want.pooler_output is not None:
        assert torch.equal(want.pooler_output, got.pooler_output)
    for a, b in zip(want.hidden_states, got.hidden_states, strict=True):
        assert torch.equal(a, b)
    if attentions:
        for a, b in zip(want.attentions, got.attentions, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("use_head", [True, False])
@pytest.mark.parametrize("size", [(56, 56), (40, 72)])
def test_zero_registers_reproduce_the_base_exactly(attn_implementation, use_head, size):
    base = make_siglip(attn_implementation, use_head)
    student = student_from_base(base, 0).eval()
    assert type(student) is PhregSiglipVisionModel and student.num_prefix_tokens == 0
    # 40x72: the stock model needs interpolate_pos_encoding=True there; the student always interpolates.
    stock_kwargs = {} if size == (56, 56) else {"interpolate_pos_encoding": True}
    kwargs = dict(output_hidden_states=True, output_attentions=attn_implementation == "eager")
    with torch.no_grad():
        want, got = base(pixels(*size), **stock_kwargs, **kwargs), student(pixels(*size), **kwargs)
    assert_same_outputs(want, got, kwargs["output_attentions"])
    assert (got.pooler_output is None) == (not use_head)


def test_registers_come_first_and_the_head_pools_the_patches_only():
    base = make_siglip()
    student = student_from_base(base, 3).eval()
    x = pixels()
    with torch.no_grad():
        out = student(x, output_hidden_states=True)
        base_input = base(x, output_hidden_states=True).hidden_states[0]
    # [reg_1 .. reg_3, patches]: no CLS; the patches enter the first block as in the base (registers get no position).
    assert out.last_hidden_state.shape == (2, 3 + 49, 32)
    assert torch.equal(out.hidden_states[0][:, :3], student.register_tokens.expand(2, -1, -1))
    assert torch.equal(out.hidden_states[0][:, 3:], base_input)
    assert torch.equal(student.get_patch_tokens(x), out.last_hidden_state[:, 3:])
    assert student.get_feature_map(x).shape == (2, 32, 7, 7)
    with torch.no_grad():
        patches_only = student.head(out.last_hidden_state[:, 3:])
        with_registers = student.head(out.last_hidden_state)
    assert torch.equal(out.pooler_output, patches_only)
    assert not torch.allclose(out.pooler_output, with_registers)
    groups = student.trainable_parameter_groups()
    assert groups["position_embeddings"] == [student.embeddings.position_embedding.weight]
    assert groups["patch_embeddings"] == list(student.embeddings.patch_embedding.parameters())
    trainable = {id(p) for group in groups.values() for p in group}
    assert not any(id(p) in trainable for p in student.head.parameters())  # the head stays frozen


def test_built_from_full_siglip_checkpoints_and_folders(tmp_path):
    vision = make_siglip()
    full = SiglipModel(SiglipConfig(vision_config=vision.config.to_dict(), text_config=TEXT)).eval()
    classifier = SiglipForImageClassification(full.config)
    vision.save_pretrained(tmp_path / "vision")
    full.save_pretrained(tmp_path / "full")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        SiglipVisionModel.from_pretrained(
            tmp_path / "full"
        )  # the stock class reports them: the check can fail
        assert any("UNEXPECTED" in message for message in records)
        records.clear()
        students = [
            student_from_base(full, 2),
            student_from_base(classifier, 2),
            PhregSiglipVisionModel.from_base(tmp_path / "full", 2),
            student_from_base(str(tmp_path / "vision"), 2),
        ]
    finally:
        transformers_logger.removeHandler(handler)
    # A full checkpoint's text tower, logit scale and bias are skipped silently, not reported as UNEXPECTED.
    assert not any("UNEXPECTED" in message or "LOAD REPORT" in message for message in records), records
    want = full.vision_model.state_dict()
    references = [want, classifier.vision_model.state_dict(), want, vision.state_dict()]
    for student, reference in zip(students, references, strict=True):
        assert type(student) is PhregSiglipVisionModel
        state = student.state_dict()
        assert all(torch.equal(state[key], value) for key, value in reference.items())


def test_backbone_maps_hold_the_patches_only():
    student = student_from_base(make_siglip(), 3).eval()
    for reshape in (True, False):
        backbone_config = type(student.config)(
            **{**TINY, "intermediate_size": 64, "num_register_tokens": 3, "out_indices": [1, 2]},
            reshape_hidden_states=reshape,
        )
        backbone_config._attn_implementation = "eager"  # as the student's, for exact equality
        backbone = PhregSiglipVisionBackbone(backbone_config).eval()
        backbone.load_state_dict(student.state_dict())
        with torch.no_grad():
            maps = backbone(pixels()).feature_maps
        assert len(maps) == 2
        if reshape:
            assert torch.equal(maps[-1], student.get_feature_map(pixels()))
        else:  # no CLS to keep: (B, h*w, C), registers removed
            assert maps[-1].shape == (2, 49, 32)
            assert torch.equal(maps[-1], student.get_patch_tokens(pixels()))


def test_inputs_it_cannot_take_are_refused_with_the_fix(tmp_path):
    student = student_from_base(make_siglip(), 2).eval()
    with pytest.raises(
        ValueError, match="does not match the model's 56x56 and interpolate_pos_encoding=False"
    ):
        student(pixels(40, 72), interpolate_pos_encoding=False)
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        student(pixels(50, 56))
    with pytest.raises(ValueError, match="needs a mask token"):
        student(pixels(), bool_masked_pos=torch.zeros(2, 49, dtype=torch.bool))
    # A base of another type, in memory or as a folder.
    with pytest.raises(ValueError, match="expects a SiglipVisionModel .* got Dinov2Model"):
        PhregSiglipVisionModel.from_base(make_base("dinov2"))
    assert isinstance(make_base("dinov2"), Dinov2Model)
    make_base("dinov2").save_pretrained(tmp_path / "dinov2")
    with pytest.raises(ValueError, match="'dinov2' checkpoint, but PhregSiglipVisionModel is built from"):
        PhregSiglipVisionModel.from_base(tmp_path / "dinov2")


def test_siglip2_naflex_is_refused_and_names_the_fixed_resolution_checkpoints(tmp_path):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    naflex = Siglip2VisionModel(
        Siglip2VisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    for build in (lambda: student_from_base(naflex), lambda: PhregSiglipVisionModel.from_base(naflex)):
        with pytest.raises(ValueError, match=r"NaFlex .* not supported: .* ragged .*\(model_type 'siglip'"):
            build()
    naflex.save_pretrained(tmp_path / "naflex")
    with pytest.raises(ValueError, match="NaFlex"):
        student_from_base(tmp_path / "naflex")


@pytest.mark.slow
def test_distill_eval_visualize_probe_and_card(tmp_path):
    """The tool chain on a planted SigLIP saved as a folder: examples/distill.py, phreg eval / visualize / probe /
    push (whose card says how the tokens are laid out and what trained)."""
    from conftest import write_small_sample_images
    from trainer_helpers import distill_planted_and_run_the_tools

    from phreg_hf.distill.run_files import run_output_names

    train, heldout = write_small_sample_images(tmp_path / "images")
    result = distill_planted_and_run_the_tools(tmp_path, "siglip_vision_model", train, heldout)
    settings = result["settings"]
    assert (
        settings["model_type"] == "phreg_siglip_vision_model"
        and settings["base_model_type"] == "siglip_vision_model"
    )
    assert settings["trainable_parts"] == [
        "registers",
        "position_embeddings",
        "patch_embeddings",
        "last_block",
    ]
    assert settings["resolution"] == 56  # a synthetic base trains at its own image_size
    assert settings["base_model_synthetic"]
    assert len(result["pictures"]) == 1 and list(result["probe"]["rows"]) == ["base", "student"]
    # The model's own code file is one of the run's outputs (replaced by the next run, never left over).
    assert "modeling_phreg_siglip.py" in run_output_names(result["student"])
    card = result["card"]
    assert "`[register_1 .. register_4, patches]`" in card and "(batch, 4 + patches, 32)" in card
    assert "SigLIP has no CLS token" in card and "# [registers, patches] x 32 per image" in card
    assert "SigLIP vision" in card and "modeling_phreg_siglip.py" in card
