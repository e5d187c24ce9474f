"""Label-free artifact measures on dense patch tokens.

Every function takes patch tokens `(B, N, C)`: B images, N = h*w patches in row-major order (no CLS, no
registers), C channels, and computes in float32 whatever the input dtype. They are what `phreg eval`, the
trainer's final report and the model card show.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OUTLIER_RATIO = "outlier_ratio"
MAX_TO_MEDIAN_NORM = "max_to_median_norm"
TEACHER_AGREEMENT = "teacher_agreement"
POSITION_LOCKED_ENERGY = "position_locked_energy"
LOCAL_SMOOTHNESS = "local_smoothness"
METRIC_NAMES = (
    OUTLIER_RATIO,
    MAX_TO_MEDIAN_NORM,
    TEACHER_AGREEMENT,
    POSITION_LOCKED_ENERGY,
    LOCAL_SMOOTHNESS,
)
# Which direction is better, for tables and model cards.
HIGHER_IS_BETTER = {
    OUTLIER_RATIO: False,
    MAX_TO_MEDIAN_NORM: False,
    TEACHER_AGREEMENT: True,
    POSITION_LOCKED_ENERGY: False,
    LOCAL_SMOOTHNESS: True,
}

# k of the median + k * MAD threshold. MAD of a normal distribution is 0.674 sigma, so k = 6 puts the threshold
# about 4 sigma above the median: typical patch-norm spread (content) stays below it, while the artifact tokens
# of DINOv2 / CLIP (norms several times the median) land far above.
DEFAULT_OUTLIER_K = 6.0


def _check_tokens(patch_tokens: torch.Tensor, name: str = "patch_tokens") -> torch.Tensor:
    if not isinstance(patch_tokens, torch.Tensor) or patch_tokens.ndim != 3:
        shape = (
            tuple(patch_tokens.shape)
            if isinstance(patch_tokens, torch.Tensor)
            else type(patch_tokens).__name__
        )
        raise ValueError(
            f"{name} must be a (batch, patches, channels) tensor, got {shape}; add a batch dimension."
        )
    if 0 in patch_tokens.shape:
        raise ValueError(
            f"{name} is empty (shape {tuple(patch_tokens.shape)}); pass at least one image and patch."
        )
    return patch_tokens.float()


def patch_norm_outliers(patch_tokens: torch.Tensor, k: float = DEFAULT_OUTLIER_K) -> torch.Tensor:
    """Boolean mask `(B, N)` of high-norm outlier tokens.

    A token is an outlier when its L2 norm exceeds the image's robust threshold
    `t = median(norms) + k * MAD(norms)`, with the raw (unscaled) median absolute deviation
    `MAD = median(|norm - median(norms)|)`. When MAD is 0 (all norms equal), nothing is an outlier.

    Args:
        patch_tokens: `(B, N, C)`.
        k: threshold width in MADs (default 6, see `DEFAULT_OUTLIER_K`).
    """
    norms = _check_tokens(patch_tokens).norm(dim=-1)
    median = norms.median(dim=1, keepdim=True).values
    mad = (norms - median).abs().median(dim=1, keepdim=True).values
    return (norms > median + k * mad) & (mad > 0)


def outlier_ratio(patch_tokens: torch.Tensor, k: float = DEFAULT_OUTLIER_K) -> float:
    """Share of patch tokens that are high-norm outliers (`patch_norm_outliers`), over all images `(B, N, C)`."""
    return patch_norm_outliers(patch_tokens, k).float().mean().item()


def max_to_median_norm(patch_tokens: torch.Tensor) -> float:
    """Mean over images of `max(norms) / median(norms)` of the patch tokens `(B, N, C)`; 1 means no outlier."""
    norms = _check_tokens(patch_tokens).norm(dim=-1)
    return (norms.amax(dim=1) / norms.median(dim=1).values.clamp(min=1e-12)).mean().item()


def teacher_agreement(patch_tokens: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cosine similarity between tokens `(B, N, C)` and the denoised teacher's targets `(B, N, C)`."""
    tokens, targets = _check_tokens(patch_tokens), _check_tokens(targets, "targets")
    if tokens.shape != targets.shape:
        raise ValueError(
            f"patch_tokens {tuple(tokens.shape)} and targets {tuple(targets.shape)} differ in shape; compute both "
            "on the same images at the same resolution."
        )
    return F.cosine_similarity(tokens, targets, dim=-1).mean().item()


def position_locked_energy(patch_tokens: torch.Tensor) -> float:
    """Share of feature variance explained by grid position alone, across a set of images.

    With x_bn the token of image b at position n, mu_n = mean_b x_bn and mu = mean_bn x_bn, this is the R^2 of
    a one-way ANOVA with position as the factor, summed over channels:
    `B * sum_n ||mu_n - mu||^2 / sum_bn ||x_bn - mu||^2`.
    1 means the features depend only on position (the same whatever the image); 0 means position explains
    nothing. With B images of position-free noise the expected value is about (N - 1) / (B*N - 1) ~ 1 / B, not
    0: compare values measured on the same number of images.

    Args:
        patch_tokens: `(B, N, C)` with B >= 2 images of the same size.
    """
    tokens = _check_tokens(patch_tokens)
    if tokens.shape[0] < 2:
        raise ValueError(
            "position_locked_energy needs at least 2 images (it compares positions across images)."
        )
    grand_mean = tokens.mean(dim=(0, 1))
    position_means = tokens.mean(dim=0)
    between = tokens.shape[0] * (position_means - grand_mean).square().sum()
    total = (tokens - grand_mean).square().sum()
    return (between / total.clamp(min=1e-12)).item()


def local_smoothness(patch_tokens: torch.Tensor, grid_size: tuple[int, int]) -> float:
    """Mean cosine similarity between each patch and its right and lower neighbours (each pair once).

    Args:
        patch_tokens: `(B, N, C)` with N = h * w.
        grid_size: `(h, w)`.
    """
    tokens = _check_tokens(patch_tokens)
    height, width = grid_size
    if height * width != tokens.shape[1]:
        raise ValueError(
            f"grid_size {grid_size} has {height * width} patches but the tokens have {tokens.shape[1]}; pass the "
            "(image height / patch size, image width / patch size) of the images."
        )
    grid = tokens.unflatten(1, (height, width))
    similarities = []
    if width > 1:
        similarities.append(F.cosine_similarity(grid[:, :, :-1], grid[:, :, 1:], dim=-1).flatten())
    if height > 1:
        similarities.append(F.cosine_similarity(grid[:, :-1], grid[:, 1:], dim=-1).flatten())
    if not similarities:
        raise ValueError("local_smoothness needs a grid with at least two patches.")
    return torch.cat(similarities).mean().item()


def artifact_report(
    patch_tokens: torch.Tensor,
    targets: torch.Tensor | None = None,
    grid_size: tuple[int, int] | None = None,
    k: float = DEFAULT_OUTLIER_K,
) -> dict[str, float]:
    """All measures for one set of patch tokens `(B, N, C)`, keyed by the names in `METRIC_NAMES`.

    `teacher_agreement` needs `targets` `(B, N, C)`, `local_smoothness` needs `grid_size` (else a square grid is
    assumed), `position_locked_energy` needs B >= 2; measures that cannot be computed are left out.
    """
    tokens = _check_tokens(patch_tokens)
    if grid_size is None:
        side = round(tokens.shape[1] ** 0.5)
        grid_size = (side, side)
    report = {OUTLIER_RATIO: outlier_ratio(tokens, k), MAX_TO_MEDIAN_NORM: max_to_median_norm(tokens)}
    if targets is not None:
        report[TEACHER_AGREEMENT] = teacher_agreement(tokens, targets)
    if tokens.shape[0] >= 2:
        report[POSITION_LOCKED_ENERGY] = position_locked_energy(tokens)
    report[LOCAL_SMOOTHNESS] = local_smoothness(tokens, grid_size)
    return report
