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
"""The denoised teacher of PH-Reg: average a frozen model's dense features over shifted and flipped views.

For each image, K views are drawn (docs/method.md, section 2): integer patch offsets (dy, dx) within
+-round(shift_frac * n), chosen by farthest point sampling among 10*K random draws, view 0 always the identity,
the others flipped horizontally with probability 1/2. Each view is rendered, run through the frozen model, and
every output patch token is scattered back to the original patch it shows; the average over the views that saw
a position is the distillation target. Shifting moves content but not position-locked noise, so the average
keeps the content and washes the noise out.

One mapping serves pixels and tokens alike (`view_source_indices`): a view first shifts the content by
(dy, dx) patches, so its patch (i, j) shows original patch (i - dy, j - dx); a flipped view then mirrors the
shifted image horizontally, so its patch (i, j) shows original patch (i - dy, w - 1 - j - dx), with the pixels
inside each patch mirrored too. This is exactly "shift the image by (dy*p, dx*p) pixels, then flip it".
Patches shifted in from outside the image show the fill value (-1 in the index map).

Choices where the reference code is silent or differs (docs/method.md lists them; each also noted where it
is made):
- Views are drawn per image, not once per batch, so a target depends only on its image and its own seed.
- Farthest point sampling starts from the origin (view 0 is the identity), so the other K-1 offsets are spread
  away from it and from each other. The reference starts from a random candidate and only then forces view 0
  to (0, 0), which can leave a near-duplicate of the identity among the views.
- A non-square h x w grid gets one shift bound per axis: round(shift_frac * h) rows, round(shift_frac * w)
  columns. `round` is Python's (half to even), as in the reference code.
- The sign convention of an offset (content moves by +offset) does not matter: offsets are drawn symmetrically.
- The fill value is given in normalized space and has no default: white (the reference) depends on the
  processor's mean/std, so callers pass `normalized_fill_value(image_mean, image_std)`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Reference settings (docs/method.md, section 2).
DEFAULT_NUM_VIEWS = 10
DEFAULT_SHIFT_FRAC = 0.15
DEFAULT_FLIP_PROB = 0.5
# Farthest point sampling picks K views among this many random draws per view.
CANDIDATES_PER_VIEW = 10


@dataclass
class TeacherViews:
    """The views drawn for a batch of B images, K views each.

    Attributes:
        offsets: `(B, K, 2)` long, the shift (dy, dx) of each view in patches; view patch (i, j) shows original
            patch (i - dy, j - dx) before any flip.
        flips: `(B, K)` bool, whether the (shifted) view is mirrored horizontally.
    """

    offsets: torch.Tensor
    flips: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.offsets.shape[0]

    @property
    def num_views(self) -> int:
        return self.offsets.shape[1]

    def __getitem__(self, index) -> TeacherViews:
        return TeacherViews(self.offsets[index], self.flips[index])

    def to(self, device: torch.device | str) -> TeacherViews:
        return TeacherViews(self.offsets.to(device), self.flips.to(device))


def stack_views(views: Sequence[TeacherViews]) -> TeacherViews:
    """Concatenate per-image (or per-chunk) views `(B_i, K, ...)` along the batch dimension."""
    return TeacherViews(torch.cat([v.offsets for v in views]), torch.cat([v.flips for v in views]))


def max_shifts(grid_size: tuple[int, int], shift_frac: float) -> tuple[int, int]:
    """Largest offset per axis in patches, `(round(shift_frac * h), round(shift_frac * w))`.

    The reference takes s = round(shift_frac * n) for square grids; a non-square grid gets one bound per axis, so a
    wide image may shift further sideways than up and down, by the same share of its extent.
    """
    height, width = _check_grid_size(grid_size)
    return round(shift_frac * height), round(shift_frac * width)


def farthest_point_sampling(candidates: torch.Tensor, num_points: int) -> torch.Tensor:
    """Pick `num_points` points per row greedily, each the farthest (Euclidean) from those already picked.

    The first pick is the origin (0, 0), whether or not it is among the candidates: view 0 is the identity, and
    starting from it spreads the other views away from it. Ties go to the earliest candidate. Vectorized over
    the batch; the loop runs over the picks only.

    Args:
        candidates: `(B, M, 2)` candidate offsets, M >= 1.
        num_points: K, including the origin.

    Returns:
        `(B, K, 2)` in the dtype of `candidates`; row b starts with (0, 0).
    """
    if candidates.ndim != 3 or candidates.shape[-1] != 2 or candidates.shape[1] < 1:
        raise ValueError(f"candidates must be (B, M >= 1, 2), got shape {tuple(candidates.shape)}.")
    batch_size = candidates.shape[0]
    points = candidates.float()
    chosen = [torch.zeros(batch_size, 2, dtype=candidates.dtype, device=candidates.device)]
    min_distance = points.norm(dim=-1)  # (B, M): distance to the nearest pick so far, the origin
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

    Per image, 10*K offsets are drawn uniformly from `[-s_y, s_y] x [-s_x, s_x]` (see `max_shifts`), and K are
    kept by farthest point sampling starting from (0, 0). View 0 is always offset (0, 0) and unflipped; each
    other view is flipped with probability `flip_prob`. Everything is drawn on the CPU from `generator`, so the
    same seed gives the same views whatever device the images are on.

    Args:
        batch_size: number of images B.
        grid_size: patch grid `(h, w)`.
        num_views: K, including the identity view 0 (reference: 10).
        shift_frac: largest offset as a share of the grid side (reference: 0.15).
        generator: CPU generator for reproducible views (None: torch's global generator).
        flip_prob: probability that a view other than view 0 is mirrored horizontally (reference: 0.5).

    Returns:
        `TeacherViews` with offsets `(B, K, 2)` long and flips `(B, K)` bool, on the CPU.
    """
    _check_view_settings(num_views, shift_frac, flip_prob)
    if not isinstance(batch_size, numbers.Integral) or batch_size < 0:
        raise ValueError(f"batch_size must be an integer >= 0, got {batch_size!r}.")
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

    View patch (i, j) shows original patch (i - dy, j' - dx) with j' = w - 1 - j if the view is flipped, else j.

    Args:
        views: offsets `(B, K, 2)`, flips `(B, K)`.
        grid_size: patch grid `(h, w)`.

    Returns:
        `(B, K, h*w)` long on the device of `views`, row-major over the view's patch grid.
    """
    _check_views(views)
    height, width = _check_grid_size(grid_size)
    device = views.offsets.device
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    dy = views.offsets[..., 0, None, None].long()
    dx = views.offsets[..., 1, None, None].long()
    source_cols = torch.where(views.flips[..., None, None].to(device), width - 1 - cols, cols) - dx
    source_rows = rows - dy
    valid = (source_rows >= 0) & (source_rows < height) & (source_cols >= 0) & (source_cols < width)
    indices = torch.where(valid, source_rows * width + source_cols, -1)
    return indices.flatten(2)


def normalized_fill_value(
    image_mean: Sequence[float], image_std: Sequence[float], raw_value: float = 1.0
) -> tuple[float, ...]:
    """The fill of pixels shifted in from outside, per channel, in normalized space: `(raw - mean) / std`.

    The reference fills with white, `raw_value=1.0` on the [0, 1] scale, before normalizing.
    """
    return tuple((raw_value - mean) / std for mean, std in zip(image_mean, image_std, strict=True))


def render_views(
    pixel_values: torch.Tensor, views: TeacherViews, patch_size: int, fill_value: float | Sequence[float]
) -> torch.Tensor:
    """Render the shifted / flipped views of a batch, without a Python loop over images, views or pixels.

    Patchify, then build one lookup table per image: its N patches, a fill patch, the N patches mirrored and
    the fill again. Each view patch is one row of that table (its source patch from `view_source_indices`, the
    fill where the index is -1, the mirrored half for a flipped view), so a single `index_select` renders every
    view, followed by one unpatchify copy. The result equals shifting each image by (dy*p, dx*p) pixels (filling
    what comes in from outside) and then flipping it horizontally.

    Args:
        pixel_values: `(B, C, H, W)` normalized images, H and W multiples of `patch_size`.
        views: offsets `(B, K, 2)`, flips `(B, K)`.
        patch_size: p.
        fill_value: one value, or one per channel, in normalized space (see `normalized_fill_value`).

    Returns:
        `(B * K, C, H, W)` view images, image-major (all K views of image 0 first), dtype of `pixel_values`.
    """
    grid_h, grid_w = _check_pixel_values(pixel_values, patch_size)
    batch_size, channels, height, width = pixel_values.shape
    _check_views(views, batch_size)
    num_views, num_patches, p = views.num_views, grid_h * grid_w, patch_size
    fill = _fill_tensor(fill_value, channels, pixel_values)  # (C,)
    # (B, N, C, p, p): one entry per patch, row-major.
    patches = pixel_values.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
    patches = patches.reshape(batch_size, num_patches, channels, p, p)
    fill_patch = fill.view(1, 1, channels, 1, 1).expand(batch_size, 1, channels, p, p)
    # (B, 2 (N + 1), C, p, p): [patches, fill, mirrored patches, fill].
    table = torch.cat([patches, fill_patch, patches.flip(-1), fill_patch], dim=1)
    rows_per_image = 2 * (num_patches + 1)
    device = pixel_values.device
    indices = view_source_indices(views, (grid_h, grid_w)).to(device)  # (B, K, N)
    rows = torch.where(indices >= 0, indices, num_patches)
    rows = rows + views.flips.to(device)[..., None].long() * (num_patches + 1)
    rows = rows + torch.arange(batch_size, device=device)[:, None, None] * rows_per_image
    gathered = table.reshape(batch_size * rows_per_image, channels, p, p).index_select(0, rows.flatten())
    rendered = gathered.view(batch_size, num_views, grid_h, grid_w, channels, p, p)
    return rendered.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch_size * num_views, channels, height, width)


def scatter_average(
    view_tokens: torch.Tensor, source_indices: torch.Tensor, num_positions: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter every valid view token back to its original patch and average over the views that saw it.

    Pure tensor ops (`scatter_add_`), accumulated in float32 whatever the tokens' dtype (bf16 under autocast).

    Args:
        view_tokens: `(B, K, N, C)` tokens of the views.
        source_indices: `(B, K, N)` original patch of each view token (`view_source_indices`), -1 for fill;
            fill tokens are ignored, even if they are not finite.
        num_positions: P, the number of original positions (default N).

    Returns:
        `(averaged, counts)`: `(B, P, C)` float32 and `(B, P)` float32, the number of views that saw each
        position. A position no view saw (impossible with an identity view 0) is 0 with count 0, not NaN.
    """
    if view_tokens.ndim != 4 or source_indices.shape != view_tokens.shape[:3]:
        raise ValueError(
            f"view_tokens must be (B, K, N, C) and source_indices (B, K, N); got shapes "
            f"{tuple(view_tokens.shape)} and {tuple(source_indices.shape)}."
        )
    batch_size, num_views, num_tokens, channels = view_tokens.shape
    num_positions = num_tokens if num_positions is None else num_positions
    tokens = view_tokens.float().reshape(batch_size, num_views * num_tokens, channels)
    # Checked where the indices are made (on the CPU, as the trainer's views are): on an accelerator the check
    # would be a host sync per step; there scatter_add_ checks its bounds itself (a device-side assert).
    if source_indices.device.type == "cpu" and source_indices.numel():
        highest = int(source_indices.numpy().max())  # host memory: numpy reads it without a torch round trip
        if highest >= num_positions:
            raise ValueError(f"source_indices go up to {highest}, beyond {num_positions} positions.")
    indices = source_indices.to(view_tokens.device).long().reshape(batch_size, num_views * num_tokens)
    valid = indices >= 0
    safe_indices = indices.clamp(min=0)
    # where, not multiply: a masked-out fill token must not turn the sum into NaN (0 * inf).
    tokens = torch.where(valid[..., None], tokens, 0.0)
    sums = tokens.new_zeros(batch_size, num_positions, channels)
    sums.scatter_add_(1, safe_indices[..., None].expand(-1, -1, channels), tokens)
    counts = tokens.new_zeros(batch_size, num_positions).scatter_add_(1, safe_indices, valid.float())
    return sums / counts.clamp(min=1)[..., None], counts


class DenoisingTeacher(nn.Module):
    """PH-Reg's teacher: a frozen model's final-normed patch tokens, averaged over shifted and flipped views.

    Args:
        model: the frozen base model as a PH-Reg model (usually `student_from_base(base, 0)`, which computes
            exactly what the base computes): anything with `get_patch_tokens((B, C, H, W)) -> (B, h*w, C)` and
            `config.patch_size`. It is put in eval mode and its parameters stop requiring grad (in place).
        fill_value: value of pixels shifted in from outside, in normalized space, one or one per channel.
            Required: the reference fills with white, which in normalized space depends on the processor's
            mean/std, so pass `normalized_fill_value(processor.image_mean, processor.image_std)`.
        num_views: K views per image, view 0 the identity (reference: 10).
        shift_frac: largest offset as a share of the grid side (reference: 0.15).
        flip_prob: probability that a view other than view 0 is mirrored (reference: 0.5).
        max_views_per_forward: cap on view images per forward pass of the model, to bound memory (None: all
            B*K views in one pass). It changes nothing but memory and speed.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fill_value: float | Sequence[float] | torch.Tensor,
        num_views: int = DEFAULT_NUM_VIEWS,
        shift_frac: float = DEFAULT_SHIFT_FRAC,
        flip_prob: float = DEFAULT_FLIP_PROB,
        max_views_per_forward: int | None = None,
    ):
        super().__init__()
        _check_view_settings(num_views, shift_frac, flip_prob)
        if max_views_per_forward is not None and (
            not isinstance(max_views_per_forward, numbers.Integral) or max_views_per_forward < 1
        ):
            raise ValueError(
                f"max_views_per_forward must be an integer >= 1 or None (all views at once), "
                f"got {max_views_per_forward!r}."
            )
        if not callable(getattr(model, "get_patch_tokens", None)):
            raise ValueError(
                f"{type(model).__name__} has no get_patch_tokens(); wrap the base model first, e.g. "
                "student_from_base(base_model, 0)."
            )
        self.model = model.eval().requires_grad_(False)
        self.num_views = int(num_views)
        self.shift_frac = float(shift_frac)
        self.fill_value = _fill_tuple(fill_value)
        self.flip_prob = float(flip_prob)
        self.max_views_per_forward = max_views_per_forward

    @property
    def patch_size(self) -> int:
        patch_size = self.model.config.patch_size
        return patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size

    def train(self, mode: bool = True) -> DenoisingTeacher:
        # The teacher is frozen: it stays in eval mode whatever its parent does.
        return super().train(False)

    def extra_repr(self) -> str:
        return (
            f"num_views={self.num_views}, shift_frac={self.shift_frac}, flip_prob={self.flip_prob}, "
            f"fill_value={self.fill_value}, max_views_per_forward={self.max_views_per_forward}"
        )

    def grid_size(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Patch grid `(h, w)` of `(B, C, H, W)` pixel values; ValueError naming sizes that work otherwise."""
        return _check_pixel_values(pixel_values, self.patch_size)

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
        """Denoised targets of a batch.

        Args:
            pixel_values: `(B, C, H, W)` normalized images, H and W multiples of the patch size.
            views: offsets `(B, K, 2)`, flips `(B, K)` to use (e.g. those a cache recorded; any K); None draws
                this teacher's K views with `generator`.
            generator: CPU generator for the views when `views` is None.

        Returns:
            `(B, h*w, C)` float32 targets, row-major over the patch grid.
        """
        return self.targets_and_views(pixel_values, views, generator)[0]

    @torch.no_grad()
    def targets_and_views(
        self,
        pixel_values: torch.Tensor,
        views: TeacherViews | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, TeacherViews]:
        """Like `forward`, and also returns the views used (`(B, K, 2)` offsets, `(B, K)` flips), for a cache."""
        grid_size = self.grid_size(pixel_values)
        batch_size = pixel_values.shape[0]
        if views is None:
            views = self.sample_views(batch_size, grid_size, generator=generator)
        _check_views(views, batch_size)
        rendered = render_views(pixel_values, views, self.patch_size, self.fill_value)  # (B*K, C, H, W)
        chunk = self.max_views_per_forward or max(rendered.shape[0], 1)
        tokens = torch.cat([self.model.get_patch_tokens(part) for part in rendered.split(chunk)])
        tokens = tokens.unflatten(0, (batch_size, views.num_views))  # (B, K, N, C)
        targets, _ = scatter_average(tokens, view_source_indices(views, grid_size))
        return targets, views


# ----------------------------------------------------------------------------------------------------------------
# Validation


def _check_view_settings(num_views: int, shift_frac: float, flip_prob: float) -> None:
    if isinstance(num_views, bool) or not isinstance(num_views, numbers.Integral) or num_views < 1:
        raise ValueError(f"num_views must be an integer >= 1 (reference: 10), got {num_views!r}.")
    if not isinstance(shift_frac, numbers.Real) or not 0 <= shift_frac < 1:
        raise ValueError(f"shift_frac must be in [0, 1) (reference: 0.15), got {shift_frac!r}.")
    if not isinstance(flip_prob, numbers.Real) or not 0 <= flip_prob <= 1:
        raise ValueError(f"flip_prob must be in [0, 1] (reference: 0.5), got {flip_prob!r}.")


def _check_grid_size(grid_size: tuple[int, int]) -> tuple[int, int]:
    if (
        len(grid_size) != 2
        or not all(isinstance(side, numbers.Integral) for side in grid_size)
        or min(grid_size) < 1
    ):
        raise ValueError(f"grid_size must be (h, w), two integers >= 1, got {grid_size!r}.")
    return int(grid_size[0]), int(grid_size[1])


def _check_pixel_values(pixel_values: torch.Tensor, patch_size: int) -> tuple[int, int]:
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}; "
            "add a batch dimension with pixel_values[None] for one image."
        )
    height, width = pixel_values.shape[-2:]
    if height % patch_size or width % patch_size or height < patch_size or width < patch_size:
        nearest_height = max(patch_size, round(height / patch_size) * patch_size)
        nearest_width = max(patch_size, round(width / patch_size) * patch_size)
        raise ValueError(
            f"Image size {height}x{width} is not a multiple of the patch size {patch_size}; resize or crop to "
            f"a multiple, e.g. {nearest_height}x{nearest_width}."
        )
    return height // patch_size, width // patch_size


def _check_views(views: TeacherViews, batch_size: int | None = None) -> None:
    offsets, flips = views.offsets, views.flips
    if offsets.ndim != 3 or offsets.shape[-1] != 2 or flips.shape != offsets.shape[:2]:
        raise ValueError(
            f"views must have offsets (B, K, 2) and flips (B, K), got {tuple(offsets.shape)} and "
            f"{tuple(flips.shape)}; use sample_views() (and stack_views() to join per-image views)."
        )
    if offsets.shape[1] < 1:
        raise ValueError("views must hold at least one view per image (K >= 1).")
    if offsets.is_floating_point() or flips.dtype != torch.bool:
        raise ValueError(
            f"views must have integer offsets and bool flips, got {offsets.dtype} and {flips.dtype}."
        )
    if batch_size is not None and offsets.shape[0] != batch_size:
        raise ValueError(
            f"views are for {offsets.shape[0]} images but the batch has {batch_size}; draw one set of views "
            "per image (sample_views(batch_size, ...))."
        )


def _fill_tuple(fill_value: float | Sequence[float] | torch.Tensor) -> tuple[float, ...]:
    # Plain numbers stay numbers (the teacher's fill, every step: no tensor to read back).
    if isinstance(fill_value, torch.Tensor):
        values = tuple(torch.as_tensor(fill_value, dtype=torch.float64).flatten().tolist())
    else:
        values = tuple(float(v) for v in np.asarray(fill_value, dtype=np.float64).ravel())
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"fill_value must be one finite number or one per channel, got {fill_value!r}; "
            "use normalized_fill_value(image_mean, image_std) for the reference's white."
        )
    return values


def _fill_tensor(
    fill_value: float | Sequence[float] | torch.Tensor, channels: int, like: torch.Tensor
) -> torch.Tensor:
    """`(C,)` fill in the dtype and on the device of `like`."""
    values = _fill_tuple(fill_value)
    if len(values) not in (1, channels):
        raise ValueError(
            f"fill_value has {len(values)} values but the images have {channels} channels; give one value or "
            f"one per channel."
        )
    return torch.tensor(values, dtype=like.dtype, device=like.device).expand(channels)


__all__ = [
    "DenoisingTeacher",
    "TeacherViews",
    "farthest_point_sampling",
    "max_shifts",
    "normalized_fill_value",
    "render_views",
    "sample_views",
    "scatter_average",
    "stack_views",
    "view_source_indices",
]
