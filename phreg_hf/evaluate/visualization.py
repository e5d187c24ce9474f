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
"""`phreg visualize`: before/after pictures of a PH-Reg student, one PNG per image.

    phreg visualize --base facebook/dinov2-base --student ./dinov2-base-phreg --images ./heldout --out ./viz

Each PNG is a 2 x 3 grid of panels (`PANELS`, in reading order):

    input image            | base: patch-token norm    | student: patch-token norm
    base: PCA of features  | teacher: PCA of features  | student: PCA of features

- The two norm maps share one colour scale per image, in multiples of the base model's median patch norm (the
  colorbar on the right; the range is also in the figure title), so an artifact token that is bright in the base map and
  gone in the student map really lost norm. Maps whose norms vary by less than `MIN_RELATIVE_SPAN` (5 %) of the
  median are drawn on a 5 % wide range and marked "flat", so that rounding noise does not look like structure.
- The PCA panels show the first 3 principal components of the patch features as RGB. By default the PCA is fitted
  once per image on the *denoised teacher's* features (the clean reference) and base and student are projected
  onto the same components with the same colour scaling, so equal colours mean similar features across the three
  panels; base artifacts show up as off-colour spots. `--pca_fit_on all` fits on the three feature sets together
  instead. The figure states which one was used.

Drawing uses matplotlib's object-oriented API on the Agg canvas (no pyplot, no global backend change), so it works
headless and inside notebooks alike. matplotlib is an optional dependency: `pip install phreg-hf[viz]`.

`write_previews` writes the same figures into `OUTPUT_DIR/previews/` (`constants.PREVIEWS_DIR`), which `phreg
push` uploads with the model card.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from ..constants import MEASURE_VIEW_SEED, PREVIEWS_DIR
from ..teacher import DenoisingTeacher
from .artifacts import (
    PatchTokens,
    collect_patch_tokens,
    prepare_evaluation,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Panel names in reading order (row-major over the 2 x 3 grid); each image panel's axes carries its name as its
# label (`ax.get_label()`), so a figure can be checked panel by panel.
PANELS = ("input", "base_norm", "student_norm", "base_pca", "teacher_pca", "student_pca")
PCA_FIT_CHOICES = ("teacher", "all")
# Percentiles of the fitted projections mapped to 0 and 1 per colour channel (robust to a few extreme tokens).
PCA_COLOUR_PERCENTILES = (1.0, 99.0)
DEFAULT_PREVIEW_IMAGES = 4
FIGURE_SIZE = (10.5, 7.4)  # inches: 1050 x 740 px at the default 100 dpi
# Narrowest colour range of the norm maps, as a fraction of the base's median norm: maps whose norms differ by
# less are drawn flat (and say so) instead of stretching rounding noise over the whole colour range.
MIN_RELATIVE_SPAN = 0.05
MODEL_LABELS = {"base": "base (before)", "teacher": "denoised teacher", "student": "student (after)"}


def require_matplotlib():
    """Import matplotlib, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "phreg visualize draws with matplotlib, which is not installed: pip install 'phreg-hf[viz]' "
            "(or pip install matplotlib)."
        ) from error
    return matplotlib


# ----------------------------------------------------------------------------------------------------------------
# Arrays to show
def denormalize(
    pixel_values: torch.Tensor, image_mean: Sequence[float], image_std: Sequence[float]
) -> np.ndarray:
    """`(B, 3, H, W)` normalized images -> `(B, H, W, 3)` float RGB in [0, 1] (undoes `(x - mean) / std`)."""
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
    images = pixel_values.detach().float().cpu() * std + mean
    return images.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def token_norm_map(tokens: torch.Tensor, grid_size: tuple[int, int]) -> np.ndarray:
    """`(N, C)` patch tokens -> `(h, w)` map of their L2 norms."""
    return torch.linalg.vector_norm(tokens.float(), dim=-1).reshape(grid_size).numpy()


def pca_rgb(
    features: dict[str, torch.Tensor], fit_on: Sequence[str], grid_size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Project several feature sets of one image onto the same 3 principal components, as RGB maps.

    The PCA (mean and components) is fitted on the concatenation of `features[name]` for `name in fit_on`; every
    set is projected onto it and each component is mapped to [0, 1] with the same range for all sets (the
    1st..99th percentile of the fitted projections, clipped), so colours are comparable across sets. Component
    signs are fixed (largest loading positive) so reruns give the same colours.

    Args:
        features: name -> `(N, C)` patch tokens of one image, N = h * w.
        fit_on: names whose features the PCA is fitted on.
        grid_size: `(h, w)`.

    Returns:
        name -> `(h, w, 3)` float RGB in [0, 1].
    """
    fit = torch.cat([features[name].float() for name in fit_on])
    mean = fit.mean(dim=0)
    _, _, right = torch.linalg.svd(fit - mean, full_matrices=False)
    components = right[:3]  # (<=3, C)
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * torch.where(signs == 0, 1.0, signs)
    if components.shape[0] < 3:  # fewer than 3 channels or tokens: pad with zero components
        components = torch.cat(
            [components, components.new_zeros(3 - components.shape[0], components.shape[1])]
        )
    fitted = (fit - mean) @ components.T
    low = torch.quantile(fitted, PCA_COLOUR_PERCENTILES[0] / 100, dim=0)
    high = torch.quantile(fitted, PCA_COLOUR_PERCENTILES[1] / 100, dim=0)
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    result = {}
    for name, tokens in features.items():
        projected = ((tokens.float() - mean) @ components.T - low) / scale
        result[name] = projected.clamp(0.0, 1.0).reshape(*grid_size, 3).numpy()
    return result


# ----------------------------------------------------------------------------------------------------------------
# One figure
@dataclass
class NormScale:
    """The shared colour scale of the two norm maps of one image, relative to the base model's median norm.

    Attributes:
        median: the base model's median patch-token norm (the unit of the scale).
        low, high: the colour range, in multiples of `median`.
        spread: (largest - smallest norm) / median over both maps, before any widening.
        flat: the spread is under `MIN_RELATIVE_SPAN`, so the range was widened to that span around the norms:
            otherwise rounding-size differences would fill the whole colour range and look like structure.
    """

    median: float
    low: float
    high: float
    spread: float
    flat: bool

    def describe(self) -> str:
        if self.flat:
            return (
                f"flat, all within {self.spread * 100:.2g} % of the base median {self.median:.3g} (drawn on a "
                f"{MIN_RELATIVE_SPAN * 100:.0f} % range)"
            )
        return f"{self.low:.3g}..{self.high:.3g} x the base median norm {self.median:.3g}"


def norm_scale(norms: Sequence[np.ndarray], median: float) -> NormScale:
    """The shared, median-relative colour scale of norm maps (see `NormScale`)."""
    unit = median if median > 0 else 1.0
    low = float(min(norm.min() for norm in norms)) / unit
    high = float(max(norm.max() for norm in norms)) / unit
    spread = high - low
    flat = spread < MIN_RELATIVE_SPAN
    if flat:
        center = (low + high) / 2
        low, high = center - MIN_RELATIVE_SPAN / 2, center + MIN_RELATIVE_SPAN / 2
    return NormScale(median=unit, low=low, high=high, spread=spread, flat=flat)


def _draw_norm_panels(figure, axes, features: dict, grid_size: tuple[int, int], extent: tuple) -> NormScale:
    """Base and student norm maps on one colour scale (multiples of the base's median norm), one colorbar."""
    from matplotlib.ticker import ScalarFormatter

    norms = {name: token_norm_map(features[name], grid_size) for name in ("base", "student")}
    scale = norm_scale(list(norms.values()), float(np.median(norms["base"])))
    mappable = None
    for ax, (name, norm) in zip(axes, norms.items(), strict=True):
        mappable = ax.imshow(
            norm / scale.median,
            cmap="inferno",
            vmin=scale.low,
            vmax=scale.high,
            interpolation="nearest",
            extent=extent,
        )
        # The scale is one for both maps, so it is stated once (the figure title), not in two side-by-side titles
        # that would run into each other.
        ax.set_title(f"{MODEL_LABELS[name]}:\npatch-token norm" + (" (flat)" if scale.flat else ""))
    colorbar = figure.colorbar(
        mappable, ax=list(axes), shrink=0.9, label=f"token norm / base median norm ({scale.median:.4g})"
    )
    # Plain tick labels: an offset ("+8") would hide how small the differences are.
    colorbar.formatter = ScalarFormatter(useOffset=False)
    colorbar.update_ticks()
    return scale


def render_comparison(
    image: np.ndarray,
    base_tokens: torch.Tensor,
    teacher_tokens: torch.Tensor,
    student_tokens: torch.Tensor,
    grid_size: tuple[int, int],
    title: str = "",
    pca_fit_on: Literal["teacher", "all"] = "teacher",
) -> Figure:
    """The 2 x 3 comparison figure of one image (see the module docstring and `PANELS`).

    Args:
        image: `(H, W, 3)` float RGB in [0, 1], the crop the models saw.
        base_tokens, teacher_tokens, student_tokens: `(N, C)` patch tokens of that image, N = h * w.
        grid_size: `(h, w)` patches.
        title: figure title (e.g. the file name).
        pca_fit_on: "teacher" (fit on the denoised teacher's features) or "all" (on base + teacher + student).

    Returns:
        A matplotlib `Figure` on an Agg canvas; `figure.savefig(path)` writes it. The six image panels are the
        axes whose `get_label()` is in `PANELS`; the colorbar has its own axes.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if pca_fit_on not in PCA_FIT_CHOICES:
        raise ValueError(f"pca_fit_on must be one of {PCA_FIT_CHOICES}, got {pca_fit_on!r}.")
    features = {"base": base_tokens, "teacher": teacher_tokens, "student": student_tokens}
    figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3)
    for ax, name in zip(axes.flat, PANELS, strict=True):
        ax.set_label(name)
        ax.set_xticks([])
        ax.set_yticks([])
    height, width = image.shape[:2]
    extent = (0, width, height, 0)  # feature maps are drawn over the same pixel extent as the image
    axes[0, 0].imshow(image, extent=extent)
    axes[0, 0].set_title(f"input ({width}x{height} crop)")
    scale = _draw_norm_panels(figure, axes[0, 1:], features, grid_size, extent)
    fit_on = ["teacher"] if pca_fit_on == "teacher" else list(features)
    for ax, (name, rgb) in zip(axes[1], pca_rgb(features, fit_on, grid_size).items(), strict=True):
        ax.imshow(rgb, interpolation="nearest", extent=extent)
        ax.set_title(f"{MODEL_LABELS[name]}: PCA (RGB)")
    if pca_fit_on == "teacher":
        pca_note = (
            "PCA fitted on the denoised teacher's features of this image, base and student projected onto it"
        )
    else:
        pca_note = "PCA fitted on base + teacher + student features of this image together"
    figure.suptitle(
        (f"{title}\n" if title else "")
        + f"Norm maps share one colour scale: {scale.describe()}.\n{pca_note}\n"
        "(3 components as RGB with one colour scaling: the same colour means similar features)",
        fontsize=10,
    )
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write `figure` as PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def png_names(names: Sequence[str]) -> list[str]:
    """One distinct, filesystem-safe PNG file name per image name (e.g. 'cats/a.jpg' -> 'cats_a.png')."""
    taken: set[str] = set()
    result = []
    for index, name in enumerate(names):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(name).with_suffix("")).replace("/", "_")) or "image"
        candidate = f"{stem}.png"
        if candidate in taken:
            candidate = f"{stem}_{index}.png"
        taken.add(candidate)
        result.append(candidate)
    return result


def write_comparisons(
    out_dir: str | Path,
    names: Sequence[str],
    images: np.ndarray,
    tokens: PatchTokens,
    grid_size: tuple[int, int],
    pca_fit_on: Literal["teacher", "all"] = "teacher",
    dpi: int = 100,
) -> list[Path]:
    """One comparison PNG per image into `out_dir`; returns the paths, in image order.

    Args:
        out_dir: folder for the PNGs (created).
        names: one name per image (file names derive from it, see `png_names`; also the figure title).
        images: `(B, H, W, 3)` float RGB in [0, 1] (see `denormalize`).
        tokens: `PatchTokens` with three `(B, N, C)` tensors for the same images.
        grid_size: `(h, w)`, h * w = N.
        pca_fit_on, dpi: see `render_comparison`, `save_figure`.
    """
    if not len(names) == len(images) == len(tokens.base):
        raise ValueError(
            f"{len(names)} names, {len(images)} images and {len(tokens.base)} token sets; pass one of each per image."
        )
    paths = []
    for index, file_name in enumerate(png_names(names)):
        figure = render_comparison(
            images[index],
            tokens.base[index],
            tokens.teacher[index],
            tokens.student[index],
            grid_size,
            title=str(names[index]),
            pca_fit_on=pca_fit_on,
        )
        paths.append(save_figure(figure, Path(out_dir) / file_name, dpi=dpi))
    return paths


def write_previews(
    output_dir: str | Path,
    base_model: nn.Module,
    student: nn.Module,
    teacher: DenoisingTeacher,
    pixel_values: torch.Tensor,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
    max_images: int = DEFAULT_PREVIEW_IMAGES,
    view_seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    autocast: Callable | None = None,
    pca_fit_on: Literal["teacher", "all"] = "teacher",
) -> list[Path]:
    """Write comparison PNGs of the first `max_images` images into `output_dir/previews/` (for the model card).

    Args:
        output_dir: a training output dir (or any student folder); PNGs go to `output_dir/PREVIEWS_DIR`.
        base_model, student, teacher, indices, view_seed, batch_size, device, autocast: as for
            `evaluation.collect_patch_tokens`.
        pixel_values: `(n, 3, R, R)` normalized, center-cropped images (e.g. the held-out evaluation images).
        image_mean, image_std: the normalization of `pixel_values`, to show the input image.
        names: one name per image (default `image_000`, ...).
        max_images: how many previews to write.
        pca_fit_on: see `render_comparison`.

    Returns:
        The paths of the written PNGs.
    """
    require_matplotlib()
    count = min(max_images, len(pixel_values))
    pixel_values = pixel_values[:count]
    names = list(names)[:count] if names is not None else [f"image_{i:03d}" for i in range(count)]
    indices = list(indices)[:count] if indices is not None else None
    tokens = collect_patch_tokens(
        base_model,
        student,
        teacher,
        pixel_values,
        indices=indices,
        view_seed=view_seed,
        batch_size=batch_size,
        device=device,
        autocast=autocast,
    )
    return write_comparisons(
        Path(output_dir) / PREVIEWS_DIR,
        names,
        denormalize(pixel_values, image_mean, image_std),
        tokens,
        teacher.grid_size(pixel_values),
        pca_fit_on=pca_fit_on,
    )


# ----------------------------------------------------------------------------------------------------------------
# Command line
@dataclass
class VisualizeArguments:
    """Options of `phreg visualize` (`phreg visualize --help` lists them with defaults)."""

    base: str = field(
        metadata={"help": "Hub id or local folder of the stock base model the student was distilled from."}
    )
    student: str = field(metadata={"help": "Folder (or Hub id) of the PH-Reg student."})
    images: str = field(metadata={"help": "Folder of images; unreadable files are skipped and counted."})
    out: str = field(metadata={"help": "Folder the PNGs are written to (one per image, named after it)."})
    resolution: int | None = field(
        default=None,
        metadata={
            "help": "Side R of the center crop, a multiple of the patch size. Default: the image processor's crop "
            "size (the student's processor if it has one, else the base's), else the config's image_size."
        },
    )
    max_images: int = field(
        default=8,
        metadata={"help": "Draw at most this many readable images (files in sorted order); 0 for all."},
    )
    pca_fit_on: Literal["teacher", "all"] = field(
        default="teacher",
        metadata={
            "help": "Fit the per-image PCA on the denoised teacher's features ('teacher') or on base + teacher + "
            "student together ('all')."
        },
    )
    num_views: int = field(
        default=10, metadata={"help": "K views averaged by the denoised teacher (reference: 10)."}
    )
    seed: int = field(
        default=MEASURE_VIEW_SEED, metadata={"help": "Seed of the teacher's views (drawn per image)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass."})
    dpi: int = field(
        default=100, metadata={"help": "Resolution of the PNGs (a figure is 10.5 x 7.4 inches)."}
    )
    base_revision: str | None = field(default=None, metadata={"help": "Hub revision of --base."})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, ... (default: cuda if available)."}
    )

    def __post_init__(self) -> None:
        for name in ("num_views", "batch_size", "dpi"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_images < 0:
            raise ValueError(f"--max_images must be >= 0 (0: all images), got {self.max_images}.")


def visualize(args: VisualizeArguments) -> tuple[list[Path], int]:
    """`phreg visualize` without printing: returns the written PNG paths and the number of unreadable files."""
    require_matplotlib()  # before any model is loaded
    setup = prepare_evaluation(
        args.base,
        args.student,
        args.images,
        resolution=args.resolution,
        max_images=args.max_images,
        num_views=args.num_views,
        base_revision=args.base_revision,
        device=args.device,
    )
    loaded = setup.images
    tokens = collect_patch_tokens(
        setup.base_model,
        setup.student,
        setup.teacher,
        loaded.pixel_values,
        indices=loaded.indices,
        view_seed=args.seed,
        batch_size=args.batch_size,
        device=setup.device,
        progress=True,
    )
    paths = write_comparisons(
        args.out,
        loaded.names,
        denormalize(loaded.pixel_values, setup.image_mean, setup.image_std),
        tokens,
        setup.grid_size,
        pca_fit_on=args.pca_fit_on,
        dpi=args.dpi,
    )
    return paths, loaded.num_skipped


def visualize_main(argv: Sequence[str] | None = None) -> int:
    """`phreg visualize --base BASE --student STUDENT --images DIR --out OUT_DIR [options]`.

    Exit codes: 0 done, 2 bad input (message on stderr).
    """
    from ..arg_parsing import BAD_INPUT_ERRORS, run_cli

    code, args, result = run_cli(
        VisualizeArguments,
        argv,
        "phreg visualize",
        "Before/after PNGs of a PH-Reg student: patch-token norms and PCA of base, teacher and student.",
        visualize,
        bad_input=(*BAD_INPUT_ERRORS, ImportError),  # matplotlib missing: the message says how to install it
    )
    if code is not None:
        return code
    paths, num_skipped = result
    plural = "s" if num_skipped != 1 else ""
    skipped = f" ({num_skipped} unreadable image file{plural} skipped)" if num_skipped else ""
    print(f"Wrote {len(paths)} PNGs to {args.out}{skipped}")
    return 0


__all__ = [
    "PANELS",
    "VisualizeArguments",
    "denormalize",
    "pca_rgb",
    "render_comparison",
    "require_matplotlib",
    "save_figure",
    "token_norm_map",
    "visualize",
    "visualize_main",
    "write_comparisons",
    "write_previews",
]
