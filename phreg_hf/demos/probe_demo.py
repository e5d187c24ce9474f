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
"""Offline demonstration that planted artifacts hurt a dense task and PH-Reg recovers it.

No labelled dense dataset and no pretrained weights can be downloaded here, so both are synthetic, and said so:

- the labelled set (`write_shapes_dataset`): crops of scikit-image's natural sample photos, each with a few
  procedurally drawn ellipses, rectangles and triangles; the mask says which of `NUM_SHAPE_CLASSES` tints a
  pixel got (0 = untouched photo). The tints are blended over the photo (its texture shows through), so the
  answer at every pixel lies in the pixel's own patch: a linear probe on any feature that keeps local
  content can read it, and what it cannot read at a fixed grid position is what an artifact erased there.
- the backbone (`build_probe_demo_model`): the distill demo's random-init DINOv2 (`synthetic.py`, not
  pretrained) with a stronger dose of position-locked artifacts (`PROBE_DEMO_ARTIFACTS`): one vector on 16
  channels, 150x the typical position-embedding norm (about 6x a patch embedding's), at 12 of the 64 grid
  positions. Why this dose: a linear head can project out a single fixed offset direction, so the distill
  demo's own dose (3 positions, 30x, 4 channels), plain to the label-free measures, costs the probe nothing
  measurable; at 150x the content of those patches is squeezed by every LayerNorm and the probe loses 4-6
  mIoU (README, "Offline demonstration"). Real ViTs' artifacts replace local content with global information,
  which no linear head can undo; this is the synthetic stand-in for that loss.

`run_probe_demo` distills a student from it with `examples/distill.py`'s demo settings (no labels), then probes
the clean model (same weights, nothing planted), the planted one, its denoised teacher, the student and the
training-free baseline, test-time registers (`demo_test_time_registers`), with the same head initialisation, crops
and seed (`probe.LinearProbe`).

The test-time-registers search (`evaluate.test_time_registers.find_register_neurons`) keeps the published
`detect_outliers_layer=-1` and `top_k=10`, but not its absolute norm threshold: the published 30 (OpenCLIP-B) and
150 (DINOv2-L) are set against those models' own norms, and in this 64-wide model no patch comes near 30 (the
planted ones are about 23-25 at the last block, ordinary ones under 10, median about 4). The demo's threshold is
`TTR_NORM_TO_MEDIAN` (4) times the median patch norm at that block over the search images, which falls between the
two groups (every image's 12 planted patches, and no other patch, are outliers). The search runs on the probe's
training images only (never on the scored ones), so `min_images` is their number (48 with the defaults), not the
published 100: the demo has no more images.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import PreTrainedModel

from ..evaluate.metrics_table import TEST_TIME_REGISTERS_ROW
from ..evaluate.test_time_registers import DEFAULT_DETECT_OUTLIERS_LAYER, DEFAULT_TOP_K

# What the probe demo plants in the distill demo's model (`synthetic.build_planted_artifact_model` arguments, plus
# how many grid positions, drawn with `position_seed`). See the module docstring for why this dose.
PROBE_DEMO_ARTIFACTS = dict(
    num_positions=12, artifact_scale=150.0, artifact_channels=16, norm_weight_boost=4.0, position_seed=123
)
# Changes to examples/distill.py's demo settings for the probe demo (DistillArguments fields): none.
PROBE_DEMO_DISTILL: dict = {}
SYNTHETIC_DESCRIPTION = "synthetic planted-artifact dinov2 (random init, not pretrained)"
# Test-time registers (see the module docstring): the outlier threshold is this multiple of the median patch norm at
# block `detect_outliers_layer`; the other search settings are the published defaults (`find_register_neurons`).
TTR_NORM_TO_MEDIAN = 4.0
TTR_DETECT_OUTLIERS_LAYER = DEFAULT_DETECT_OUTLIERS_LAYER
TTR_TOP_K = DEFAULT_TOP_K
DEMO_ROWS = ("clean", "base", "teacher", "student", TEST_TIME_REGISTERS_ROW)

NUM_SHAPE_CLASSES = 3
# Tints of classes 1..3 (class 0 is the untouched photo).
SHAPE_TINTS = ((230, 40, 40), (40, 200, 70), (50, 90, 235))
TINT_OPACITY = 0.7


def draw_shapes_example(
    photo: Image.Image, size: int, generator: np.random.Generator
) -> tuple[Image.Image, np.ndarray]:
    """One labelled example: a random square crop of `photo` resized to `size`, with 3-6 tinted shapes.

    Returns the RGB image and its `(size, size)` uint8 mask (0 photo, 1..NUM_SHAPE_CLASSES the tint drawn last
    at that pixel).
    """
    width, height = photo.size
    side = int(generator.integers(min(width, height) // 2, min(width, height) + 1))
    left = int(generator.integers(0, width - side + 1))
    top = int(generator.integers(0, height - side + 1))
    image = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    mask = Image.new("L", (size, size), 0)
    tint = Image.new("RGB", (size, size), (0, 0, 0))
    mask_draw, tint_draw = ImageDraw.Draw(mask), ImageDraw.Draw(tint)
    for _ in range(int(generator.integers(3, 7))):
        label = int(generator.integers(1, NUM_SHAPE_CLASSES + 1))
        kind = int(generator.integers(0, 3))
        extent = generator.integers(size // 6, size // 2, size=2)
        x0, y0 = generator.integers(-size // 8, size - size // 8, size=2)
        box = [int(x0), int(y0), int(x0 + extent[0]), int(y0 + extent[1])]
        if kind == 0:
            shape = ("ellipse", box)
        elif kind == 1:
            shape = ("rectangle", box)
        else:
            shape = ("polygon", [(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])])
        getattr(mask_draw, shape[0])(shape[1], fill=label)
        getattr(tint_draw, shape[0])(shape[1], fill=SHAPE_TINTS[label - 1])
    mask_array = np.asarray(mask)
    pixels = np.asarray(image, dtype=np.float32)
    tinted = (1 - TINT_OPACITY) * pixels + TINT_OPACITY * np.asarray(tint, dtype=np.float32)
    pixels = np.where(mask_array[..., None] > 0, tinted, pixels)
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8)), mask_array


def write_shapes_dataset(
    folder: str | Path, num_images: int = 48, size: int = 112, seed: int = 0
) -> tuple[Path, Path]:
    """Write `num_images` examples as `folder/images/NNN.png` and `folder/masks/NNN.png` (class indices).

    The photos are scikit-image's samples, used in turn; every draw comes from `seed`. Returns the two folders.
    """
    from ..data import decode_image, sample_image_paths

    folder = Path(folder)
    images_dir, masks_dir = folder / "images", folder / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    photos = [decode_image(path) for path in sample_image_paths()]
    generator = np.random.default_rng(seed)
    for index in range(num_images):
        image, mask = draw_shapes_example(photos[index % len(photos)], size, generator)
        image.save(images_dir / f"{index:03d}.png")
        Image.fromarray(mask, mode="L").save(masks_dir / f"{index:03d}.png")
    return images_dir, masks_dir


def build_probe_demo_model(artifact_scale: float | None = None) -> PreTrainedModel:
    """The probe demo's backbone: the distill demo's random-init DINOv2 (`trainer.DEMO_TEACHER_KWARGS`, same seed)
    with `PROBE_DEMO_ARTIFACTS` planted. `artifact_scale=0` gives the same weights with nothing planted (the
    "clean" row)."""
    from ..distill.demo import DEMO_TEACHER_KWARGS
    from ..synthetic import build_planted_artifact_model

    settings = dict(PROBE_DEMO_ARTIFACTS)
    grid = DEMO_TEACHER_KWARGS["image_size"] // DEMO_TEACHER_KWARGS["patch_size"]
    generator = torch.Generator().manual_seed(settings.pop("position_seed"))
    flat = torch.randperm(grid * grid, generator=generator)[: settings.pop("num_positions")].tolist()
    if artifact_scale is not None:
        settings["artifact_scale"] = artifact_scale
    positions = [divmod(index, grid) for index in sorted(flat)]
    return build_planted_artifact_model(**DEMO_TEACHER_KWARGS, artifact_positions=positions, **settings)


def distill_demo_student(
    output_dir: str | Path,
    base_model: PreTrainedModel,
    max_steps: int = 400,
    seed: int = 0,
    **overrides,
) -> tuple[PreTrainedModel, float]:
    """Distill `base_model` with `examples/distill.py`'s demo settings (its `DEMO_ARGUMENTS`: sample photos,
    cached targets, all four parts trained) changed by `overrides`; returns (student, seconds)."""
    from ..distill.trainer import DistillArguments, DistillTrainer

    output_dir = Path(output_dir)
    settings = dict(
        output_dir=str(output_dir),
        overwrite_output_dir=True,
        learning_rate=3e-3,
        final_learning_rate=3e-4,
        max_steps=max_steps,
        per_device_train_batch_size=8,
        teacher_cache=str(output_dir / "teacher_cache"),
        checkpointing_steps=0,
        logging_steps=max(max_steps, 1),
        report_to="none",
        num_eval_images=8,
        num_preview_images=0,
        seed=seed,
    )
    settings.update(overrides)
    start = time.perf_counter()
    trainer = DistillTrainer(DistillArguments(**settings), base_model=base_model)
    trainer.train()
    student = trainer.accelerator.unwrap_model(trainer.student).eval()
    return student, time.perf_counter() - start


@torch.no_grad()
def demo_test_time_registers(pixel_values: torch.Tensor, batch_size: int = 16) -> PreTrainedModel:
    """Test-time registers on the planted model (`build_probe_demo_model()`), its register neurons found on
    `pixel_values` (`(N, 3, H, W)` normalized images, all of them required: `min_images=N`) with the outlier
    threshold `TTR_NORM_TO_MEDIAN` x their median patch norm at block `TTR_DETECT_OUTLIERS_LAYER` (module
    docstring). The search settings, the median and the rule are recorded in `config.search_settings`."""
    from ..evaluate.test_time_registers import find_register_neurons
    from ..models.modeling_phreg_ttr import PhregTestTimeRegistersModel, num_prefix_tokens

    base = build_probe_demo_model()
    layer = TTR_DETECT_OUTLIERS_LAYER % base.config.num_hidden_layers
    batches = pixel_values.split(batch_size)
    start = num_prefix_tokens(base)
    norms = torch.cat(
        [
            base(pixel_values=b, output_hidden_states=True).hidden_states[layer + 1][:, start:].norm(dim=-1)
            for b in batches
        ]
    )  # hidden_states[0] is the embeddings' output, [i + 1] block i's
    median = float(norms.median())
    neurons, settings = find_register_neurons(
        base,
        batches,
        norm_threshold=TTR_NORM_TO_MEDIAN * median,
        detect_outliers_layer=TTR_DETECT_OUTLIERS_LAYER,
        top_k=TTR_TOP_K,
        min_images=len(pixel_values),
    )
    settings["norm_threshold_rule"] = (
        f"{TTR_NORM_TO_MEDIAN:g} x the median patch norm ({median:.3f}) at block {TTR_DETECT_OUTLIERS_LAYER} over "
        f"the {len(pixel_values)} search images"
    )
    return PhregTestTimeRegistersModel.from_base(base, neurons, search_settings=settings).eval()


def _source_pixels(source, image_mean, image_std) -> torch.Tensor:
    """`(N, 3, H, W)` normalized pixels of a probe `LabelledSource`'s images (all of one size, as the demo's)."""
    from ..evaluate.probe_data import decode_rgb, normalize, to_tensor

    return torch.stack(
        [
            normalize(to_tensor(decode_rgb(image, name)), image_mean, image_std)
            for image, name in zip(source.images, source.names, strict=True)
        ]
    )


def demo_probe_arguments(images: Path, masks: Path, seed: int = 0, max_steps: int = 1500, **overrides):
    """`ProbeArguments` of the demo: the paper's head, optimiser and poly decay at the tiny model's native
    112 px (crop = image = one window), no augmentation (so features are cached), `max_steps` steps."""
    from ..evaluate.probe import ProbeArguments

    settings = dict(
        task="segmentation",
        images=str(images),
        masks=str(masks),
        train_val_split=1 / 3,
        crop_size=112,
        min_scale=1.0,
        max_scale=1.0,
        hflip=False,
        photometric=False,
        max_steps=max_steps,
        num_views=10,
        seed=seed,
        mixed_precision="no",
    )
    settings.update(overrides)
    return ProbeArguments(**settings)


def run_probe_demo(
    work_dir: str | Path | None = None,
    num_images: int = 72,
    distill_steps: int = 400,
    probe_steps: int = 1500,
    seed: int = 0,
    rows: tuple[str, ...] = DEMO_ROWS,
    progress: bool = False,
) -> dict:
    """Distill the demo student, then probe the models named in `rows` on the synthetic shapes set (2/3 train,
    1/3 scored): "clean" (the same random weights, nothing planted), "base" (the planted-artifact model),
    "teacher" (its denoised teacher, K = 10 views), "student" and "test_time_registers" (the planted model with
    test-time registers, its neurons found on the training images: `demo_test_time_registers`). `seed` draws the
    shapes, the distillation and the probe. Returns the probe report (`probe.build_report`) with
    "distill_runtime_s", "runtime_s" and, with the test-time-registers row, "test_time_registers_search" (the
    register neurons and search settings)."""
    from ..data import IMAGENET_MEAN, IMAGENET_STD
    from ..evaluate.probe import LinearProbe, build_report, prepare_data
    from ..models.modeling_phreg import student_from_base
    from ..teacher import DenoisingTeacher, normalized_fill_value

    unknown = [row for row in rows if row not in DEMO_ROWS]
    if unknown:
        raise ValueError(f"run_probe_demo rows {unknown} are not among {list(DEMO_ROWS)}.")
    start = time.perf_counter()
    owned = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="phreg-probe-demo-") if owned else work_dir)
    try:
        images, masks = write_shapes_dataset(work_dir / "shapes", num_images, seed=seed)
        models = {}
        if "clean" in rows:
            models["clean"] = student_from_base(build_probe_demo_model(artifact_scale=0.0), 0).float()
        base = student_from_base(build_probe_demo_model(), 0).float()
        if "base" in rows:
            models["base"] = base
        if "teacher" in rows:
            fill = normalized_fill_value(IMAGENET_MEAN, IMAGENET_STD)
            models["teacher"] = DenoisingTeacher(base, fill_value=fill, num_views=10)
        distill_seconds = 0.0
        if "student" in rows:
            models["student"], distill_seconds = distill_demo_student(
                work_dir / "student", build_probe_demo_model(), distill_steps, seed, **PROBE_DEMO_DISTILL
            )
        args = demo_probe_arguments(images, masks, seed, probe_steps)
        data = prepare_data(args, IMAGENET_MEAN, IMAGENET_STD, progress=progress)
        data.train.description = f"synthetic shapes on scikit-image photos (seed {seed})"
        data.eval.description = f"{len(data.eval)} held-out synthetic shapes images"
        extra = {}
        if TEST_TIME_REGISTERS_ROW in rows:
            ttr = demo_test_time_registers(_source_pixels(data.train, IMAGENET_MEAN, IMAGENET_STD))
            models[TEST_TIME_REGISTERS_ROW] = ttr
            extra["test_time_registers_search"] = dict(
                register_neurons={str(k): v for k, v in ttr.config.layer_neurons().items()},
                **ttr.config.search_settings,
            )
        runner = LinearProbe(args, data, base.patch_size)
        runner.show_progress = progress
        report_rows = runner.run(models)
        return build_report(
            args,
            runner,
            report_rows,
            base_model=SYNTHETIC_DESCRIPTION,
            student=f"PH-Reg student, {distill_steps} steps with examples/distill.py's demo settings"
            + (f" changed by {PROBE_DEMO_DISTILL}" if PROBE_DEMO_DISTILL else ""),
            distill_runtime_s=round(distill_seconds, 2),
            runtime_s=round(time.perf_counter() - start, 2),
            **extra,
        )
    finally:
        if owned:
            shutil.rmtree(work_dir, ignore_errors=True)


def summarize_seeds(reports: dict[int, dict]) -> dict[str, dict]:
    """Per row of the probe reports of several seeds (`{seed: report}`): mIoU and mIoU - base per seed, and their
    mean and sample standard deviation over the seeds (`statistics.stdev`; 0.0 for one seed), all in %."""
    import statistics

    names = list(dict.fromkeys(name for report in reports.values() for name in report["rows"]))
    summary = {}
    for name in names:
        values = {seed: 100 * r["rows"][name]["mIoU"] for seed, r in reports.items() if name in r["rows"]}
        margins = {
            seed: values[seed] - 100 * r["rows"]["base"]["mIoU"]
            for seed, r in reports.items()
            if seed in values and "base" in r["rows"] and name != "base"
        }
        entry = {"mIoU": values}
        for key, series in (("mIoU", values), ("vs_base", margins)):
            if series:
                numbers = list(series.values())
                entry[f"{key}_mean"] = statistics.fmean(numbers)
                entry[f"{key}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        entry["vs_base"] = margins
        summary[name] = entry
    return summary


def format_seed_summary(summary: dict[str, dict]) -> str:
    """The table of `summarize_seeds`: one line per row, mIoU mean +- std and mIoU - base mean +- std (in %)."""
    width = max([10, *(len(name) + 1 for name in summary)])
    lines = [f"{'model':<{width}}{'mIoU':>16}{'vs base':>16}   per seed (vs base)"]
    for name, entry in summary.items():
        margin = (
            f"{entry['vs_base_mean']:+7.2f} +- {entry['vs_base_std']:4.2f}"
            if entry["vs_base"]
            else f"{'':>16}"
        )
        seeds = ", ".join(f"{value:+.2f}" for value in entry["vs_base"].values())
        line = f"{name:<{width}}{entry['mIoU_mean']:>8.2f} +- {entry['mIoU_std']:4.2f}{margin:>16}   {seeds}"
        lines.append(line.rstrip())
    return "\n".join(lines)
