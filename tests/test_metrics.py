"""Artifact measures on constructed tensors with known answers."""

from __future__ import annotations

import pytest
import torch

from phreg_hf.metrics import (
    METRIC_NAMES,
    artifact_report,
    local_smoothness,
    max_to_median_norm,
    outlier_ratio,
    patch_norm_outliers,
    position_locked_energy,
    teacher_agreement,
)


def unit_tokens(batch, num_patches, channels, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.nn.functional.normalize(
        torch.randn(batch, num_patches, channels, generator=generator), dim=-1
    )
    jitter = 1 + 0.05 * torch.rand(batch, num_patches, 1, generator=generator)
    return tokens * jitter


def test_planted_outliers_are_found_and_counted_exactly():
    tokens = unit_tokens(2, 64, 16)
    planted = [3, 17, 40]
    tokens[0, planted] = tokens[0, planted] / tokens[0, planted].norm(dim=-1, keepdim=True) * 20
    mask = patch_norm_outliers(tokens)
    assert mask[0].nonzero().flatten().tolist() == planted and not mask[1].any()
    assert outlier_ratio(tokens) == 3 / 128
    ratio_image0 = 20 / tokens[0].norm(dim=-1).median().item()
    ratio_image1 = (tokens[1].norm(dim=-1).max() / tokens[1].norm(dim=-1).median()).item()
    assert max_to_median_norm(tokens) == pytest.approx((ratio_image0 + ratio_image1) / 2, rel=1e-5)


def test_equal_norms_have_no_outliers():
    tokens = torch.nn.functional.normalize(torch.randn(3, 49, 8), dim=-1)
    assert outlier_ratio(tokens) == 0.0
    assert max_to_median_norm(tokens) == pytest.approx(1.0, abs=1e-5)


def test_position_locked_energy_known_answers():
    generator = torch.Generator().manual_seed(0)
    positions = torch.randn(1, 49, 16, generator=generator)
    assert position_locked_energy(positions.expand(32, -1, -1)) > 0.99  # same features whatever the image
    noise = torch.randn(64, 49, 16, generator=generator)
    assert position_locked_energy(noise) < 0.05  # ~ 1 / B for position-free features
    # Position part with variance 1, noise with variance 3: about 1 / (1 + 3).
    mixed = positions.expand(256, -1, -1) + 3**0.5 * torch.randn(256, 49, 16, generator=generator)
    assert position_locked_energy(mixed) == pytest.approx(0.25, abs=0.03)


def test_teacher_agreement_extremes():
    tokens = torch.randn(2, 10, 8)
    assert teacher_agreement(tokens, tokens) == pytest.approx(1.0)
    assert teacher_agreement(tokens, -tokens) == pytest.approx(-1.0)
    first, second = torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)
    first[..., 0], second[..., 1] = 1, 1
    assert teacher_agreement(first, second) == pytest.approx(0.0)


def test_local_smoothness_known_answers():
    constant = torch.ones(2, 12, 4)
    assert local_smoothness(constant, (3, 4)) == pytest.approx(1.0)
    signs = torch.tensor([[(-1) ** (i + j) for j in range(4)] for i in range(3)], dtype=torch.float32)
    checkerboard = signs.flatten()[None, :, None] * torch.ones(1, 12, 4)
    assert local_smoothness(checkerboard, (3, 4)) == pytest.approx(-1.0)
    stripes = torch.tensor([[(-1) ** j for j in range(4)] for _ in range(3)], dtype=torch.float32)
    # Horizontal pairs (9 of them) are opposite, vertical pairs (8) identical.
    striped = stripes.flatten()[None, :, None] * torch.ones(1, 12, 4)
    assert local_smoothness(striped, (3, 4)) == pytest.approx((9 * -1 + 8 * 1) / 17)


def test_artifact_report_has_every_measure():
    tokens = unit_tokens(4, 16, 8)
    report = artifact_report(tokens, targets=tokens, grid_size=(4, 4))
    assert tuple(report) == METRIC_NAMES
    assert report["teacher_agreement"] == pytest.approx(1.0)
    assert "teacher_agreement" not in artifact_report(tokens)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: outlier_ratio(torch.randn(16, 8)), r"\(batch, patches, channels\)"),
        (lambda: outlier_ratio(torch.randn(0, 16, 8)), "is empty"),
        (lambda: teacher_agreement(torch.randn(1, 4, 8), torch.randn(1, 5, 8)), "differ in shape"),
        (lambda: position_locked_energy(torch.randn(1, 4, 8)), "at least 2 images"),
        (lambda: local_smoothness(torch.randn(1, 12, 8), (3, 3)), r"grid_size \(3, 3\) has 9 patches.*12"),
    ],
)
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
