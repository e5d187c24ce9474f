"""The MaskCLIP and NACLIP dense paths on a test-time-registers CLIP (a stock CLIPModel with hooks)."""

from __future__ import annotations

import pytest
import torch

from phreg_hf.models.clip_dense import (
    as_phreg_clip,
    dense_features,
    is_test_time_registers_model,
    naclip_attention,
    num_test_time_registers,
)
from phreg_hf.models.modeling_phreg_ttr import PhregTestTimeRegistersModel
from phreg_hf.synthetic_clip import build_planted_artifact_clip

MODES = ("maskclip", "naclip")


@pytest.fixture(scope="module")
def base():
    return build_planted_artifact_clip(image_size=64, patch_size=8).eval()


def ttr_of(neurons: dict) -> PhregTestTimeRegistersModel:
    # A fresh base per model: from_base hooks the modules it is given.
    return PhregTestTimeRegistersModel.from_base(
        build_planted_artifact_clip(image_size=64, patch_size=8), neurons
    )


@torch.no_grad()
def test_zero_neurons_equal_the_base_exactly(base):
    pixel_values = torch.randn(2, 3, 48, 72)
    ttr = ttr_of({})
    assert is_test_time_registers_model(ttr) and not is_test_time_registers_model(base)
    clip = as_phreg_clip(ttr)
    assert num_test_time_registers(clip) == 0
    for mode in MODES:
        assert torch.equal(
            dense_features(clip, pixel_values, mode), dense_features(as_phreg_clip(base), pixel_values, mode)
        )


@torch.no_grad()
def test_neurons_keep_the_extra_token_through_the_blocks_and_out_of_the_output(base):
    pixel_values = torch.randn(2, 3, 48, 72)
    grid = (6, 9)
    ttr = ttr_of({0: [3], 1: [5]})
    clip = as_phreg_clip(ttr)
    assert num_test_time_registers(clip) == 1
    hidden = clip._tokens_before_last_block(pixel_values)
    assert hidden.shape[1] == 1 + 54 + 1
    # The copy's hooks compute what the TTR's own hooks compute on the base's modules (the base itself returns
    # the extra token once wrapped).
    own = ttr.model.vision_model(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True)
    torch.testing.assert_close(hidden, own.hidden_states[-2], atol=1e-5, rtol=1e-5)
    plain = as_phreg_clip(base)
    for mode in MODES:
        got = dense_features(clip, pixel_values, mode)
        assert got.shape == (2, 54, base.config.projection_dim)
        assert not torch.allclose(got, dense_features(plain, pixel_values, mode), atol=1e-4)
    # MaskCLIP maps each token alone: the patches' own tokens through the value path.
    maskclip = clip._dense_from_tokens(hidden[:, :-1])
    torch.testing.assert_close(dense_features(clip, pixel_values, "maskclip"), maskclip)
    # NACLIP: the extra token attends and is attended to without bias, as a prefix token would be.
    reordered = torch.cat((hidden[:, :1], hidden[:, -1:], hidden[:, 1:-1]), dim=1)
    block = clip.vision_model.transformer_blocks[-1]
    tokens = naclip_attention(block, reordered, grid, num_prefix_tokens=2)[:, 2:]
    want = clip.visual_projection(clip.vision_model.post_layernorm(tokens))
    torch.testing.assert_close(dense_features(clip, pixel_values, "naclip"), want, atol=1e-5, rtol=1e-5)


def test_a_vision_tower_ttr_is_refused():
    from transformers import CLIPVisionModel

    vision = CLIPVisionModel(build_planted_artifact_clip(image_size=64, patch_size=8).config.vision_config)
    ttr = PhregTestTimeRegistersModel.from_base(vision, {0: [1]})
    with pytest.raises(ValueError, match="this one wraps a CLIPVisionModel"):
        as_phreg_clip(ttr)


@torch.no_grad()
def test_the_segmenter_takes_a_ttr_clip(base):
    from phreg_hf.models.pipeline_phreg_segmentation import OpenVocabularySegmenter
    from phreg_hf.synthetic_clip import build_tiny_clip_processor

    processor = build_tiny_clip_processor(64)
    classes = [["background"], ["red"], ["blue"]]
    image = torch.rand(3, 40, 56)

    def logits(model, mode):
        segmenter = OpenVocabularySegmenter(
            model,
            processor.tokenizer,
            processor.image_processor.image_mean,
            processor.image_processor.image_std,
            classes,
            mode=mode,
            crop_size=32,
            stride=16,
            templates=("a photo of a {}.",),
        )
        return segmenter.logits(image)

    for mode in MODES:
        assert torch.equal(logits(ttr_of({}), mode), logits(base, mode))
        with_neuron = logits(ttr_of({0: [3]}), mode)
        assert with_neuron.shape == logits(base, mode).shape
        assert not torch.allclose(with_neuron, logits(base, mode), atol=1e-4)
