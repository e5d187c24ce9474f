"""Test-time registers (Jiang et al. 2025): identity with no neuron, a planted register neuron found and moved,
save / load (also with trust_remote_code in a process without phreg_hf), the backbone form, clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKBONES, IMAGE_SIZE, make_base, run_without_phreg
from safetensors.torch import save_file
from transformers import (
    AutoBackbone,
    AutoModel,
    CLIPConfig,
    CLIPModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)
from transformers.models.auto import auto_factory

from phreg_hf import PhregTestTimeRegistersModel
from phreg_hf.evaluate.test_time_registers import find_register_neurons

PLANTED_LAYER, PLANTED_NEURON, PLANTED_TOKENS = 0, 7, (5, 20, 33)


@pytest.fixture
def hub_reachable(monkeypatch):
    # transformers 5.24 asks the Hub whether a local folder is a repository before loading a backbone.
    monkeypatch.setattr(
        auto_factory, "hf_api", lambda: type("Hub", (), {"repo_exists": lambda self, _: True})()
    )


def pixels(batch=2, seed=0):
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_no_neurons_equals_base(backbone, attn):
    base = make_base(backbone, attn)
    model = PhregTestTimeRegistersModel.from_base(base, {})
    x = pixels()
    with torch.no_grad():
        expected, got = base(x, output_hidden_states=True), model(x, output_hidden_states=True)
    assert torch.equal(expected.last_hidden_state, got.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(expected.hidden_states, got.hidden_states, strict=True))
    assert torch.equal(expected.pooler_output, got.pooler_output)


def planted_dinov2():
    """A tiny DINOv2 whose MLP neuron PLANTED_NEURON of block 0 fires hugely at PLANTED_TOKENS only."""
    model = make_base("dinov2")
    with torch.no_grad():
        model.embeddings.position_embeddings[0, list(PLANTED_TOKENS), 0] = (
            50.0  # a marker channel at those tokens
        )
        mlp = model.encoder.layer[PLANTED_LAYER].mlp
        mlp.fc1.weight[PLANTED_NEURON] = 0.0
        mlp.fc1.weight[PLANTED_NEURON, 0] = 10.0
        mlp.fc1.bias[PLANTED_NEURON] = -30.0
        mlp.fc2.weight[:, PLANTED_NEURON] = 20.0
    return model


def planted_signed_dinov2():
    """`planted_dinov2` whose neuron writes a signed pattern instead of a constant vector (which the final layer
    norm removes), so that its outliers survive the norm as position-locked tokens, what `phreg eval` measures."""
    model = planted_dinov2()
    with torch.no_grad():
        column = model.encoder.layer[PLANTED_LAYER].mlp.fc2.weight[:, PLANTED_NEURON]
        column.copy_(20.0 * torch.tensor([(-1.0) ** i for i in range(column.numel())]))
    return model


def patch_norms(hidden_state):
    # Block outputs (before the final norm), where the method looks for outliers.
    return hidden_state[:, 1:].norm(dim=-1)  # (B, h*w)


def test_planted_neuron_is_found_and_its_outliers_removed():
    base = planted_dinov2()
    images = [pixels(4, seed) for seed in range(2)]
    with torch.no_grad():
        norms = patch_norms(base(images[0], output_hidden_states=True).hidden_states[-1])
    planted = [t - 1 for t in PLANTED_TOKENS]
    others = [i for i in range(norms.shape[1]) if i not in planted]
    assert norms[:, planted].min() > 10 * norms[:, others].max()  # the plant makes outliers
    neurons, settings = find_register_neurons(base, images, norm_threshold=1000.0, top_k=1, min_images=8)
    assert neurons == {PLANTED_LAYER: [PLANTED_NEURON]}
    assert settings["num_images_with_outliers"] == 8
    model = PhregTestTimeRegistersModel.from_base(base, neurons, search_settings=settings)
    with torch.no_grad():
        moved = patch_norms(model(images[0], output_hidden_states=True).hidden_states[-1])
    assert moved[:, planted].max() < 2 * norms[:, others].max()
    assert moved.shape == norms.shape


def test_save_load_backbone_and_remote_code(tmp_path, hub_reachable):
    base = planted_dinov2()
    model = PhregTestTimeRegistersModel.from_base(base, {PLANTED_LAYER: [PLANTED_NEURON]}).eval()
    model.save_pretrained(tmp_path / "ttr")
    x = pixels()
    save_file({"x": x}, tmp_path / "inputs.safetensors")
    loaded = AutoModel.from_pretrained(tmp_path / "ttr", attn_implementation="eager").eval()
    assert type(loaded) is PhregTestTimeRegistersModel
    assert loaded.config.register_neurons == {str(PLANTED_LAYER): [PLANTED_NEURON]}
    backbone = AutoBackbone.from_pretrained(
        tmp_path / "ttr", out_indices=[2], attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        expected = model(x, output_hidden_states=True)
        assert torch.allclose(loaded(x).last_hidden_state, expected.last_hidden_state, atol=1e-5)
        feature_map = backbone(x).feature_maps[-1]
    grid = IMAGE_SIZE // 8
    reference = (
        base.layernorm(expected.hidden_states[2])[:, 1:].unflatten(1, (grid, grid)).permute(0, 3, 1, 2)
    )
    assert torch.allclose(feature_map, reference, atol=1e-5)
    save_file({"expected": expected.last_hidden_state}, tmp_path / "expected.safetensors")
    run_without_phreg(
        """
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        model = AutoModel.from_pretrained("ttr", trust_remote_code=True, attn_implementation="eager").eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        with torch.no_grad():
            out = model(load_file("inputs.safetensors")["x"]).last_hidden_state
        assert torch.allclose(out, load_file("expected.safetensors")["expected"], atol=1e-5)
        """,
        cwd=str(tmp_path),
    )


def test_other_bases_run_with_neurons():
    x = pixels(1)
    registers = Dinov2WithRegistersModel(
        Dinov2WithRegistersConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=8,
            num_register_tokens=4,
        )
    ).eval()
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(
                hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            ),
            vision_config=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=56,
                patch_size=8,
            ),
            projection_dim=16,
        )
    ).eval()
    with torch.no_grad():
        for base in (registers, *(make_base(b) for b in BACKBONES)):
            expected = base(x).last_hidden_state.shape  # before wrapping: the hooks go on the base itself
            out = PhregTestTimeRegistersModel.from_base(base, {1: [0, 3]})(x).last_hidden_state
            assert out.shape == expected
        expected = clip.vision_model(x).last_hidden_state.shape
        ttr_clip = PhregTestTimeRegistersModel.from_base(clip, {1: [2]})
        assert ttr_clip.get_image_features(pixel_values=x) is not None
        assert ttr_clip.vision_forward(x).last_hidden_state.shape == expected


def test_bad_inputs_raise_clear_errors():
    base = make_base("dinov2")
    with pytest.raises(ValueError, match="names layer 5"):
        PhregTestTimeRegistersModel.from_base(base, {5: [1]})
    with pytest.raises(ValueError, match="outside this base's 128 MLP neurons"):
        PhregTestTimeRegistersModel.from_base(base, {1: [128]})
    with pytest.raises(ValueError, match="support"):
        PhregTestTimeRegistersModel.from_base(make_base("siglip_vision_model"), {})
    with pytest.raises(ValueError, match="supports base model types"):
        find_register_neurons(make_base("siglip_vision_model"), [pixels()])
    with pytest.raises(ValueError, match="fewer than min_images=100"):
        find_register_neurons(base, [pixels()])
    with pytest.raises(ValueError, match="lower the threshold"):
        find_register_neurons(base, [pixels()], norm_threshold=1e9, min_images=1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_neuron_count_is_the_mlp_width_of_the_model(backbone):
    """A DINOv2 config may carry a stray `intermediate_size` (DINOv2 ignores it and uses `mlp_ratio`): the neuron
    ids must index the MLP the model really has, or the search fails on a shape mismatch."""
    from phreg_hf.models.configuration_phreg_ttr import mlp_width
    from phreg_hf.models.modeling_phreg_ttr import mlp_output_projection, transformer_blocks

    base = make_base(backbone)
    if backbone == "dinov2":
        base.config.intermediate_size = 7
    assert mlp_width(base.config) == mlp_output_projection(transformer_blocks(base)[0]).in_features


def test_feature_map_is_the_patch_tokens_on_the_grid():
    model = PhregTestTimeRegistersModel.from_base(planted_dinov2(), {PLANTED_LAYER: [PLANTED_NEURON]}).eval()
    x = pixels()
    with torch.no_grad():
        tokens, feature_map = model.get_patch_tokens(x), model.get_feature_map(x)
    side = IMAGE_SIZE // model.config.base_vision_config.patch_size
    assert feature_map.shape == (2, tokens.shape[-1], side, side)
    assert torch.equal(feature_map.flatten(2).transpose(1, 2), tokens)
    with pytest.raises(ValueError, match="multiples of"):
        model.get_feature_map(x[..., :-3])


def test_the_probe_reads_its_features_and_width():
    from phreg_hf.evaluate.probe import _feature_dim, _patch_size, feature_extractor

    model = PhregTestTimeRegistersModel.from_base(planted_dinov2(), {PLANTED_LAYER: [PLANTED_NEURON]}).eval()
    assert _feature_dim(model) == model.config.base_vision_config.hidden_size
    assert _patch_size(model) == model.config.base_vision_config.patch_size
    with torch.no_grad():
        assert torch.equal(feature_extractor(model)(pixels()), model.get_feature_map(pixels()))
