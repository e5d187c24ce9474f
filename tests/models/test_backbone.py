"""Students as transformers backbones: feature maps, AutoBackbone and remote code, dense heads (DPT, UperNet)."""

import copy

import pytest
import torch
from conftest import IMAGE_SIZE, TINY, make_base, run_without_phreg
from safetensors.torch import load_file, save_file
from transformers import (
    AutoBackbone,
    Dinov2Backbone,
    Dinov2Config,
    Dinov2WithRegistersBackbone,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DPTConfig,
    DPTForDepthEstimation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers.models.auto import auto_factory

import phreg_hf
from phreg_hf import (
    PhregCLIPVisionBackbone,
    PhregDinov2Backbone,
    PhregDinov2WithRegistersBackbone,
    PhregViTBackbone,
    student_from_base,
)

BACKBONE_CLASS = {
    "dinov2": PhregDinov2Backbone,
    "vit": PhregViTBackbone,
    "clip_vision_model": PhregCLIPVisionBackbone,
    "dinov2_with_registers": PhregDinov2WithRegistersBackbone,
}


def make_any_base(model_type: str):
    if model_type != "dinov2_with_registers":
        return make_base(model_type)
    torch.manual_seed(0)
    base = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, num_register_tokens=3)).eval()
    with torch.no_grad():  # stock init zeroes them; pretrained registers are not zero
        base.embeddings.register_tokens.normal_()
    return base


def pixels(height=40, width=72, batch=2):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def hub_reachable(monkeypatch):
    """transformers 5.24's `AutoBackbone.from_pretrained` first asks the Hub whether the name is a repository
    (otherwise it loads a timm model), which fails offline and for absolute local paths; answer yes, as the Hub
    would for a pushed student, so the rest of the real loading path runs on a local folder."""
    monkeypatch.setattr(
        auto_factory, "hf_api", lambda: type("Hub", (), {"repo_exists": lambda self, _: True})()
    )


@pytest.mark.parametrize("apply_layernorm", [True, False])
@pytest.mark.parametrize("reshape_hidden_states", [True, False])
def test_zero_register_dinov2_backbone_equals_stock(apply_layernorm, reshape_hidden_states):
    base = make_base("dinov2")
    config = Dinov2Config(**base.config.to_diff_dict())
    config.apply_layernorm, config.reshape_hidden_states = apply_layernorm, reshape_hidden_states
    config.out_indices = [0, 1, 2]
    config._attn_implementation = base.config._attn_implementation
    stock = Dinov2Backbone(config).eval()
    stock.load_state_dict(base.state_dict())
    student = PhregDinov2Backbone.from_base(base, 0).eval()
    student.config.apply_layernorm, student.config.reshape_hidden_states = (
        apply_layernorm,
        reshape_hidden_states,
    )
    student.out_indices = [0, 1, 2]
    x = pixels()  # not the native size: position embeddings are interpolated on both sides
    with torch.no_grad():
        want, got = stock(x, output_hidden_states=True), student(x, output_hidden_states=True)
    assert len(got.feature_maps) == 3
    for a, b in zip(want.feature_maps, got.feature_maps, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(want.hidden_states, got.hidden_states, strict=True):
        assert torch.equal(a, b)


def test_zero_new_register_dinov2_with_registers_backbone_equals_stock():
    """Maps (B, C, h, w) equal the stock Dinov2WithRegistersBackbone's; both drop CLS and the base's registers."""
    base = make_any_base("dinov2_with_registers")
    config = Dinov2WithRegistersConfig(**base.config.to_diff_dict())
    config.out_indices = [0, 1, 2]
    config._attn_implementation = base.config._attn_implementation
    stock = Dinov2WithRegistersBackbone(config).eval()
    stock.load_state_dict(base.state_dict())
    student = PhregDinov2WithRegistersBackbone.from_base(base, 0).eval()
    student.out_indices = [0, 1, 2]
    with torch.no_grad():
        for a, b in zip(stock(pixels()).feature_maps, student(pixels()).feature_maps, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("model_type", list(BACKBONE_CLASS))
def test_feature_maps_drop_cls_and_registers(model_type):
    student = student_from_base(make_any_base(model_type), 4).eval()
    backbone = BACKBONE_CLASS[model_type].from_base(make_any_base(model_type), 4).eval()
    backbone.load_state_dict(student.state_dict())
    backbone.out_indices = [1, -1]
    assert backbone.out_features == ["stage1", "stage2"] and backbone.channels == [32, 32]
    x = pixels()
    with torch.no_grad():
        maps = backbone(x).feature_maps
        assert maps[0].shape == maps[1].shape == (2, 32, 5, 9)
        # The last stage, final-normed, is the student's dense feature map (CLIP: post_layernorm, too).
        torch.testing.assert_close(maps[1], student.get_feature_map(x), rtol=0, atol=1e-6)
        backbone.config.reshape_hidden_states = False
        sequences = backbone(x).feature_maps
    # Unreshaped: CLS then the patches, registers removed.
    assert sequences[1].shape == (2, 1 + 45, 32)
    torch.testing.assert_close(sequences[1][:, 1:], maps[1].flatten(2).transpose(1, 2), rtol=0, atol=1e-6)
    with torch.no_grad():
        cls = student(x).last_hidden_state[:, 0]
        cls = cls if student.last_hidden_state_is_normed else student.final_norm(cls)
    torch.testing.assert_close(sequences[1][:, 0], cls, rtol=0, atol=1e-6)


def test_auto_backbone_loads_a_saved_student(tmp_path, hub_reachable, backbone):
    student = student_from_base(make_base(backbone), 4).eval()
    student.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_phreg_backbone.py").exists()
    loaded = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 2], attn_implementation="eager").eval()
    assert type(loaded) is BACKBONE_CLASS[backbone] and loaded.out_features == ["stem", "stage2"]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixels()).feature_maps[1], student.get_feature_map(pixels()), rtol=0, atol=0
        )
    # The class itself needs no Hub check at all.
    direct = BACKBONE_CLASS[backbone].from_pretrained(tmp_path, out_features=["stage1"])
    assert direct.out_indices == [1]


def test_auto_backbone_with_remote_code_only(tmp_path):
    student = student_from_base(make_base("dinov2"), 4).eval()
    student.save_pretrained(tmp_path / "student")
    save_file({"x": pixels()}, tmp_path / "inputs.safetensors")
    run_without_phreg(
        """
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoBackbone
        from transformers.models.auto import auto_factory
        # transformers 5.24 asks the Hub whether a name is a repository before loading it; say yes (see
        # the hub_reachable fixture).
        auto_factory.hf_api = lambda: type("Hub", (), {"repo_exists": lambda self, _: True})()
        backbone = AutoBackbone.from_pretrained(
            "student", trust_remote_code=True, out_indices=[-1], attn_implementation="eager"
        ).eval()
        assert "transformers_modules" in type(backbone).__module__, type(backbone).__module__
        assert type(backbone).__name__ == "PhregDinov2Backbone"
        with torch.no_grad():
            save_file({"map": backbone(load_file("inputs.safetensors")["x"]).feature_maps[0]}, "out.safetensors")
        """,
        cwd=str(tmp_path),
    )
    with torch.no_grad():
        want = student.get_feature_map(pixels())
    assert torch.equal(load_file(tmp_path / "out.safetensors")["map"], want)


def test_resaving_with_remote_code_never_leaves_an_auto_map_entry_without_its_file(tmp_path):
    """The backbone file imports the model file, not the other way round: a student loaded with remote code as an
    AutoModel has no backbone file beside it, so re-saving it drops the AutoBackbone entry (with a warning) rather
    than point at a file the folder lacks; loaded as an AutoBackbone, it keeps both."""
    student_from_base(make_base("dinov2"), 4).save_pretrained(tmp_path / "student")
    run_without_phreg(
        """
        import json, logging, os
        from transformers import AutoBackbone, AutoModel
        from transformers.models.auto import auto_factory
        auto_factory.hf_api = lambda: type("Hub", (), {"repo_exists": lambda self, _: True})()
        model = AutoModel.from_pretrained("student", trust_remote_code=True)
        model.save_pretrained("as_model")
        auto_map = json.load(open("as_model/config.json"))["auto_map"]
        assert "AutoBackbone" not in auto_map and "AutoModel" in auto_map, auto_map
        backbone = AutoBackbone.from_pretrained("student", trust_remote_code=True, out_indices=[-1])
        backbone.save_pretrained("as_backbone")
        auto_map = json.load(open("as_backbone/config.json"))["auto_map"]
        assert auto_map["AutoBackbone"] == "modeling_phreg_backbone.PhregDinov2Backbone", auto_map
        assert os.path.isfile("as_backbone/modeling_phreg_backbone.py")
        """,
        cwd=str(tmp_path),
    )


def test_out_indices_past_the_last_layer_are_refused_with_the_fix(tmp_path):
    student_from_base(make_base("vit"), 2).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"out_indices=\[1, 5\] holds 5, past the last layer.*2 transformer blocks.*"
        r"out_indices=\[2\]",
    ):
        PhregViTBackbone.from_pretrained(tmp_path, out_indices=[1, 5])
    with pytest.raises(ValueError, match=r"'stage7', which is not a stage.*'stem', 'stage1' \.\. 'stage2'"):
        phreg_hf.PhregDinov2Config(**TINY, out_features=["stage7"])
    backbone = PhregViTBackbone.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="past the last layer"):
        backbone.out_indices = [-4]


def test_dpt_and_upernet_train_on_a_student_backbone():
    """Dense heads built through `backbone_config` take the student's weights and train end to end."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)

    dinov2_student = student_from_base(make_base("dinov2"), 4)
    backbone_config = copy.deepcopy(dinov2_student.config)
    backbone_config.out_indices, backbone_config.reshape_hidden_states = [1, 2], False
    dpt = DPTForDepthEstimation(
        DPTConfig(
            backbone_config=backbone_config,
            hidden_size=32,
            neck_hidden_sizes=[16, 32],
            reassemble_factors=[2, 1],
            fusion_hidden_size=16,
        )
    )
    dpt.backbone.load_state_dict(dinov2_student.state_dict())  # strict: the same parameter names
    depth = torch.rand(2, IMAGE_SIZE, IMAGE_SIZE)
    train_step(dpt, lambda model: (model(x).predicted_depth - depth).abs().mean())

    vit_student = student_from_base(make_base("vit"), 4)
    backbone_config = copy.deepcopy(vit_student.config)
    backbone_config.out_indices = [0, 1, 2]
    upernet = UperNetForSemanticSegmentation(
        UperNetConfig(
            backbone_config=backbone_config,
            hidden_size=16,
            auxiliary_channels=16,
            pool_scales=[1, 2],
            num_labels=3,
        )
    )
    upernet.backbone.load_state_dict(vit_student.state_dict())
    labels = torch.randint(0, 3, (2, IMAGE_SIZE, IMAGE_SIZE))
    outputs = upernet(x, labels=labels)
    assert outputs.logits.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    train_step(upernet, lambda model: model(x, labels=labels).loss)


def train_step(model, compute_loss):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = compute_loss(model)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone.register_tokens.grad.abs().sum() > 0  # gradients reach the student's registers
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert "backbone.register_tokens" in changed and any(not n.startswith("backbone.") for n in changed)
    with torch.no_grad():
        assert torch.isfinite(compute_loss(model))
