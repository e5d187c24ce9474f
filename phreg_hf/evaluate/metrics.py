# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Label-free artifact measures on dense patch tokens.

Every function takes patch tokens `(B, N, C)`: B images, N = h * w patches in row-major order (no CLS, no
registers), C channels. They compute in float32 whatever the input dtype (bf16 tokens included) and are pure
tensor functions: no model code, no I/O. They are what `phreg eval`, the trainer's final report and the model
card show; the metric names below are the keys of `artifact_report` and of the metrics JSON.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OUTLIER_RATIO = "outlier_ratio"
MAX_TO_MEDIAN_NORM = "max_to_median_norm"
TEACHER_AGREEMENT = "teacher_agreement"
POSITION_LOCKED_ENERGY = "position_locked_energy"
LOCAL_SMOOTHNESS = "local_smoothness"
# Every key `artifact_report` can return, in the order it returns them.
METRIC_NAMES = (
    OUTLIER_RATIO,
    MAX_TO_MEDIAN_NORM,
    TEACHER_AGREEMENT,
    POSITION_LOCKED_ENERGY,
    LOCAL_SMOOTHNESS,
)
# Which direction is better, for tables and model cards. Local smoothness has none: artifact tokens lower it,
# but so does real detail, and a constant (collapsed) map scores the maximum, 1.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    OUTLIER_RATIO: False,
    MAX_TO_MEDIAN_NORM: False,
    TEACHER_AGREEMENT: True,
    POSITION_LOCKED_ENERGY: False,
    LOCAL_SMOOTHNESS: None,
}

# k of the per-image threshold median + k * MAD (raw MAD, not scaled by 1.4826). For normally distributed norms
# MAD = 0.674 sigma, so k = 6 puts the threshold about 4 sigma above the median: a Gaussian exceeds it with
# probability ~3e-5, i.e. ~0.04 false outliers in DINOv2's 1369 patches at 518 px, while the artifact tokens of
# DINOv2 / CLIP (norms several times the median, ~2% of tokens in "Vision Transformers Need Registers") land far
# above. The usual k = 3 (~2 sigma) would flag ~2% of ordinary tokens, as many as there are artifacts.
DEFAULT_OUTLIER_K = 6.0
# Floor on the MAD, relative to the median norm. Without it, near-equal norms (a final LayerNorm with unit weight,
# or tokens rounded to bf16) have a MAD of float rounding size and rounding noise would count as outliers; with
# it a token must be at least k * 0.1% (0.6% at k = 6) above the median, far below any real artifact. Exactly
# equal norms (MAD 0) then give no outliers.
MIN_RELATIVE_MAD = 1e-3


def _check_tokens(patch_tokens: torch.Tensor, name: str = "patch_tokens") -> torch.Tensor:
    """`patch_tokens` `(B, N, C)` as float32, or a ValueError that says what to pass."""
    if not isinstance(patch_tokens, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (batch, patches, channels), got {type(patch_tokens).__name__}."
        )
    if patch_tokens.ndim != 3:
        raise ValueError(
            f"{name} must be a (batch, patches, channels) tensor, got shape {tuple(patch_tokens.shape)}; "
            "add a batch dimension for one image and drop CLS / register tokens."
        )
    if 0 in patch_tokens.shape:
        raise ValueError(
            f"{name} is empty (shape {tuple(patch_tokens.shape)}); pass at least one image, patch and channel."
        )
    if patch_tokens.is_complex():
        raise ValueError(f"{name} has complex dtype {patch_tokens.dtype}; pass real-valued features.")
    return patch_tokens.float()


def _check_grid_size(grid_size: tuple[int, int], num_patches: int) -> tuple[int, int]:
    """`grid_size` as `(h, w)` ints with h * w == num_patches, or a ValueError that says what to pass."""
    try:
        height, width = (operator.index(side) for side in grid_size)
    except (TypeError, ValueError):
        height = width = 0
    if height <= 0 or width <= 0:
        raise ValueError(
            f"grid_size must be a pair of positive ints (height, width) in patches, got {grid_size!r}; pass "
            "(image height // patch size, image width // patch size)."
        )
    if height * width != num_patches:
        raise ValueError(
            f"grid_size {(height, width)} has {height * width} patches but the tokens have {num_patches}; pass "
            "(image height // patch size, image width // patch size) of the images, and drop CLS / register tokens."
        )
    return height, width


@dataclass(frozen=True)
class NormOutliers:
    """Result of `patch_norm_outliers`.

    Attributes:
        mask: `(B, N)` bool, True where a token's norm exceeds its image's threshold.
        threshold: `(B,)` float32, the per-image threshold `t`.
        outlier_ratio: mean over images of the share of tokens with norm > t (= `mask.float().mean()`).
        max_to_median_norm: mean over images of max(norms) / median(norms); 1 when all norms are equal.
    """

    mask: torch.Tensor
    threshold: torch.Tensor
    outlier_ratio: float
    max_to_median_norm: float


def patch_norm_outliers(patch_tokens: torch.Tensor, k: float = DEFAULT_OUTLIER_K) -> NormOutliers:
    """High-norm outlier tokens, found per image with a robust threshold.

    With `norms = ||x_bn||_2` of image b's patch tokens:
    `t_b = median(norms) + k * max(MAD, MIN_RELATIVE_MAD * median(norms))`, where
    `MAD = median(|norms - median(norms)|)` is the raw median absolute deviation (not scaled by 1.4826) and
    `median` is the lower median of an even count (`torch.median`). A token is an outlier when its norm > t_b.
    The floor on the MAD keeps float rounding noise out: exactly equal norms (MAD 0) give no outliers.

    `outlier_ratio = mean_b (#{n : norm_bn > t_b} / N)` and
    `max_to_median_norm = mean_b (max_n norm_bn / median_n norm_bn)` (1 for an image whose norms are all equal,
    all-zero included).

    Args:
        patch_tokens: `(B, N, C)` patch tokens.
        k: threshold width in MADs; default `DEFAULT_OUTLIER_K` = 6 (about 4 sigma for normal norms, see there).

    Returns:
        `NormOutliers` with the `(B, N)` mask, the `(B,)` thresholds and both ratios as floats.
    """
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not math.isfinite(k) or k < 0:
        raise ValueError(
            f"k must be a finite number >= 0 (threshold width in MADs), got {k!r}; the default is 6."
        )
    norms = torch.linalg.vector_norm(_check_tokens(patch_tokens), dim=-1)
    median = norms.median(dim=1).values
    mad = (norms - median[:, None]).abs().median(dim=1).values
    threshold = median + k * torch.maximum(mad, MIN_RELATIVE_MAD * median)
    mask = norms > threshold[:, None]
    maximum = norms.amax(dim=1)
    tiny = torch.finfo(torch.float32).tiny
    ratio = torch.where(maximum == median, torch.ones_like(median), maximum / median.clamp(min=tiny))
    return NormOutliers(
        mask=mask,
        threshold=threshold,
        outlier_ratio=mask.float().mean().item(),
        max_to_median_norm=ratio.mean().item(),
    )


def outlier_ratio(patch_tokens: torch.Tensor, k: float = DEFAULT_OUTLIER_K) -> float:
    """Share of high-norm outlier tokens: `patch_norm_outliers(patch_tokens, k).outlier_ratio`.

    Args:
        patch_tokens: `(B, N, C)` patch tokens.
        k: threshold width in MADs (see `patch_norm_outliers`).
    """
    return patch_norm_outliers(patch_tokens, k).outlier_ratio


def max_to_median_norm_ratio(patch_tokens: torch.Tensor) -> float:
    """`mean_b (max_n ||x_bn|| / median_n ||x_bn||)`: `patch_norm_outliers(patch_tokens).max_to_median_norm`.

    1 means no token stands out; high-norm artifacts push it to several times 1.

    Args:
        patch_tokens: `(B, N, C)` patch tokens.
    """
    return patch_norm_outliers(patch_tokens).max_to_median_norm


def teacher_agreement(patch_tokens: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cosine similarity to the denoised teacher's targets, over all images and patches.

    `mean_{b,n} <x_bn, y_bn> / (max(||x_bn||, eps) * max(||y_bn||, eps))` with eps = 1e-8
    (`torch.nn.functional.cosine_similarity`), so a zero vector scores 0. 1 is perfect agreement, 0 unrelated,
    -1 opposite.

    Args:
        patch_tokens: `(B, N, C)` features to rate (e.g. the student's).
        targets: `(B, N, C)` targets for the same images at the same resolution.
    """
    tokens, targets = _check_tokens(patch_tokens), _check_tokens(targets, "targets")
    if tokens.shape != targets.shape:
        raise ValueError(
            f"patch_tokens {tuple(tokens.shape)} and targets {tuple(targets.shape)} differ in shape; compute both "
            "on the same images at the same resolution, patch tokens only."
        )
    return F.cosine_similarity(tokens, targets, dim=-1).mean().item()


def position_locked_energy(patch_tokens: torch.Tensor, debias: bool = False) -> float:
    """Share of the feature variance explained by grid position alone, across a set of images.

    A one-way ANOVA with the grid position as the factor, summed over channels. With x_bn the token of image b
    at position n, `mu_n = mean_b x_bn` and `mu = mean_{b,n} x_bn`:

        SS_between = B * sum_n ||mu_n - mu||^2
        SS_within  = sum_{b,n} ||x_bn - mu_n||^2
        SS_total   = sum_{b,n} ||x_bn - mu||^2 = SS_between + SS_within
        energy     = SS_between / SS_total                                      (debias=False, the R^2)

    1 means the features depend only on position (the same whatever the image), 0 that position explains
    nothing. A set with no variance at all (every token equal) gives 0.

    Finite-sample bias: for position-free features (i.i.d. over images) the position means still differ by
    chance, and the expected R^2 is (N - 1) / (B N - 1) ~ 1 / B, not 0. Compare raw values only between sets of
    the same size, or pass `debias=True`, which estimates the population share instead: with the unbiased
    within-position variance `s2 = SS_within / (N (B - 1))` and the between-position variance less its expected
    noise part, `v_pos = (SS_between - (N - 1) s2) / (B N)`,

        energy = clamp(v_pos / (v_pos + s2), 0, 1)                                  (debias=True)

    (the ICC(1) with positions as the groups). It is ~0 in expectation for position-free features at any B and
    converges to the same limit as the R^2 as B grows; it can be slightly negative before the clamp.

    Args:
        patch_tokens: `(B, N, C)` with B >= 2 images of the same size (more images, less bias and noise).
        debias: subtract the expected noise contribution as above; default False (the plain R^2).
    """
    tokens = _check_tokens(patch_tokens)
    num_images, num_patches = tokens.shape[:2]
    if num_images < 2:
        raise ValueError(
            f"position_locked_energy needs at least 2 images (it compares positions across images), got "
            f"{num_images}; pass a batch of several images, e.g. (64, N, C)."
        )
    position_means = tokens.mean(dim=0)
    grand_mean = position_means.mean(dim=0)
    # Scalar sums in float64: the between/within split must add up to the total even when one part is tiny.
    between = num_images * (position_means - grand_mean).square().sum(dtype=torch.float64)
    within = (tokens - position_means).square().sum(dtype=torch.float64)
    if not debias:
        total = between + within
        return (between / total).item() if total > 0 else 0.0
    within_variance = within / (num_patches * (num_images - 1))
    position_variance = (between - (num_patches - 1) * within_variance) / (num_images * num_patches)
    total = position_variance + within_variance  # = (MS_between + (B - 1) MS_within) / B >= 0
    if total <= 0:
        return 0.0
    return (position_variance / total).clamp(0.0, 1.0).item()


def local_smoothness(patch_tokens: torch.Tensor, grid_size: tuple[int, int]) -> float:
    """Mean cosine similarity between neighbouring patches (4-neighbourhood, each pair counted once).

    Over every horizontal pair (x_{i,j}, x_{i,j+1}) and every vertical pair (x_{i,j}, x_{i+1,j}) of each image's
    h x w grid: `mean over all h(w-1) + (h-1)w pairs and all images of cos(x_a, x_b)`. Every image has the same
    pairs, so this is also the mean over images of the per-image mean. 1 for a constant map, -1 for a
    checkerboard of +v / -v; isolated artifact tokens lower it.

    Args:
        patch_tokens: `(B, N, C)` with N = h * w in row-major order.
        grid_size: `(h, w)` in patches, with at least two patches.
    """
    tokens = _check_tokens(patch_tokens)
    height, width = _check_grid_size(grid_size, tokens.shape[1])
    if height * width < 2:
        raise ValueError(
            f"local_smoothness needs a grid of at least two patches, got grid_size {tuple(grid_size)}; pass larger "
            "images."
        )
    grid = tokens.unflatten(1, (height, width))
    horizontal = F.cosine_similarity(grid[:, :, :-1], grid[:, :, 1:], dim=-1).flatten()
    vertical = F.cosine_similarity(grid[:, :-1], grid[:, 1:], dim=-1).flatten()
    return torch.cat([horizontal, vertical]).mean().item()


def artifact_report(
    patch_tokens: torch.Tensor,
    targets: torch.Tensor | None = None,
    grid_size: tuple[int, int] | None = None,
    k: float = DEFAULT_OUTLIER_K,
    debias: bool = False,
) -> dict[str, float]:
    """All artifact measures for one set of patch tokens, keyed by the names in `METRIC_NAMES`, in that order.

    `OUTLIER_RATIO` and `MAX_TO_MEDIAN_NORM` from `patch_norm_outliers(patch_tokens, k)`,
    `TEACHER_AGREEMENT` from `teacher_agreement(patch_tokens, targets)` (only when `targets` is given),
    `POSITION_LOCKED_ENERGY` from `position_locked_energy(patch_tokens, debias)` (only when B >= 2) and
    `LOCAL_SMOOTHNESS` from `local_smoothness(patch_tokens, grid_size)`.

    Args:
        patch_tokens: `(B, N, C)` patch tokens of a set of images.
        targets: optional `(B, N, C)` denoised teacher targets for the same images.
        grid_size: `(h, w)` in patches; None assumes a square grid and needs N to be a perfect square.
        k: outlier threshold width in MADs (see `patch_norm_outliers`).
        debias: passed to `position_locked_energy`.
    """
    tokens = _check_tokens(patch_tokens)
    if grid_size is None:
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(
                f"{tokens.shape[1]} patches do not form a square grid; pass grid_size=(height, width) in patches."
            )
        grid_size = (side, side)
    norm_outliers = patch_norm_outliers(tokens, k)
    report = {
        OUTLIER_RATIO: norm_outliers.outlier_ratio,
        MAX_TO_MEDIAN_NORM: norm_outliers.max_to_median_norm,
    }
    if targets is not None:
        report[TEACHER_AGREEMENT] = teacher_agreement(tokens, targets)
    if tokens.shape[0] >= 2:
        report[POSITION_LOCKED_ENERGY] = position_locked_energy(tokens, debias=debias)
    report[LOCAL_SMOOTHNESS] = local_smoothness(tokens, grid_size)
    return report
