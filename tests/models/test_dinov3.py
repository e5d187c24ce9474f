"""DINOv3 students (`PhregDinov3ViTModel`): exactness against `DINOv3ViTModel`, the token order and RoPE, the stock
export, the backbone against `DINOv3ViTBackbone`, what trains, RoPE held in eval mode by the trainer, and the inputs
it refuses."""

import pytest
import torch
from conftest import TINY, make_base, write_small_sample_images
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file, save_file
from trainer_helpers import make_args
from transformers import DINOv3ViTBackbone, DINOv3ViTConfig, DINOv3ViTModel
from transformers.models.dinov3_vit import modeling_dinov3_vit

from phreg_hf import PhregDinov3ViTBackbone, PhregDinov3ViTConfig, PhregDinov3ViTModel, student_from_base
from phreg_hf.distill.trainer import DistillTrainer

NUM_BASE_REGISTERS = 4


def make_dinov3(attn_implementation="eager", seed=0, **config) -> DINOv3ViTModel:
    torch.manual_seed(seed)
    config = DINOv3ViTConfig(
        **TINY, intermediate_size=64, num_register_tokens=NUM_BASE_REGISTERS, layerscale_value=0.1, **config
    )
    config._attn_implementation = attn_implementation
    base = DINOv3ViTModel(config).eval()
    with torch.no_grad():  # away from the init: layer scales, norms, mask token and registers all matter
        for parameter in base.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return base


def pixels(height=56, width=56, batch=2):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("size", [(56, 56), (40, 72)])
def test_zero_new_registers_reproduce_the_base_exactly(attn_implementation, size):
    base = make_dinov3(attn_implementation)
    student = student_from_base(base, 0).eval()
    assert type(student) is PhregDinov3ViTModel and student.num_prefix_tokens == 1 + NUM_BASE_REGISTERS
    kwargs = dict(output_hidden_states=True, output_attentions=attn_implementation == "eager")
    mask = torch.rand(2, (size[0] // 8) * (size[1] // 8), generator=torch.Generator().manual_seed(1)) < 0.5
    with torch.no_grad():
        for extra in ({}, {"bool_masked_pos": mask}):
            want, got = base(pixels(*size), **extra, **kwargs), student(pixels(*size), **extra, **kwargs)
            assert torch.equal(want.last_hidden_state, got.last_hidden_state)
            assert torch.equal(want.pooler_output, got.pooler_output)
            for a, b in zip(want.hidden_states, got.hidden_states, strict=True):
                assert torch.equal(a, b)
            if kwargs["output_attentions"]:
                for a, b in zip(want.attentions, got.attentions, strict=True):
                    assert torch.equal(a, b)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_new_registers_follow_the_base_ones_unrotated_as_the_stock_export_shows(
    attn_implementation, tmp_path
):
    """The stock `DINOv3ViTModel` with 4 + 5 registers leaves every register unrotated: the student, whose 5 new
    registers come after the base's, computes exactly what that export computes, at every size."""
    base = make_dinov3(attn_implementation)
    student = student_from_base(base, 5).eval()
    exported = student.to_dinov3_vit()
    assert type(exported) is DINOv3ViTModel and exported.config.num_register_tokens == NUM_BASE_REGISTERS + 5
    for size in [(56, 56), (40, 72)]:
        with torch.no_grad():
            got, want = student(pixels(*size)), exported(pixels(*size))
        assert got.last_hidden_state.shape[1] == 1 + 4 + 5 + (size[0] // 8) * (size[1] // 8)
        assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    with torch.no_grad():
        layer_input = student(pixels(), output_hidden_states=True).hidden_states[0]
        base_input = base(pixels(), output_hidden_states=True).hidden_states[0]
    # [CLS, base registers (unchanged, at their positions), PH-Reg registers, patches]
    assert torch.equal(layer_input[:, :5], base_input[:, :5])
    assert torch.equal(layer_input[:, 5:10], student.register_tokens.expand(2, -1, -1))
    assert torch.equal(layer_input[:, 10:], base_input[:, 5:])
    # The export loads with no remote code.
    exported.save_pretrained(tmp_path / "stock")
    assert "auto_map" not in (tmp_path / "stock" / "config.json").read_text()


def test_what_trains_has_no_position_table_and_keeps_the_base_registers_frozen():
    student = student_from_base(make_base("dinov3_vit"), 4)
    groups = student.trainable_parameter_groups()
    assert tuple(groups) == student.trainable_parts == ("registers", "patch_embeddings", "last_block")
    assert groups["registers"] == [student.register_tokens]
    assert groups["last_block"] == list(student.model.layer[-1].parameters())  # layer scales included
    trainable = {id(p) for group in groups.values() for p in group}
    assert id(student.embeddings.register_tokens) not in trainable
    assert not any(p.numel() for p in student.rope_embeddings.parameters())  # RoPE has no parameters


def test_base_registers_are_initialized_with_zero_new_registers():
    """The stock init draws the registers only when config.num_register_tokens > 0, which here counts PH-Reg's."""
    torch.manual_seed(0)
    model = PhregDinov3ViTModel(
        PhregDinov3ViTConfig(**TINY, num_register_tokens=0, num_base_register_tokens=4)
    )
    std = model.embeddings.register_tokens.std().item()
    assert torch.isfinite(model.embeddings.register_tokens).all() and 0.5 < std / 0.02 < 1.5


def test_rope_jitters_in_training_mode_unless_held_in_eval():
    student = student_from_base(make_dinov3(pos_embed_shift=0.1), 0)
    student.train()
    with torch.no_grad():
        first, second = student(pixels()).last_hidden_state, student(pixels()).last_hidden_state
    assert not torch.equal(first, second)  # DINOv3's own augmentation of the patch coordinates
    for name in student.eval_modules_during_distillation:
        student.get_submodule(name).eval()
    with torch.no_grad():
        assert torch.equal(
            student(pixels()).last_hidden_state, make_dinov3(pos_embed_shift=0.1)(pixels()).last_hidden_state
        )


@pytest.mark.parametrize("reshape", [True, False])
@pytest.mark.parametrize("apply_layernorm", [True, False])
def test_backbone_returns_what_the_stock_backbone_returns(reshape, apply_layernorm):
    base = make_dinov3()
    stages = dict(out_indices=[0, 1, 2], reshape_hidden_states=reshape, apply_layernorm=apply_layernorm)
    fields = {k: v for k, v in base.config.to_dict().items() if k not in ("out_features", "out_indices")}
    stock_config = DINOv3ViTConfig(**{**fields, **stages})
    stock_config._attn_implementation = "eager"
    stock = DINOv3ViTBackbone(stock_config).eval()
    stock.load_state_dict(base.state_dict())
    stock.config.return_class_token = True  # no config field: an attribute, read with getattr, as stock
    student = student_from_base(stock, 0)  # from a stock backbone too
    config = PhregDinov3ViTConfig(
        **TINY, intermediate_size=64, layerscale_value=0.1, num_register_tokens=0, **stages
    )
    config._attn_implementation = "eager"
    ours = PhregDinov3ViTBackbone(config).eval()
    ours.load_state_dict(student.state_dict())
    ours.config.return_class_token = True
    with torch.no_grad():
        want, got = stock(pixels(40, 72)), ours(pixels(40, 72))
    for a, b in zip(want.feature_maps, got.feature_maps, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(want.cls_tokens, got.cls_tokens, strict=True):
        assert torch.equal(a, b)
    assert got.feature_maps[0].shape == ((2, 32, 5, 9) if reshape else (2, 45, 32))


def test_hub_checkpoint_key_names_load(tmp_path):
    """Hub DINOv3 checkpoints name the blocks `layer.<i>` (no `model.`); the stock loader renames them."""
    base = make_dinov3()
    base.save_pretrained(tmp_path / "hub")
    state = load_file(tmp_path / "hub" / "model.safetensors")
    save_file(
        {key.removeprefix("model."): value for key, value in state.items()},
        tmp_path / "hub" / "model.safetensors",
    )
    assert any(key.startswith("layer.0.") for key in load_file(tmp_path / "hub" / "model.safetensors"))
    student = student_from_base(str(tmp_path / "hub"), 2)
    assert type(student) is PhregDinov3ViTModel
    for name, tensor in base.state_dict().items():
        assert torch.equal(student.state_dict()[name], tensor), name


def test_inputs_it_cannot_take_are_refused_with_the_fix(tmp_path):
    student = student_from_base(make_base("dinov3_vit"), 2).eval()
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        student(pixels(50, 56))  # the stock convolution would silently drop the last 2 pixel rows
    with pytest.raises(
        ValueError, match="expects a DINOv3ViTModel or DINOv3ViTBackbone .* got SiglipVisionModel"
    ):
        PhregDinov3ViTModel.from_base(make_base("siglip_vision_model"))
    make_base("vit").save_pretrained(tmp_path / "vit")
    with pytest.raises(
        ValueError, match="'vit' checkpoint, but PhregDinov3ViTModel is built from dinov3_vit"
    ):
        PhregDinov3ViTModel.from_base(tmp_path / "vit")
    with pytest.raises(ValueError, match="ConvNeXt .* no tokens"):
        from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

        student_from_base(
            DINOv3ConvNextModel(DINOv3ConvNextConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1]))
        )
    # huggingface_hub's @strict validation wraps the config's ValueError in its own error.
    with pytest.raises(
        StrictDataclassClassValidationError, match="num_base_register_tokens must be an integer >= 0"
    ):
        PhregDinov3ViTConfig(**TINY, num_base_register_tokens=-1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_small_sample_images(tmp_path_factory.mktemp("images"))


def test_trainer_refuses_train_position_embeddings_asked_for_explicitly(images, tmp_path):
    from phreg_hf.distill.arguments import parse_distill_arguments

    argv = ["--teacher", "org/dinov3", "--train_dir", str(images[0]), "--output_dir", str(tmp_path / "out")]
    assert parse_distill_arguments([*argv, "--train_position_embeddings"]).train_position_embeddings is True
    assert parse_distill_arguments(argv).train_position_embeddings is None  # unset: "where the model has it"
    args = make_args(tmp_path / "out", images[0], train_position_embeddings=True)
    with pytest.raises(
        ValueError, match="--train_position_embeddings: PhregDinov3ViTModel has no learned position"
    ):
        DistillTrainer(args, base_model=make_base("dinov3_vit"))


@pytest.mark.slow
def test_distill_eval_visualize_probe_and_card(tmp_path, monkeypatch, caplog):
    """The tool chain on a planted DINOv3 saved as a folder: examples/distill.py, phreg eval / visualize / probe /
    push. Left unset, --train_position_embeddings is off for DINOv3 (said once, in the log), the card says what
    trained, and every RoPE call of the run, the student's training steps included, sees eval mode (exact patch
    coordinates, as the teacher's targets)."""
    from trainer_helpers import distill_planted_and_run_the_tools

    from phreg_hf.distill.run_files import run_output_names

    modes = []
    forward = modeling_dinov3_vit.DINOv3ViTRopePositionEmbedding.forward

    def recording_forward(self, pixel_values):
        modes.append(self.training)
        return forward(self, pixel_values)

    monkeypatch.setattr(modeling_dinov3_vit.DINOv3ViTRopePositionEmbedding, "forward", recording_forward)
    train, heldout = write_small_sample_images(tmp_path / "images")
    with caplog.at_level("INFO"):
        result = distill_planted_and_run_the_tools(tmp_path, "dinov3_vit", train, heldout)
    assert modes and not any(modes)
    said = [r.getMessage() for r in caplog.records if "has no position_embeddings part" in r.getMessage()]
    assert len(said) == 1 and "training registers, patch_embeddings, last_block" in said[0]
    settings = result["settings"]
    assert settings["model_type"] == "phreg_dinov3_vit" and settings["base_model_synthetic"]
    assert settings["trainable_parts"] == ["registers", "patch_embeddings", "last_block"]
    assert len(result["pictures"]) == 1 and list(result["probe"]["rows"]) == ["base", "student"]
    # The model's own code file is one of the run's outputs (replaced by the next run, never left over).
    assert "modeling_phreg_dinov3.py" in run_output_names(result["student"])
    card = result["card"]
    order = "`[CLS, base_register_1 .. base_register_4, register_1 .. register_4, patches]`"
    assert order in card and "(batch, 1 + 4 + 4 + patches, 32)" in card
    assert "rotary position embeddings take any grid" in card and "DINOv3" in card
    assert "the register tokens, patch-embedding projection and last transformer block changed" in card
