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
"""`phreg eval`: artifact measures of the base model, its denoised teacher and a PH-Reg student, side by side.

    phreg eval --base facebook/dinov2-base --student ./dinov2-base-phreg --images ./heldout --out report.json

The three models see the same center-cropped images: the raw base model (before), the denoised teacher (the base
averaged over K shifted / flipped views, the target PH-Reg distills towards) and the student (after). Every
measure of `metrics.artifact_report` is computed for each and printed as one table; `--out` writes the
`constants.METRICS_FILE` payload, which the model card (`hub.py`) reads.

The building blocks serve the trainer's final report and `phreg visualize` too:

- `prepare_evaluation` loads the models, the image processor and a folder of images (unreadable files skipped
  and counted) and builds the teacher;
- `collect_patch_tokens` runs the three models over a stack of images, batch by batch;
- `measure_artifacts` turns images into the metrics payload (what the trainer calls at the end of a run).

Teacher views are drawn per image from `seeding.view_seed_for(seed, index)`, so the teacher row depends
only on the images, their order and the seed, not on the batch size.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import IMAGE_PROCESSOR_NAME

from ..constants import DEFAULT_EVAL_IMAGES, MEASURE_VIEW_SEED, METRICS_FILE
from ..data import LoadedImages, list_image_files, load_images
from ..models.modeling_phreg import PhregRegisterMixin, student_class_for, student_from_base
from ..seeding import view_seed_for
from ..teacher import DenoisingTeacher, TeacherViews, normalized_fill_value, stack_views
from .metrics import artifact_report
from .metrics_table import MEASURES, MODEL_ROWS, TEST_TIME_REGISTERS_ROW, format_metrics_table
from .model_checks import (  # re-exported: they lived here, and the other commands import them from here
    check_finite_weights,
    check_model_source,
    check_resolution,
    default_resolution,
    resolve_device,
)
from .ttr_rows import (
    check_ttr_options,
    load_ttr_model,
    test_time_registers_field,
    ttr_images_field,
    ttr_min_images_field,
    ttr_report,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_IMAGES = DEFAULT_EVAL_IMAGES


# ----------------------------------------------------------------------------------------------------------------
# Options
@dataclass
class EvalArguments:
    """Options of `phreg eval` (`HfArgumentParser(EvalArguments)`; `phreg eval --help` lists them with defaults)."""

    base: str = field(
        metadata={
            "help": "Hub id or local folder of the stock base model the student was distilled from, e.g. "
            "facebook/dinov2-base (a full CLIP checkpoint is fine: its vision tower is used)."
        }
    )
    student: str = field(
        metadata={
            "help": "Folder (or Hub id) of the PH-Reg student: a training --output_dir or save_pretrained."
        }
    )
    images: str = field(
        metadata={
            "help": "Folder of held-out images (any PIL-readable format, subfolders included). Unreadable files "
            "are skipped and counted."
        }
    )
    resolution: int | None = field(
        default=None,
        metadata={
            "help": "Side R of the center crop in pixels, a multiple of the patch size. Default: the image "
            "processor's crop size (the student's processor if it has one, else the base's), else the config's "
            "image_size."
        },
    )
    out: str | None = field(
        default=None,
        metadata={
            "help": f"Write the measures as JSON here (the {METRICS_FILE} schema the model card reads)."
        },
    )
    num_views: int = field(
        default=10,
        metadata={"help": "K shifted/flipped views averaged by the denoised teacher (reference: 10)."},
    )
    shift_frac: float = field(
        default=0.15,
        metadata={
            "help": "Largest teacher view shift as a fraction of the patch grid side (reference: 0.15)."
        },
    )
    flip_prob: float = field(
        default=0.5, metadata={"help": "Probability that a teacher view (other than the first) is flipped."}
    )
    fill_value: float = field(
        default=1.0,
        metadata={"help": "Raw pixel value (0..1) filling pixels shifted in (reference: 1.0, white)."},
    )
    batch_size: int = field(
        default=8, metadata={"help": "Images per forward pass (the teacher runs K times as many)."}
    )
    max_images: int = field(
        default=DEFAULT_MAX_IMAGES,
        metadata={
            "help": "Use at most this many readable images (files in sorted order); 0 for all. Every patch token "
            "of every image is kept in memory for the position-locked measure."
        },
    )
    seed: int = field(
        default=MEASURE_VIEW_SEED,
        metadata={
            "help": "Seed of the teacher's views (drawn per image); the trainer's final measures use the same."
        },
    )
    test_time_registers: str | None = test_time_registers_field()
    ttr_images: str | None = ttr_images_field()
    ttr_min_images: int = ttr_min_images_field()
    base_revision: str | None = field(default=None, metadata={"help": "Hub revision of --base."})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if available)."}
    )

    def __post_init__(self) -> None:
        for name in ("num_views", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_images < 0:
            raise ValueError(f"--max_images must be >= 0 (0: all images), got {self.max_images}.")
        if self.resolution is not None and self.resolution <= 0:
            raise ValueError(f"--resolution must be > 0, got {self.resolution}.")
        check_ttr_options(self)


# ----------------------------------------------------------------------------------------------------------------
# Models
def _as_patch_token_model(model: nn.Module) -> nn.Module:
    """A model with `get_patch_tokens`: PH-Reg models as they are, a stock base wrapped with 0 registers."""
    if callable(getattr(model, "get_patch_tokens", None)):
        return model
    return student_from_base(model, 0)


def _check_same_architecture(base_model: PhregRegisterMixin, student: PhregRegisterMixin, base: str) -> None:
    for key in ("hidden_size", "patch_size", "num_hidden_layers"):
        base_value, student_value = getattr(base_model.config, key), getattr(student.config, key)
        if base_value != student_value:
            raise ValueError(
                f"--base {base} has {key}={base_value} but the student has {key}={student_value}: it was not "
                "distilled from this base model. Pass the base checkpoint the student was built from."
            )


def _trained_parts(student: str) -> list[str]:
    """The parts the student's run trained (its phreg_training.json), or all of them when it does not say."""
    from ..constants import TRAINING_SETTINGS_FILE
    from ..models.modeling_phreg import TRAINABLE_PARTS

    try:
        parts = json.loads((Path(student) / TRAINING_SETTINGS_FILE).read_text()).get("trainable_parts")
    except (OSError, ValueError):
        parts = None
    return list(parts) if parts else list(TRAINABLE_PARTS)


def check_frozen_weights_match(
    base_model: PhregRegisterMixin,
    student_model: PhregRegisterMixin,
    base: str,
    student: str,
    student_option: str = "--student",
) -> None:
    """Raise ValueError unless every weight PH-Reg kept frozen is the same in the student and the base.

    A base of the same shape but other weights (another checkpoint of the family) would otherwise give a table
    that compares the student with a model it was never distilled from.
    """
    groups = student_model.trainable_parameter_groups()
    trained = {id(p) for part in _trained_parts(student) for p in groups.get(part, [])}
    base_params = dict(base_model.named_parameters())
    differing = [
        name
        for name, param in student_model.named_parameters()
        if id(param) not in trained
        and name in base_params
        and base_params[name].shape == param.shape
        and not torch.equal(base_params[name].detach().to(param.dtype), param.detach())
    ]
    if differing:
        raise ValueError(
            f"{student_option} {student} was not distilled from --base {base}: {len(differing)} weights that PH-Reg "
            f"keeps frozen differ (e.g. {differing[0]}). Pass the base model the student was built from"
            f"{_recorded_base_hint(student)}."
        )


def _recorded_base_hint(student: str) -> str:
    """' (its phreg_training.json records base model X)' when the student folder says where it came from."""
    from ..constants import TRAINING_SETTINGS_FILE

    settings_path = Path(student) / TRAINING_SETTINGS_FILE
    try:
        recorded = json.loads(settings_path.read_text()).get("base_model")
    except (OSError, ValueError):
        return ""
    return f" (its {TRAINING_SETTINGS_FILE} records base model {recorded})" if recorded else ""


def check_base_matches_student(base: str, student: str, base_revision: str | None = None) -> str:
    """Compare the two checkpoints' configs (no weights loaded); returns the base's `model_type`.

    Raises ValueError when `student` is not a PH-Reg student, `base` is one, or the student was built from
    another kind of backbone (e.g. a ViT student with a DINOv2 base).
    """
    from transformers import AutoConfig

    student_config = AutoConfig.from_pretrained(student)
    if student_config.model_type == "phreg_clip":
        raise ValueError(
            f"--student {student} is a full CLIP student (PhregCLIPModel), whose dense output is text-aligned: "
            "measure it with `phreg eval-segmentation --model STUDENT --base BASE_CLIP ...` (mIoU against MaskCLIP "
            "and NACLIP), or segment with `phreg segment`. `phreg eval` and `phreg visualize` take vision students "
            "(DINOv2, ViT, CLIP vision tower, SigLIP, DINOv3)."
        )
    student_base_type = getattr(student_config, "base_model_type", None)
    if not student_base_type:
        raise ValueError(
            f"--student {student} is a '{student_config.model_type}' checkpoint, not a PH-Reg student; pass the "
            "folder written by the PH-Reg trainer (--output_dir) or by student.save_pretrained()."
        )
    base_config = AutoConfig.from_pretrained(base, revision=base_revision)
    if getattr(base_config, "base_model_type", None):
        raise ValueError(
            f"--base {base} is itself a PH-Reg student ('{base_config.model_type}'); pass the stock base model, "
            "e.g. facebook/dinov2-base."
        )
    expected = student_class_for(student_base_type)
    if student_class_for(base_config.model_type) is not expected:
        raise ValueError(
            f"--student {student} was built from a '{student_base_type}' model but --base {base} is a "
            f"'{base_config.model_type}' checkpoint; pass the base model the student was distilled from"
            f"{_recorded_base_hint(student)}."
        )
    return base_config.model_type


def load_image_processor(student: str, base: str, base_revision: str | None = None):
    """The student's image processor when it has one (`preprocessor_config.json`), else the base model's."""
    from transformers import AutoImageProcessor

    student_path = Path(student)
    if student_path.is_dir() and (student_path / IMAGE_PROCESSOR_NAME).is_file():
        return AutoImageProcessor.from_pretrained(student)
    if not student_path.is_dir():  # a Hub id: it may carry a processor
        with contextlib.suppress(OSError, ValueError):
            return AutoImageProcessor.from_pretrained(student)
    try:
        return AutoImageProcessor.from_pretrained(base, revision=base_revision)
    except OSError as error:
        raise ValueError(
            f"No image processor in --student {student} nor in --base {base} ({error}). Save the base model's "
            f"processor into the student folder: AutoImageProcessor.from_pretrained(BASE).save_pretrained({student!r})."
        ) from None


@dataclass
class EvalSetup:
    """Everything `phreg eval` / `phreg visualize` measure with (see `prepare_evaluation`).

    Attributes:
        base_model: the base as a 0-register PH-Reg model (computes exactly what the stock model computes).
        student: the PH-Reg student, eval mode.
        teacher: the denoised teacher of `base_model`.
        image_processor: where mean / std (and the default resolution) came from.
        images: the center-cropped images, `(n, 3, R, R)`.
        resolution: R.
        grid_size: `(R / p, R / p)` patches.
        image_mean, image_std: the normalization of the images (the processor's, ImageNet's if it has none).
        device: where the models are.
    """

    base_model: PhregRegisterMixin
    student: PhregRegisterMixin
    teacher: DenoisingTeacher
    image_processor: object
    images: LoadedImages
    resolution: int
    grid_size: tuple[int, int]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    device: torch.device


def prepare_evaluation(
    base: str,
    student: str,
    images: str,
    *,
    resolution: int | None = None,
    max_images: int | None = DEFAULT_MAX_IMAGES,
    num_views: int = 10,
    shift_frac: float = 0.15,
    flip_prob: float = 0.5,
    fill_value: float = 1.0,
    base_revision: str | None = None,
    device: str | None = None,
) -> EvalSetup:
    """Load base, student, image processor and images; build the teacher. Cheap checks run first.

    Order: the images folder exists and holds image files, the two configs match (no weights loaded yet), then
    weights, the processor, the resolution, and finally the images are decoded.
    """
    from transformers import AutoModel

    from ..data import ImageTransform
    from ..file_checks import check_local_weights

    list_image_files(images)  # fail on a missing / empty folder before loading any weights
    check_base_matches_student(base, student, base_revision)
    check_local_weights(student)  # a truncated model.safetensors is named, not a raw safetensors error
    check_local_weights(base)
    torch_device = resolve_device(device)
    # float32 throughout: the measures compare small differences of norms and cosines.
    student_model = AutoModel.from_pretrained(student).float().eval().to(torch_device)
    base_model = student_from_base(base, 0, revision=base_revision).float().eval().to(torch_device)
    _check_same_architecture(base_model, student_model, base)
    check_frozen_weights_match(base_model, student_model, base, student)
    image_processor = load_image_processor(student, base, base_revision)
    if resolution is None:
        resolution = default_resolution(image_processor, student_model.config)
    grid_size = check_resolution(resolution, student_model.patch_size)
    transform = ImageTransform.from_image_processor(image_processor, resolution, random_crop=False)
    teacher = DenoisingTeacher(
        base_model,
        fill_value=normalized_fill_value(transform.image_mean, transform.image_std, raw_value=fill_value),
        num_views=num_views,
        shift_frac=shift_frac,
        flip_prob=flip_prob,
    )
    loaded = load_images(images, transform, max_images)
    return EvalSetup(
        base_model=base_model,
        student=student_model,
        teacher=teacher,
        image_processor=image_processor,
        images=loaded,
        resolution=resolution,
        grid_size=grid_size,
        image_mean=transform.image_mean,
        image_std=transform.image_std,
        device=torch_device,
    )


# ----------------------------------------------------------------------------------------------------------------
# Measuring
@dataclass
class PatchTokens:
    """Final-normed patch tokens of the same n images, float32 on the CPU, each `(n, N, C)`."""

    base: torch.Tensor
    teacher: torch.Tensor
    student: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # further rows, e.g. "test_time_registers"


def views_for_images(
    teacher: DenoisingTeacher,
    indices: Sequence[int],
    grid_size: tuple[int, int],
    seed: int,
    epoch: int | None = None,
) -> TeacherViews:
    """The teacher's K views of each image, seeded per image by `view_seed_for(seed, index, epoch)`.

    A view set depends only on (seed, image index, epoch), never on the batch it lands in: the trainer draws
    its training views this way (epoch None with a teacher cache, whose views stay fixed), and the evaluator
    its measurement views. Returns offsets `(B, K, 2)` and flips `(B, K)`.
    """
    views = []
    for index in indices:
        generator = torch.Generator().manual_seed(view_seed_for(seed, int(index), epoch))
        views.append(teacher.sample_views(1, grid_size, generator=generator))
    return stack_views(views)


@torch.no_grad()
def collect_patch_tokens(
    base_model: nn.Module,
    student: nn.Module,
    teacher: DenoisingTeacher,
    pixel_values: torch.Tensor,
    *,
    indices: Sequence[int] | None = None,
    view_seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    progress: bool = False,
    extra_models: dict[str, nn.Module] | None = None,
) -> PatchTokens:
    """Run base, denoised teacher and student over `(n, 3, R, R)` images, `batch_size` images at a time.

    Args:
        base_model: the base with `get_patch_tokens` (a stock model is wrapped by `student_from_base(base, 0)`).
        student: a PH-Reg student; put in eval mode for the pass and restored to its mode afterwards.
        teacher: the denoised teacher of the base.
        pixel_values: `(n, 3, R, R)` normalized images (any device; moved batch by batch).
        indices: `n` image indices seeding the teacher views (default `0..n-1`), see `views_for_images`.
        view_seed: seed of the views.
        batch_size: images per forward pass (the teacher runs K times as many).
        device: where the models are (default: the student's device).
        autocast: a callable returning a context manager wrapped around the forward passes, e.g.
            `accelerator.autocast`; default none (full precision).
        progress: show a tqdm bar over batches.
        extra_models: further models with `get_patch_tokens` (e.g. a test-time-registers model), by row name.

    Returns:
        `PatchTokens` with three `(n, N, C)` float32 CPU tensors, N = (R / p)^2, plus one per extra model.
    """
    base_model = _as_patch_token_model(base_model)
    indices = list(range(len(pixel_values))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(pixel_values):
        raise ValueError(f"{len(indices)} indices for {len(pixel_values)} images; pass one index per image.")
    device = torch.device(device) if device is not None else next(student.parameters()).device
    autocast = autocast or contextlib.nullcontext
    grid_size = teacher.grid_size(pixel_values)
    extra_models = dict(extra_models or {})
    modes = [(model, model.training) for model in (base_model, student, *extra_models.values())]
    for model, _ in modes:
        model.eval()
    collected: dict[str, list[torch.Tensor]] = {"base": [], "teacher": [], "student": []}
    collected.update({name: [] for name in extra_models})
    starts = range(0, len(indices), batch_size)
    try:
        for start in tqdm(starts, desc="base / teacher / student", unit="batch", disable=not progress):
            chunk = pixel_values[start : start + batch_size].to(device)
            views = views_for_images(teacher, indices[start : start + batch_size], grid_size, view_seed)
            with autocast():
                collected["base"].append(base_model.get_patch_tokens(chunk).float().cpu())
                collected["teacher"].append(teacher(chunk, views=views).float().cpu())
                collected["student"].append(student.get_patch_tokens(chunk).float().cpu())
                for name, model in extra_models.items():
                    collected[name].append(model.get_patch_tokens(chunk).float().cpu())
    finally:
        for model, was_training in modes:
            model.train(was_training)
    tokens = {name: torch.cat(parts) for name, parts in collected.items()}
    return PatchTokens(
        base=tokens["base"],
        teacher=tokens["teacher"],
        student=tokens["student"],
        extra={name: tokens[name] for name in extra_models},
    )


def artifact_rows(tokens: PatchTokens, grid_size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """`{"base" | "teacher" | "student" | extra row: artifact_report(...)}`; every row but the teacher's is compared
    to the teacher.

    Args:
        tokens: the `(n, N, C)` token sets of the same images.
        grid_size: `(h, w)` with h * w = N.
    """
    rows = {
        "base": artifact_report(tokens.base, targets=tokens.teacher, grid_size=grid_size),
        "teacher": artifact_report(tokens.teacher, grid_size=grid_size),
        "student": artifact_report(tokens.student, targets=tokens.teacher, grid_size=grid_size),
        **{
            name: artifact_report(extra, targets=tokens.teacher, grid_size=grid_size)
            for name, extra in tokens.extra.items()
        },
    }
    return {name: {key: float(value) for key, value in row.items()} for name, row in rows.items()}


def measure_artifacts(
    base_model: nn.Module,
    student: nn.Module,
    pixel_values: torch.Tensor,
    teacher: DenoisingTeacher,
    *,
    images: str = "",
    indices: Sequence[int] | None = None,
    view_seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    progress: bool = False,
    extra_models: dict[str, nn.Module] | None = None,
) -> dict:
    """Artifact measures of base, denoised teacher and student on the same images: the metrics payload.

    Args:
        base_model, student, teacher, indices, view_seed, batch_size, device, autocast, progress, extra_models:
            see `collect_patch_tokens`.
        pixel_values: `(n, 3, R, R)` center-cropped, normalized images.
        images: what the images are (a folder or a description), stored under "images".

    Returns:
        `{"num_images": n, "resolution": R, "images": images, "rows": {"base", "teacher", "student"}}`, the
        `constants.METRICS_FILE` schema.
    """
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
        progress=progress,
        extra_models=extra_models,
    )
    return {
        "num_images": int(pixel_values.shape[0]),
        "resolution": int(pixel_values.shape[-1]),
        "images": images,
        "rows": artifact_rows(tokens, teacher.grid_size(pixel_values)),
    }


def evaluate(args: EvalArguments) -> dict:
    """`phreg eval` without printing: load, measure, write `args.out` if given; returns the payload."""
    from ..file_checks import check_output_file

    if args.out:  # replaces an earlier report, never a file of a model folder (config, weights)
        check_output_file(args.out, "--out", overwrite=True)
    setup = prepare_evaluation(
        args.base,
        args.student,
        args.images,
        resolution=args.resolution,
        max_images=args.max_images,
        num_views=args.num_views,
        shift_frac=args.shift_frac,
        flip_prob=args.flip_prob,
        fill_value=args.fill_value,
        base_revision=args.base_revision,
        device=args.device,
    )
    loaded = setup.images
    ttr = load_ttr_model(args, setup.base_model, processor=setup.image_processor, device=setup.device)
    extra_models = {} if ttr is None else {TEST_TIME_REGISTERS_ROW: ttr}
    payload = measure_artifacts(
        setup.base_model,
        setup.student,
        loaded.pixel_values,
        setup.teacher,
        images=loaded.folder,
        indices=loaded.indices,
        view_seed=args.seed,
        batch_size=args.batch_size,
        device=setup.device,
        progress=True,
        extra_models=extra_models,
    )
    payload.update(
        num_skipped=loaded.num_skipped,
        base_model=args.base,
        student=args.student,
        settings={key: value for key, value in asdict(args).items() if key != "out"},
    )
    payload.update(ttr_report(args, ttr))
    if args.out:
        write_metrics(args.out, payload)
    return payload


def write_metrics(path: str | Path, payload: dict) -> Path:
    """Write a metrics payload as indented JSON (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------------------------------
# Command line
def eval_main(argv: Sequence[str] | None = None) -> int:
    """`phreg eval --base BASE --student STUDENT --images DIR [options]`. Exit codes: 0 done, 2 bad input."""
    from ..arg_parsing import run_cli

    code, args, payload = run_cli(
        EvalArguments,
        argv,
        "phreg eval",
        "Artifact measures of the base model, its denoised teacher and a PH-Reg student on the same images.",
        evaluate,
    )
    if code is not None:
        return code
    print(format_metrics_table(payload, models_as_rows=True))
    if args.out:
        print(f"Wrote {args.out}")
    return 0


__all__ = [
    "EvalArguments",
    "EvalSetup",
    "LoadedImages",
    "MEASURES",
    "MODEL_ROWS",
    "TEST_TIME_REGISTERS_ROW",
    "PatchTokens",
    "artifact_rows",
    "check_base_matches_student",
    "check_finite_weights",
    "check_model_source",
    "check_resolution",
    "collect_patch_tokens",
    "default_resolution",
    "eval_main",
    "evaluate",
    "format_metrics_table",
    "list_image_files",
    "load_image_processor",
    "load_images",
    "measure_artifacts",
    "prepare_evaluation",
    "resolve_device",
    "views_for_images",
    "write_metrics",
]
