"""The denoised teacher of PH-Reg: average a frozen model's dense features over shifted and flipped views.

For each image, K views are drawn (METHOD.md): integer patch offsets (dy, dx) within +-round(shift_frac * n),
chosen by farthest point sampling among 10*K random draws, view 0 always the identity, the others flipped
horizontally with probability 1/2. Each view is rendered, run through the frozen model, and every output patch
token is scattered back to the original patch it shows; the average over the views that saw a position is the
distillation target. Shifting moves content but not position-locked noise, so the average keeps the content
and washes the noise out.

One mapping serves pixels and tokens alike (`view_source_indices`): view patch (i, j) of a view with offset
(dy, dx) shows original patch (i - dy, j - dx); a flipped view then mirrors that horizontally, so its patch
(i, j) shows original patch (i - dy, w - 1 - j - dx), with the pixels inside each patch mirrored too. Patches
shifted in from outside the image show the fill value (-1 in the index map).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

# METHOD.md reference settings.
DEFAULT_NUM_VIEWS = 10
DEFAULT_SHIFT_FRAC = 0.15
DEFAULT_FLIP_PROB = 0.5
# Farthest point sampling picks K views among this many random draws per view.
CANDIDATES_PER_VIEW = 10


@dataclass
class TeacherViews:
    """The views drawn for a batch: `offsets` `(B, K, 2)` long (dy, dx) in patches, `flips` `(B, K)` bool."""

    offsets: torch.Tensor
    flips: torch.Tensor

    @property
    def num_views(self) -> int:
        return self.offsets.shape[1]

    def __getitem__(self, index) -> TeacherViews:
        return TeacherViews(self.offsets[index], self.flips[index])


def stack_views(views: Sequence[TeacherViews]) -> TeacherViews:
    """Concatenate per-image (or per-chunk) views along the batch dimension."""
    return TeacherViews(torch.cat([v.offsets for v in views]), torch.cat([v.flips for v in views]))


def max_shifts(grid_size: tuple[int, int], shift_frac: float) -> tuple[int, int]:
    """Largest offset per axis, `(round(shift_frac * h), round(shift_frac * w))`.

    METHOD.md states s = round(shift_frac * n) for square grids; a non-square grid gets one bound per axis.
    """
    return round(shift_frac * grid_size[0]), round(shift_frac * grid_size[1])


def farthest_point_sampling(candidates: torch.Tensor, num_points: int) -> torch.Tensor:
    """Pick `num_points` of `candidates` `(B, M, 2)` greedily, each the farthest from those already picked.

    The first pick is the origin (0, 0) (view 0 is the identity), whether or not it is among the candidates.
    Returns `(B, num_points, 2)` in the dtype of `candidates`.
    """
    batch_size = candidates.shape[0]
    points = candidates.float()
    chosen = [torch.zeros(batch_size, 2, dtype=candidates.dtype, device=candidates.device)]
    min_distance = points.norm(dim=-1)  # distance to the origin
    rows = torch.arange(batch_size, device=candidates.device)
    for _ in range(num_points - 1):
        best = min_distance.argmax(dim=1)
        picked = candidates[rows, best]
        chosen.append(picked)
        min_distance = torch.minimum(min_distance, (points - picked[:, None].float()).norm(dim=-1))
    return torch.stack(chosen, dim=1)


def sample_views(
    batch_size: int,
    grid_size: tuple[int, int],
    num_views: int = DEFAULT_NUM_VIEWS,
    shift_frac: float = DEFAULT_SHIFT_FRAC,
    generator: torch.Generator | None = None,
    flip_prob: float = DEFAULT_FLIP_PROB,
) -> TeacherViews:
    """Draw K views per image: offsets by farthest point sampling, random horizontal flips.

    Args:
        batch_size: number of images B.
        grid_size: patch grid `(h, w)`.
        num_views: K, including the identity view 0.
        shift_frac: offsets lie in `[-round(shift_frac * h), +...] x [-round(shift_frac * w), +...]` patches.
        generator: CPU generator for reproducible views (same seed, same views).
        flip_prob: probability that a view other than view 0 is mirrored horizontally.

    Returns:
        `TeacherViews` with offsets `(B, K, 2)` and flips `(B, K)`.
    """
    _check_view_settings(num_views, shift_frac, flip_prob)
    shift_y, shift_x = max_shifts(grid_size, shift_frac)
    num_candidates = CANDIDATES_PER_VIEW * num_views
    candidates = torch.stack(
        (
            torch.randint(-shift_y, shift_y + 1, (batch_size, num_candidates), generator=generator),
            torch.randint(-shift_x, shift_x + 1, (batch_size, num_candidates), generator=generator),
        ),
        dim=-1,
    )
    offsets = farthest_point_sampling(candidates, num_views)
    flips = torch.rand(batch_size, num_views, generator=generator) < flip_prob
    flips[:, 0] = False
    return TeacherViews(offsets=offsets, flips=flips)


def view_source_indices(views: TeacherViews, grid_size: tuple[int, int]) -> torch.Tensor:
    """For every patch of every view, the flat index of the original patch it shows, or -1 for fill.

    Args:
        views: offsets `(B, K, 2)`, flips `(B, K)`.
        grid_size: patch grid `(h, w)`.

    Returns:
        `(B, K, h*w)` long, row-major over the view's patch grid.
    """
    height, width = grid_size
    device = views.offsets.device
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    dy = views.offsets[..., 0, None, None]
    dx = views.offsets[..., 1, None, None]
    source_cols = torch.where(views.flips[..., None, None], width - 1 - cols, cols) - dx
    source_rows = rows - dy
    valid = (source_rows >= 0) & (source_rows < height) & (source_cols >= 0) & (source_cols < width)
    indices = torch.where(valid, source_rows * width + source_cols, -1)
    return indices.flatten(2)


def normalized_fill_value(
    image_mean: Sequence[float], image_std: Sequence[float], raw_value: float = 1.0
) -> tuple[float, ...]:
    """The fill of pixels shifted in from outside, in normalized space (reference: white, 1.0, before normalizing)."""
    return tuple((raw_value - mean) / std for mean, std in zip(image_mean, image_std, strict=True))


def render_views(
    pixel_values: torch.Tensor, views: TeacherViews, patch_size: int, fill_value: float | Sequence[float]
) -> torch.Tensor:
    """Render the shifted / flipped views of a batch.

    Args:
        pixel_values: `(B, C, H, W)` normalized images, H and W multiples of `patch_size`.
        views: offsets `(B, K, 2)`, flips `(B, K)`.
        patch_size: p.
        fill_value: one value or one per channel, in normalized space (see `normalized_fill_value`).

    Returns:
        `(B * K, C, H, W)` view images, image-major (all views of image 0 first).
    """
    batch_size, channels, height, width = pixel_values.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    num_views = views.num_views
    # (B, N, C, p, p): one entry per patch, row-major.
    patches = pixel_values.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(
        batch_size, grid_h * grid_w, channels, patch_size, patch_size
    )
    indices = view_source_indices(views, (grid_h, grid_w)).to(pixel_values.device)  # (B, K, N)
    gathered = torch.gather(
        patches[:, None].expand(-1, num_views, -1, -1, -1, -1),
        2,
        indices.clamp(min=0)[..., None, None, None].expand(-1, -1, -1, channels, patch_size, patch_size),
    )  # (B, K, N, C, p, p)
    fill = torch.as_tensor(fill_value, dtype=pixel_values.dtype, device=pixel_values.device).reshape(-1)
    fill = fill.expand(channels).view(1, 1, 1, channels, 1, 1)
    gathered = torch.where((indices >= 0)[..., None, None, None], gathered, fill)
    flips = views.flips.to(pixel_values.device)[:, :, None, None, None, None]
    gathered = torch.where(flips, gathered.flip(-1), gathered)  # mirror the pixels inside each patch
    rendered = gathered.reshape(batch_size, num_views, grid_h, grid_w, channels, patch_size, patch_size)
    rendered = rendered.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch_size * num_views, channels, height, width)
    return rendered


def scatter_average(
    view_tokens: torch.Tensor, source_indices: torch.Tensor, num_positions: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter every valid view token back to its original patch and average over the views that saw it.

    Args:
        view_tokens: `(B, K, N, C)` tokens of the views.
        source_indices: `(B, K, N)` original patch of each view token, -1 for fill (ignored).
        num_positions: original positions (default N).

    Returns:
        `(averaged (B, P, C) float32, counts (B, P) float32)`; positions no view saw are 0 with count 0.
    """
    batch_size, num_views, num_tokens, channels = view_tokens.shape
    num_positions = num_tokens if num_positions is None else num_positions
    tokens = view_tokens.float().reshape(batch_size, num_views * num_tokens, channels)
    indices = source_indices.to(view_tokens.device).reshape(batch_size, num_views * num_tokens)
    valid = (indices >= 0).float()
    safe_indices = indices.clamp(min=0)
    sums = tokens.new_zeros(batch_size, num_positions, channels)
    sums.scatter_add_(1, safe_indices[..., None].expand(-1, -1, channels), tokens * valid[..., None])
    counts = tokens.new_zeros(batch_size, num_positions).scatter_add_(1, safe_indices, valid)
    return sums / counts.clamp(min=1)[..., None], counts


def _check_view_settings(num_views: int, shift_frac: float, flip_prob: float) -> None:
    if not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"num_views must be an integer >= 1 (reference: 10), got {num_views!r}.")
    if not 0 <= shift_frac < 1:
        raise ValueError(f"shift_frac must be in [0, 1) (reference: 0.15), got {shift_frac!r}.")
    if not 0 <= flip_prob <= 1:
        raise ValueError(f"flip_prob must be in [0, 1] (reference: 0.5), got {flip_prob!r}.")


class DenoisingTeacher(nn.Module):
    """PH-Reg's teacher: a frozen model's final-normed patch tokens, averaged over shifted and flipped views.

    Args:
        model: the frozen base model as a PH-Reg model (usually `student_from_base(base, 0)`, which computes
            exactly what the base computes): anything with `get_patch_tokens((B, C, H, W)) -> (B, h*w, C)` and
            `config.patch_size`. It is put in eval mode and its parameters stop requiring grad.
        num_views: K views per image, view 0 the identity (reference: 10).
        shift_frac: largest offset as a share of the grid side (reference: 0.15).
        fill_value: value of pixels shifted in from outside, in normalized space, one or one per channel.
            The reference fills with white: pass `normalized_fill_value(image_mean, image_std)`.
        flip_prob: probability that a view other than view 0 is mirrored (reference: 0.5).
        max_views_per_forward: cap on view images per forward pass, to bound memory (None: all B*K at once).
    """

    def __init__(
        self,
        model: nn.Module,
        num_views: int = DEFAULT_NUM_VIEWS,
        shift_frac: float = DEFAULT_SHIFT_FRAC,
        fill_value: float | Sequence[float] = 0.0,
        flip_prob: float = DEFAULT_FLIP_PROB,
        max_views_per_forward: int | None = None,
    ):
        super().__init__()
        _check_view_settings(num_views, shift_frac, flip_prob)
        if max_views_per_forward is not None and max_views_per_forward < 1:
            raise ValueError(f"max_views_per_forward must be >= 1 or None, got {max_views_per_forward!r}.")
        self.model = model.eval().requires_grad_(False)
        self.num_views = num_views
        self.shift_frac = shift_frac
        self.fill_value = tuple(fill_value) if isinstance(fill_value, Sequence) else (float(fill_value),)
        self.flip_prob = flip_prob
        self.max_views_per_forward = max_views_per_forward

    @property
    def patch_size(self) -> int:
        patch_size = self.model.config.patch_size
        return patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size

    def train(self, mode: bool = True) -> DenoisingTeacher:
        # The teacher is frozen: it stays in eval mode whatever its parent does.
        return super().train(False)

    def grid_size(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Patch grid `(h, w)` of `(B, C, H, W)` pixel values; ValueError naming valid sizes otherwise."""
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}.")
        height, width = pixel_values.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"Image size {height}x{width} is not a multiple of the patch size {p}; resize or crop to e.g. "
                f"{max(p, height // p * p)}x{max(p, width // p * p)}."
            )
        return height // p, width // p

    def sample_views(
        self,
        batch_size: int,
        grid_size: tuple[int, int],
        num_views: int | None = None,
        shift_frac: float | None = None,
        generator: torch.Generator | None = None,
        flip_prob: float | None = None,
    ) -> TeacherViews:
        """The module's `sample_views`, with this teacher's settings for every argument left as None."""
        return sample_views(
            batch_size,
            grid_size,
            self.num_views if num_views is None else num_views,
            self.shift_frac if shift_frac is None else shift_frac,
            generator,
            self.flip_prob if flip_prob is None else flip_prob,
        )

    @torch.no_grad()
    def forward(
        self,
        pixel_values: torch.Tensor,
        views: TeacherViews | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoised targets `(B, h*w, C)` (float32) of `(B, C, H, W)` pixel values.

        `views` fixes the views (e.g. those a cache recorded); otherwise they are drawn with `generator`.
        """
        return self.targets_and_views(pixel_values, views, generator)[0]

    @torch.no_grad()
    def targets_and_views(
        self,
        pixel_values: torch.Tensor,
        views: TeacherViews | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, TeacherViews]:
        """Like `forward`, and also returns the views used."""
        grid_size = self.grid_size(pixel_values)
        batch_size = pixel_values.shape[0]
        if views is None:
            views = self.sample_views(batch_size, grid_size, generator=generator)
        if views.offsets.shape[:2] != (batch_size, views.num_views):
            raise ValueError(f"views are for {views.offsets.shape[0]} images, the batch has {batch_size}.")
        rendered = render_views(pixel_values, views, self.patch_size, self.fill_value)
        chunk = self.max_views_per_forward or rendered.shape[0]
        tokens = torch.cat([self.model.get_patch_tokens(part) for part in rendered.split(chunk)])
        tokens = tokens.unflatten(0, (batch_size, views.num_views))  # (B, K, N, C)
        targets, _ = scatter_average(tokens, view_source_indices(views, grid_size))
        return targets, views


__all__ = [
    "DenoisingTeacher",
    "TeacherViews",
    "farthest_point_sampling",
    "normalized_fill_value",
    "render_views",
    "sample_views",
    "scatter_average",
    "stack_views",
    "view_source_indices",
]
