"""Artifact measures on constructed tensors with known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from phreg_hf.evaluate.metrics import (
    DEFAULT_OUTLIER_K,
    HIGHER_IS_BETTER,
    LOCAL_SMOOTHNESS,
    MAX_TO_MEDIAN_NORM,
    METRIC_NAMES,
    OUTLIER_RATIO,
    POSITION_LOCKED_ENERGY,
    TEACHER_AGREEMENT,
    NormOutliers,
    artifact_report,
    local_smoothness,
    max_to_median_norm_ratio,
    outlier_ratio,
    patch_norm_outliers,
    position_locked_energy,
    teacher_agreement,
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def jittered_unit_tokens(batch: int, num_patches: int, channels: int, seed: int = 0) -> torch.Tensor:
    """Random directions with norms in [1, 1.05): no token stands out."""
    rng = generator(seed)
    tokens = F.normalize(torch.randn(batch, num_patches, channels, generator=rng), dim=-1)
    return tokens * (1 + 0.05 * torch.rand(batch, num_patches, 1, generator=rng))


def tokens_with_norms(norms: torch.Tensor, channels: int = 4) -> torch.Tensor:
    """Tokens `(B, N, channels)` whose norms are exactly `norms` `(B, N)` (the value sits in channel 0)."""
    tokens = torch.zeros(*norms.shape, channels)
    tokens[..., 0] = norms
    return tokens


def position_part(num_patches: int, channels: int, variance: float, rng: torch.Generator) -> torch.Tensor:
    """Per-position vectors `(N, C)`, centered over positions, whose per-channel variance is exactly `variance`."""
    positions = torch.randn(num_patches, channels, generator=rng)
    positions = positions - positions.mean(dim=0)
    return positions / positions.square().mean().sqrt() * variance**0.5


# ---------------------------------------------------------------- norm outliers


def test_planted_outliers_are_found_and_counted_exactly():
    tokens = jittered_unit_tokens(2, 64, 16)
    planted = [3, 17, 40]
    tokens[0, planted] = F.normalize(tokens[0, planted], dim=-1) * 20
    result = patch_norm_outliers(tokens)
    assert isinstance(result, NormOutliers)
    assert result.mask.shape == (2, 64) and result.mask.dtype == torch.bool
    assert result.mask[0].nonzero().flatten().tolist() == planted
    assert not result.mask[1].any()
    assert result.outlier_ratio == 3 / 128
    assert outlier_ratio(tokens) == 3 / 128
    # Thresholds sit between the ordinary norms and the planted ones.
    assert result.threshold.shape == (2,)
    assert (1.05 < result.threshold[0] < 20) and (result.threshold[1] > 1.0)
    norms = tokens.norm(dim=-1)
    ratio_image0 = 20 / norms[0].median().item()
    ratio_image1 = (norms[1].max() / norms[1].median()).item()
    assert 19 < ratio_image0 <= 20 and 1 < ratio_image1 < 1.05
    assert result.max_to_median_norm == pytest.approx((ratio_image0 + ratio_image1) / 2, rel=1e-5)
    assert max_to_median_norm_ratio(tokens) == result.max_to_median_norm


def test_outliers_in_bf16_match_float32():
    tokens = jittered_unit_tokens(2, 64, 16)
    tokens[1, [0, 63]] *= 10
    result = patch_norm_outliers(tokens.bfloat16())
    assert result.mask[1].nonzero().flatten().tolist() == [0, 63] and not result.mask[0].any()
    assert result.outlier_ratio == 2 / 128
    assert result.threshold.dtype == torch.float32


def test_threshold_is_median_plus_k_raw_mads():
    # Norms 1..9 plus one at 100: median 5, |norm - 5| = 4,3,2,1,0,1,2,3,4,95 -> raw MAD 2 (lower median).
    norms = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 100]])
    tokens = tokens_with_norms(norms)
    assert patch_norm_outliers(tokens, k=2).threshold.item() == pytest.approx(5 + 2 * 2)
    assert patch_norm_outliers(tokens, k=2).mask[0].nonzero().flatten().tolist() == [9]  # 9 is not > 9
    assert patch_norm_outliers(tokens, k=1.5).mask[0].nonzero().flatten().tolist() == [8, 9]
    assert patch_norm_outliers(tokens, k=48).mask.sum() == 0  # threshold 101
    assert patch_norm_outliers(tokens).threshold.item() == pytest.approx(5 + DEFAULT_OUTLIER_K * 2)


def test_equal_norms_have_no_outliers():
    unit = F.normalize(torch.randn(3, 49, 8, generator=generator()), dim=-1)
    for tokens in (unit, unit.bfloat16(), torch.ones(2, 16, 4)):
        result = patch_norm_outliers(tokens)
        assert result.outlier_ratio == 0.0 and not result.mask.any()
        assert result.max_to_median_norm == pytest.approx(1.0, abs=1e-2)
    zeros = patch_norm_outliers(torch.zeros(2, 16, 4))
    assert zeros.outlier_ratio == 0.0 and zeros.max_to_median_norm == 1.0


def test_rounding_size_norm_differences_are_not_outliers():
    # Norms 1 +- 3e-5 (a raw MAD of ~1.6e-5): a token 2e-4 above the median would pass median + 6 * MAD, but the
    # relative MAD floor (k * 0.1% of the median) keeps it in; a token 1% above the median still counts.
    norms = 1 + 1e-6 * torch.arange(-32, 32, dtype=torch.float32)[None].repeat(2, 1)
    norms[0, 5] = 1 + 2e-4
    norms[1, 5] = 1.01
    mask = patch_norm_outliers(tokens_with_norms(norms)).mask
    assert not mask[0].any()
    assert mask[1].nonzero().flatten().tolist() == [5]


# ---------------------------------------------------------------- teacher agreement


def test_teacher_agreement_extremes():
    tokens = torch.randn(2, 10, 8, generator=generator())
    assert teacher_agreement(tokens, tokens) == pytest.approx(1.0)
    assert teacher_agreement(tokens, 3 * tokens) == pytest.approx(1.0)  # scale does not matter
    assert teacher_agreement(tokens, -tokens) == pytest.approx(-1.0)
    first, second = torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)
    first[..., 0], second[..., 1] = 1, 1
    assert teacher_agreement(first, second) == pytest.approx(0.0)
    assert teacher_agreement(tokens.bfloat16(), tokens) == pytest.approx(1.0, abs=1e-3)


def test_teacher_agreement_averages_over_images_and_patches():
    # Image 0 agrees everywhere, image 1 on 1 of its 4 patches and is opposite on the other 3: (4 + 1 - 3) / 8.
    tokens = torch.ones(2, 4, 3)
    targets = tokens.clone()
    targets[1, 1:] = -1
    assert teacher_agreement(tokens, targets) == pytest.approx(2 / 8)


# ---------------------------------------------------------------- position-locked energy


def test_position_driven_features_give_energy_one():
    positions = torch.randn(1, 49, 16, generator=generator())
    assert position_locked_energy(positions.expand(32, -1, -1)) > 0.99
    assert position_locked_energy(positions.expand(32, -1, -1), debias=True) > 0.99


def test_position_free_features_give_energy_near_zero():
    noise = torch.randn(64, 49, 16, generator=generator())
    raw = position_locked_energy(noise)
    assert raw < 0.05
    # The raw R^2 of pure noise is (N - 1) / (B N - 1), about 1 / B: documented, not zero.
    assert raw == pytest.approx(48 / (64 * 49 - 1), rel=0.15)
    assert 0.0 <= position_locked_energy(noise, debias=True) < 0.005


def test_mixed_features_give_the_position_share_of_variance():
    rng = generator(1)
    positions = position_part(49, 16, variance=1.0, rng=rng)  # position variance 1, noise variance 3: 1 / 4
    many = positions + 3**0.5 * torch.randn(256, 49, 16, generator=rng)
    assert position_locked_energy(many) == pytest.approx(0.25, abs=0.02)
    assert position_locked_energy(many, debias=True) == pytest.approx(0.25, abs=0.02)
    # With few images the raw R^2 is inflated by ~ (1 - 0.25) / B; debias removes that.
    few = positions + 3**0.5 * torch.randn(8, 49, 16, generator=rng)
    assert position_locked_energy(few) == pytest.approx(0.25 + 0.75 * 48 / (8 * 49 - 1), abs=0.04)
    assert position_locked_energy(few, debias=True) == pytest.approx(0.25, abs=0.04)


def test_position_locked_energy_ignores_the_global_mean_and_handles_constant_sets():
    noise = torch.randn(16, 25, 8, generator=generator())
    offset = 50 * torch.randn(8, generator=generator(1))
    assert position_locked_energy(noise + offset) == pytest.approx(position_locked_energy(noise), abs=1e-4)
    assert position_locked_energy(torch.ones(4, 9, 3)) == 0.0
    assert position_locked_energy(torch.ones(4, 9, 3), debias=True) == 0.0


# ---------------------------------------------------------------- local smoothness


def test_local_smoothness_known_answers():
    assert local_smoothness(torch.ones(2, 12, 4), (3, 4)) == pytest.approx(1.0)
    signs = torch.tensor([[(-1) ** (i + j) for j in range(4)] for i in range(3)], dtype=torch.float32)
    checkerboard = signs.flatten()[None, :, None] * torch.ones(1, 12, 4)
    assert local_smoothness(checkerboard, (3, 4)) == pytest.approx(-1.0)


def test_local_smoothness_counts_each_pair_once_in_row_major_order():
    # Columns alternate sign: the 3 * 3 horizontal pairs are opposite, the 2 * 4 vertical pairs identical.
    columns = torch.tensor([[(-1) ** j for j in range(4)] for _ in range(3)], dtype=torch.float32)
    striped = columns.flatten()[None, :, None] * torch.ones(2, 12, 4)
    assert local_smoothness(striped, (3, 4)) == pytest.approx((9 * -1 + 8 * 1) / 17)
    # Read as a 4 x 3 grid the same tokens alternate in another pattern: the grid size matters.
    assert local_smoothness(striped, (4, 3)) != pytest.approx((9 * -1 + 8 * 1) / 17)
    assert local_smoothness(torch.ones(1, 5, 2), (1, 5)) == pytest.approx(1.0)  # a single row works


# ---------------------------------------------------------------- report and constants


def test_artifact_report_has_every_measure_in_order():
    tokens = jittered_unit_tokens(4, 16, 8)
    tokens[0, 5] *= 30
    report = artifact_report(tokens, targets=tokens, grid_size=(4, 4))
    assert tuple(report) == METRIC_NAMES
    assert all(isinstance(value, float) for value in report.values())
    assert report[OUTLIER_RATIO] == outlier_ratio(tokens) == 1 / 64
    assert report[MAX_TO_MEDIAN_NORM] == max_to_median_norm_ratio(tokens)
    assert report[TEACHER_AGREEMENT] == pytest.approx(1.0)
    assert report[POSITION_LOCKED_ENERGY] == position_locked_energy(tokens)
    assert report[LOCAL_SMOOTHNESS] == local_smoothness(tokens, (4, 4))
    assert artifact_report(tokens, debias=True)[POSITION_LOCKED_ENERGY] == position_locked_energy(
        tokens, debias=True
    )


def test_artifact_report_leaves_out_what_it_cannot_compute():
    tokens = jittered_unit_tokens(1, 16, 8)
    report = artifact_report(tokens)  # square grid assumed, no targets, a single image
    assert tuple(report) == (OUTLIER_RATIO, MAX_TO_MEDIAN_NORM, LOCAL_SMOOTHNESS)
    with pytest.raises(ValueError, match="do not form a square grid; pass grid_size"):
        artifact_report(jittered_unit_tokens(2, 12, 8))
    assert LOCAL_SMOOTHNESS in artifact_report(jittered_unit_tokens(2, 12, 8), grid_size=(3, 4))


def test_every_metric_has_a_direction_entry():
    assert set(HIGHER_IS_BETTER) == set(METRIC_NAMES)
    assert HIGHER_IS_BETTER[TEACHER_AGREEMENT] is True and HIGHER_IS_BETTER[OUTLIER_RATIO] is False


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: outlier_ratio(torch.randn(16, 8)), r"\(batch, patches, channels\).*got shape \(16, 8\)"),
        (lambda: outlier_ratio([[[1.0]]]), "must be a torch.Tensor.*got list"),
        (lambda: outlier_ratio(torch.randn(0, 16, 8)), r"is empty \(shape \(0, 16, 8\)\)"),
        (lambda: outlier_ratio(torch.randn(1, 16, 8), k=-1), "k must be a finite number >= 0.*got -1"),
        (lambda: max_to_median_norm_ratio(torch.randn(2, 3, 4, 5)), "got shape \\(2, 3, 4, 5\\)"),
        (
            lambda: teacher_agreement(torch.randn(1, 4, 8), torch.randn(1, 5, 8)),
            r"\(1, 4, 8\) and targets \(1, 5, 8\) differ in shape",
        ),
        (lambda: teacher_agreement(torch.randn(1, 4, 8), torch.randn(4, 8)), "targets must be a"),
        (lambda: position_locked_energy(torch.randn(1, 4, 8)), "at least 2 images.*got 1"),
        (lambda: local_smoothness(torch.randn(1, 12, 8), (3, 3)), r"grid_size \(3, 3\) has 9 patches.*12"),
        (lambda: local_smoothness(torch.randn(1, 12, 8), (3, 4, 1)), "pair of positive ints"),
        (lambda: local_smoothness(torch.randn(1, 12, 8), (0, 12)), "pair of positive ints"),
        (lambda: local_smoothness(torch.randn(1, 1, 8), (1, 1)), "at least two patches"),
    ],
)
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
