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
"""PH-Reg distillation: `DistillArguments` (parsed with `HfArgumentParser`) and `DistillTrainer` (Accelerate).

`DistillTrainer` is split by concern: this file sets up the models and runs the loop; `training_data.py` (the
images), `checkpointing.py` (resumable checkpoints) and `outputs.py` (final measures and saved files) hold the rest
as mixins, and `arguments.py` the options.

The student (the base model plus registers, see `modeling_phreg.py`) learns to reproduce, on each training
image, the *denoised* patch features of the frozen base model (`teacher.py`): the average of the base model's
features over K shifted / flipped views, which keeps the image content and washes out position-locked
artifacts. Only the registers, position embeddings, patch-embedding projection and last block train
(each switchable); everything else is frozen and verified frozen. docs/method.md has the method and the reference
settings; where this file departs from the reference code, a comment says why.

Typical use (see `examples/distill.py`)::

    accelerate launch examples/distill.py --teacher facebook/dinov2-base --train_dir ./images \
        --output_dir ./dinov2-base-phreg

With no `--teacher`, a small random-init DINOv2 with planted artifacts (synthetic, see `synthetic.py`) is
distilled on natural sample images from scikit-image: an offline demo of the whole pipeline.

Steps, epochs and the learning rate (docs/method.md: AdamW, exponential decay per epoch to the final rate):

- one *step* is one optimizer step, i.e. `gradient_accumulation_steps` micro-batches on every process
  (global batch = per-device batch x processes x accumulation). A step whose loss or teacher targets hold
  NaN/inf on any process is skipped on all of them (no optimizer update) but still counts as a step, so the
  step counter always says how much data was consumed (which is what resuming needs);
- one *epoch* is one pass over the training images. With `--max_steps` the run covers
  `ceil(max_steps / steps_per_epoch)` epochs (the last one possibly partial);
- the learning rate of epoch e (of E) is `learning_rate * (final_learning_rate / learning_rate) ** (e / (E - 1))`:
  the first epoch trains at `learning_rate`, the last at `final_learning_rate`. The reference code's
  formula, `lr * ratio ** ((e + 1) / E)`, already decays after the first step and never trains at the given
  rate; ours keeps both end points. When a run has fewer than 2 epochs, or its length in epochs is unknown
  (streaming), the same curve is followed per optimizer step instead, so the run still ends at the final rate.
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoImageProcessor, PreTrainedModel

from ..launch import multi_process_cpu_run
from ..models.modeling_phreg import student_class_for, student_from_base
from . import clip_training
from .arguments import REFERENCE_RESOLUTIONS, DistillArguments
from .checkpointing import (
    CheckpointingMixin,
    clean_leftovers,
    list_checkpoints,
    remove_tree,
)
from .compile import compile_for_training
from .demo import (
    SYNTHETIC_BASE_NAME,
    build_demo_image_processor,
    build_demo_teacher,
    write_demo_images,
)
from .outputs import TrainingOutputsMixin
from .run_files import run_output_names
from .step_loop import StepLoopMixin, distillation_loss
from .teacher_cache import (
    STORAGE_DTYPES,
    CachedTargetReader,
    TeacherTargetCache,
    build_fingerprint,
    hash_model,
)
from .training_data import TrainingDataMixin

logger = get_logger(__name__)

__all__ = [
    "DistillArguments",
    "DistillTrainer",
    "ExponentialDecaySchedule",
    "build_demo_image_processor",
    "distillation_loss",
    "list_checkpoints",
    "write_demo_images",
]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class ExponentialDecaySchedule:
    """`LambdaLR` factor: exponential decay from 1 to `final_lr / initial_lr`, per epoch (see module docstring).

    A class (not a lambda) so that its settings travel in the scheduler's `state_dict` and the run's JSON.
    """

    def __init__(self, initial_lr: float, final_lr: float, total_steps: int, steps_per_epoch: int | None):
        self.ratio = final_lr / initial_lr
        self.total_steps = int(total_steps)
        self.steps_per_epoch = steps_per_epoch
        self.num_epochs = math.ceil(total_steps / steps_per_epoch) if steps_per_epoch else None
        self.per_epoch = self.num_epochs is not None and self.num_epochs >= 2

    def progress(self, step: int) -> float:
        if self.per_epoch:
            epoch = min(step // self.steps_per_epoch, self.num_epochs - 1)
            return epoch / (self.num_epochs - 1)
        return min(step, self.total_steps - 1) / (self.total_steps - 1) if self.total_steps > 1 else 0.0

    def __call__(self, step: int) -> float:
        return self.ratio ** self.progress(step)


class _TrainingState:
    """Counters saved, as JSON, in every checkpoint's manifest (`checkpointing.py`)."""

    def __init__(self):
        self.global_step = 0  # optimizer steps done (skipped ones included)
        self.epoch = 0  # current epoch
        self.batches_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.skipped_steps = 0
        self.consecutive_bad_steps = 0
        self.unreadable_images: dict[
            str, str
        ] = {}  # image index -> why it could not be read (each file once)
        self.images_seen = 0
        self.teacher_images = 0  # images the teacher was run on
        self.cache_hits = 0  # teacher-cache lookups over the whole run (resumes included)
        self.cache_misses = 0

    @property
    def skipped_images(self) -> int:
        """Unreadable image files met so far, each counted once however many epochs met it."""
        return len(self.unreadable_images)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class DistillTrainer(StepLoopMixin, TrainingDataMixin, TrainingOutputsMixin, CheckpointingMixin):
    """The PH-Reg distillation loop on `accelerate.Accelerator`.

    Args:
        args: the run's `DistillArguments`.
        base_model: optionally an already loaded stock ViT / DINOv2 / CLIP / SigLIP / DINOv3 model to distill
            instead of loading `args.teacher` (for notebooks and tests); recorded by its `name_or_path`.
        image_processor: the image processor to save with the student and take mean/std from (default: the
            one of `args.teacher`, or a DINOv2-style ImageNet processor for the demo / an in-memory model).

    `train()` runs the loop, saves the student and writes the settings and metrics JSONs; it returns
    `{"settings": ..., "metrics": ...}` on every process.
    """

    def __init__(
        self,
        args: DistillArguments,
        base_model: PreTrainedModel | None = None,
        image_processor=None,
    ):
        args.validate()
        self.args = args
        self.output_dir = Path(args.output_dir if args.output_dir is not None else "phreg-demo")
        self.accelerator = Accelerator(
            cpu=multi_process_cpu_run(),
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=self._resolve_mixed_precision(),
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "runs")
            ),
            # A sampler seeded by (seed, epoch): the same order after a resume, whatever happened before.
            # non_blocking: batches pinned by the DataLoader (on CUDA) are copied while the GPU works.
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True,
                non_blocking=torch.cuda.is_available() and not multi_process_cpu_run(),
            ),
            # We step the scheduler once per optimizer step ourselves (skipped steps included, see the module
            # docstring) rather than letting Accelerate step it num_processes times per step.
            step_scheduler_with_optimizer=False,
        )
        if not self.accelerator.is_local_main_process:
            # One copy of the library warnings is enough.
            import datasets
            import transformers

            datasets.utils.logging.set_verbosity_error()
            transformers.utils.logging.set_verbosity_error()
        set_seed(args.seed)
        self._check_hub_access()
        self._prepare_output_dir()
        self._load_models(base_model, image_processor)
        self._build_data()
        self._build_optimization()
        # Our counters travel as JSON in each checkpoint's manifest, never as a pickle (see checkpointing.py).
        self.state = _TrainingState()
        self._teacher_images_in_step = 0  # this process's teacher images in the current micro-batch
        # What identifies the teacher and the image set (checkpoints, teacher cache): hashed once, by the main
        # process (each would read every weight and image file otherwise), and shared with the others.
        identity = [None]
        if self.accelerator.is_main_process:
            identity = [(hash_model(self.teacher_model), self._dataset_identity())]
        (self.teacher_hash, self.dataset_identity) = broadcast_object_list(identity)[0]
        self._open_teacher_cache()
        # Fail before the first step, not after the last: the training images and the held-out images.
        self._check_training_images()
        self.eval_images = self._eval_pixel_values()

    # ----------------------------------------------------------------------------------------------------------
    # Setup
    def _resolve_mixed_precision(self) -> str:
        if self.args.mixed_precision != "auto":
            return self.args.mixed_precision
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"

    def _check_hub_access(self) -> None:
        """With --push_to_hub, fail now rather than after training when there is no token to push with."""
        if not self.args.push_to_hub:
            return
        from huggingface_hub import get_token

        if self.args.hub_token is None and get_token() is None:
            raise ValueError(
                "--push_to_hub: no Hugging Face token found. Log in with `hf auth login`, set HF_TOKEN, or pass "
                "--hub_token (checked before training, so that no run ends unable to upload); or drop --push_to_hub "
                "and upload the finished run later with `phreg push OUTPUT_DIR REPO_ID`."
            )

    def _prepare_output_dir(self) -> None:
        """Refuse to replace a finished run unless told to; resume only what a checkpoint can continue."""
        args, accelerator = self.args, self.accelerator
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(
                f"--output_dir {self.output_dir} is a file, not a folder; pass a folder path (it is created)."
            )
        existing = list_checkpoints(self.output_dir)
        finished = run_output_names(self.output_dir) if self.output_dir.is_dir() else []
        overwrite = args.overwrite_output_dir or (args.is_demo and args.output_dir is None)
        resume = args.resume_from_checkpoint
        if resume == "latest" and not existing and finished and not overwrite:
            raise ValueError(
                f"--resume_from_checkpoint latest: {self.output_dir} holds no checkpoint to resume but a finished "
                f"run ({', '.join(finished)}), which starting anew would replace. Pass --overwrite_output_dir to "
                "replace it, or another --output_dir."
            )
        if (existing or finished) and resume is None and not overwrite:
            raise ValueError(
                f"--output_dir {self.output_dir} already holds a run ({len(existing)} checkpoints"
                f"{', a saved model' if finished else ''}). Pass --resume_from_checkpoint latest to continue it, "
                "--overwrite_output_dir to start over there, or another --output_dir."
            )
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            removed = clean_leftovers(self.output_dir)
            if removed:
                logger.info(f"Removed leftovers of an interrupted save in {self.output_dir}: {removed}")
            if overwrite and resume is None:
                # The old outputs are replaced only when this run has saved its own (`save_outputs`).
                for checkpoint in existing:
                    remove_tree(checkpoint)
        accelerator.wait_for_everyone()

    def _load_models(self, base_model, image_processor) -> None:
        args = self.args
        self.demo_base = None
        load_kwargs = {}
        if args.attn_implementation is not None:
            load_kwargs["attn_implementation"] = args.attn_implementation
        if base_model is not None:
            base = base_model
            self.base_model_id = (
                getattr(base.config, "_name_or_path", "") or f"in-memory {type(base).__name__}"
            )
        elif args.is_demo:
            base = build_demo_teacher()
            # Saved next to the student, so that `phreg eval` / `phreg visualize` can compare them offline.
            self.demo_base = base
        else:
            # Load only the vision tower's stock class (e.g. CLIPVisionModel from a full CLIP checkpoint; its loader
            # skips the unused keys without a load report), or the whole CLIPModel when the run distills CLIP's
            # text-aligned dense features (clip_training.py).
            from ..file_checks import check_local_weights

            check_local_weights(args.teacher)  # a truncated local model.safetensors is named, with the fix
            model_type = AutoConfig.from_pretrained(args.teacher, revision=args.teacher_revision).model_type
            base_class = (
                clip_training.base_class_for(model_type, args.clip_dense_mode)
                or student_class_for(model_type).base_model_loader()
            )
            base = base_class.from_pretrained(args.teacher, revision=args.teacher_revision, **load_kwargs)
            self.base_model_id = args.teacher
        if args.attn_implementation is not None and (base_model is not None or args.is_demo):
            base.config._attn_implementation = args.attn_implementation
        # What synthetic.py planted (None for a real model), recorded in the settings JSON and the model card.
        self.synthetic_info = getattr(base.config, "phreg_synthetic", None)
        self.is_synthetic = self.synthetic_info is not None
        if self.is_synthetic and args.teacher is None:
            self.base_model_id = SYNTHETIC_BASE_NAME.format(model_type=base.config.model_type)

        # Student and teacher both start as exact copies of the base (docs/method.md). The teacher is a 0-register
        # student: it computes exactly what the base computes, and exposes the same `get_patch_tokens`. Both
        # hold float32 weights (as the reference code); lower precision comes from autocast (--mixed_precision).
        self.clip_dense_mode = clip_training.resolve_mode(base, args.clip_dense_mode)
        args.resolve_defaults(clip_dense=self.clip_dense_mode is not None)
        if self.clip_dense_mode is not None:
            # A full PhregCLIPModel student; the teacher is the frozen CLIP seen through NACLIP (or MaskCLIP).
            self.student, teacher_model = clip_training.build_student_and_teacher(
                base, args.num_register_tokens, self.clip_dense_mode
            )
        else:
            self.student = student_from_base(base, args.num_register_tokens).float()
            teacher_model = student_from_base(base, 0).float()
        self.model_type = base.config.model_type
        self.patch_size = self.student.patch_size
        self.native_image_size = teacher_model.config.image_size
        del base

        if image_processor is None:
            if args.teacher is not None and base_model is None:
                image_processor = AutoImageProcessor.from_pretrained(
                    args.teacher, revision=args.teacher_revision
                )
            else:
                image_processor = None  # built below, once the resolution is known
        self.processor = None  # a CLIPProcessor (tokenizer included) saved beside a CLIP dense student
        if self.clip_dense_mode is not None:
            self.processor, image_processor = clip_training.split_processor(
                image_processor, args.teacher if base_model is None else None, args.teacher_revision
            )
        self.resolution = self._resolve_resolution()
        self.image_processor = image_processor or build_demo_image_processor(self.resolution)
        if self.clip_dense_mode is not None:
            # docs/method.md: the position embeddings are resized once to the training grid, and that table trains.
            self.student.resize_position_embeddings(self.resolution)
            clip_training.set_processor_resolution(self.image_processor, self.resolution)
        self.grid_size = (self.resolution // self.patch_size, self.resolution // self.patch_size)

        for parameter in teacher_model.parameters():
            parameter.requires_grad_(False)
        self.teacher_model = teacher_model.eval().to(self.accelerator.device)
        # Width of the distilled tokens: the hidden size, or CLIP's projection size in a dense mode.
        self.target_dim = (
            self.student.config.projection_dim if self.clip_dense_mode else self.student.config.hidden_size
        )
        self.teacher = self._build_teacher(self.teacher_model)
        missing = args.resolve_trainable_parts(
            list(self.student.trainable_parameter_groups()), type(self.student).__name__
        )
        if missing:
            logger.info(
                f"{type(self.student).__name__} has no {' / '.join(missing)} part (DINOv3: rotary position "
                f"embeddings, no learned table): training {', '.join(args.enabled_parts())}."
            )
        self.trainable_names = self._freeze_student()

    def _resolve_resolution(self) -> int:
        args, p = self.args, self.patch_size
        resolution = args.resolution
        if resolution is None:
            native = self.native_image_size
            if self.is_synthetic:
                resolution = native
            else:
                resolution = REFERENCE_RESOLUTIONS.get(self.model_type, native)
        if resolution % p:
            lower, upper = (resolution // p) * p, (resolution // p + 1) * p
            nearest = f"{lower} or {upper}" if lower > 0 else f"{upper}"
            raise ValueError(
                f"--resolution {resolution} is not a multiple of the patch size {p} of this model; pass "
                f"--resolution {nearest}."
            )
        if resolution // p < 2:
            raise ValueError(
                f"--resolution {resolution} gives a patch grid under 2x2; pass at least {2 * p}."
            )
        return resolution

    def _freeze_student(self) -> list[str]:
        """Freeze the student, unfreeze the chosen parts, and verify exactly those train."""
        student = self.student
        student.requires_grad_(False)
        groups = student.trainable_parameter_groups()
        chosen = {id(p) for part in self.args.enabled_parts() for p in groups[part] if p.numel() > 0}
        for parameter in student.parameters():
            if id(parameter) in chosen:
                parameter.requires_grad_(True)
        trainable = [name for name, p in student.named_parameters() if p.requires_grad]
        expected = [name for name, p in student.named_parameters() if id(p) in chosen]
        if trainable != expected or not trainable:
            raise RuntimeError(f"Trainable parameters {trainable} differ from the chosen parts {expected}.")
        return trainable

    def _build_teacher(self, teacher_model):
        from ..teacher import DenoisingTeacher, normalized_fill_value

        args = self.args
        self.fill_value = normalized_fill_value(
            self.image_processor.image_mean, self.image_processor.image_std, raw_value=args.fill_value
        )
        return DenoisingTeacher(
            teacher_model,
            num_views=args.num_views,
            shift_frac=args.shift_frac,
            fill_value=self.fill_value,
            flip_prob=args.flip_prob,
            max_views_per_forward=args.max_views_per_forward,
        )

    def _build_optimization(self) -> None:
        args, accelerator = self.args, self.accelerator
        trainable = [p for p in self.student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable,
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.weight_decay,
        )
        self.student, self.optimizer, self.train_dataloader = accelerator.prepare(
            self.student, self.optimizer, self.train_dataloader
        )
        # What the training forward calls: the prepared student, or (--torch_compile) its compiled wrapper; saving and
        # loading keep using the uncompiled `self.student` (compile.py).
        self.student_forward = compile_for_training(self.student, self.teacher_model, args.torch_compile)
        if args.streaming:
            self.steps_per_epoch = None
        else:
            self.steps_per_epoch = math.ceil(len(self.train_dataloader) / args.gradient_accumulation_steps)
            if self.steps_per_epoch == 0:
                raise ValueError(f"The training set {self.train_dir or args.dataset_name} holds no images.")
        if args.max_steps > 0:
            self.total_steps = args.max_steps
            self.num_epochs = (
                math.ceil(args.max_steps / self.steps_per_epoch) if self.steps_per_epoch else None
            )
        else:
            self.num_epochs = args.num_epochs
            self.total_steps = args.num_epochs * self.steps_per_epoch
        self.lr_schedule = ExponentialDecaySchedule(
            args.learning_rate, args.final_learning_rate, self.total_steps, self.steps_per_epoch
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, self.lr_schedule)
        self.lr_scheduler = accelerator.prepare(scheduler)

    def _open_teacher_cache(self) -> None:
        args, accelerator = self.args, self.accelerator
        self.teacher_cache = None
        if args.teacher_cache is None:
            return
        dataset_identity = self.dataset_identity
        fingerprint = build_fingerprint(
            teacher_hash=self.teacher_hash,
            resolution=self.resolution,
            num_views=args.num_views,
            shift_frac=args.shift_frac,
            flip_prob=args.flip_prob,
            fill_value=self.fill_value,
            seed=args.seed,
            image_mean=self.image_mean,
            image_std=self.image_std,
            dataset_identity=dataset_identity,
            storage_dtype=args.teacher_cache_dtype,
            crop_pipeline=self.distill_dataset.transform.pipeline,
        )
        # The main process writes the fingerprint of a new cache first; the others then find and check it.
        with accelerator.main_process_first():
            self.teacher_cache = TeacherTargetCache(
                args.teacher_cache,
                fingerprint,
                process_index=accelerator.process_index,
                storage_dtype=args.teacher_cache_dtype,
            )
        if not args.streaming:
            # The DataLoader (its workers, or this process with 0 workers) reads and verifies the cached targets of
            # each batch: a reader of its own, pickled into each worker. A streamed set is read on the main process
            # and dispatched by Accelerate, whose batches must keep one structure, so its targets are read here.
            self.distill_dataset.target_reader = CachedTargetReader(args.teacher_cache)
        if accelerator.is_main_process:
            num_patches = self.grid_size[0] * self.grid_size[1]
            size = num_patches * self.target_dim * STORAGE_DTYPES[args.teacher_cache_dtype].itemsize
            total = f"{size * self.num_train_images / 2**30:.2f} GiB" if self.num_train_images else "unknown"
            logger.info(
                f"Teacher cache {args.teacher_cache}: {len(self.teacher_cache)} targets cached, "
                f"{size / 2**20:.2f} MiB per image, {total} for the whole training set."
            )

    # ----------------------------------------------------------------------------------------------------------
    # Teacher targets and student tokens (the step loop is `step_loop.py`)
    @torch.no_grad()
    def compute_targets(
        self, pixel_values: torch.Tensor, indices: Sequence[int], epoch: int | None
    ) -> torch.Tensor:
        """Denoised targets `(B, N, C)` float32 for `(B, 3, R, R)` images (teacher under the run's autocast)."""
        from ..evaluate.artifacts import views_for_images

        views = views_for_images(self.teacher, indices, self.grid_size, self.args.seed, epoch)
        with self.accelerator.autocast():
            targets = self.teacher(pixel_values, views=views)
        self._teacher_images_in_step += len(indices)
        return targets.float()

    def student_patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, N, C)` final-normed student patch tokens, through the prepared (e.g. DDP) module's forward (compiled
        with --torch_compile)."""
        student = self.accelerator.unwrap_model(self.student)
        # Modules whose training mode is an augmentation of their own (DINOv3's RoPE jitters and rescales the patch
        # coordinates) run in eval mode, at every step: the teacher's targets are computed at the exact patch grid.
        for name in getattr(student, "eval_modules_during_distillation", ()):
            student.get_submodule(name).eval()
        if self.clip_dense_mode is not None:  # text-aligned value-path features, in projection space
            outputs = self.student_forward(
                pixel_values=pixel_values, return_dense_features=True, output_image_embeds=False
            )
            return outputs.dense_image_embeds
        outputs = self.student_forward(pixel_values=pixel_values)
        tokens = outputs.last_hidden_state[:, student.num_prefix_tokens :]
        return tokens if student.last_hidden_state_is_normed else student.final_norm(tokens)

    def train(self) -> dict:
        """Run the distillation; returns `{"settings": ..., "metrics": ...}` (also written to output_dir)."""
        args, accelerator, state = self.args, self.accelerator, self.state
        if args.report_to != "none":
            tracker_config = {
                k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in asdict(args).items()
            }
            accelerator.init_trackers(args.tracker_project_name, config=tracker_config)
        self._resume()
        self._log_start()
        train_start = time.perf_counter()
        self.student.train()
        progress = tqdm(
            total=self.total_steps,
            initial=state.global_step,
            desc="PH-Reg distillation",
            disable=not accelerator.is_local_main_process,
        )
        self._run_steps(progress)
        progress.close()
        self.train_runtime_s = time.perf_counter() - train_start
        if self.teacher_cache is not None:
            self.teacher_cache.flush()
        accelerator.wait_for_everyone()
        result = self.save_outputs()
        accelerator.end_training()
        if args.push_to_hub and accelerator.is_main_process:
            # After every process is done (no barrier left for the others to time out on during a long upload).
            # A failed upload is logged with the retry command; the saved run stays as it is.
            from ..hub.push import push_training_output

            result["hub_commit_url"] = push_training_output(
                self.output_dir,
                args.hub_model_id,
                private=args.hub_private,
                token=args.hub_token,
                license=args.hub_license,
            )
        return result

    def _log_start(self) -> None:
        args, accelerator = self.args, self.accelerator
        global_batch = (
            args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        )
        logger.info("***** PH-Reg distillation *****")
        # The demo's base is named by SYNTHETIC_BASE_NAME, which already says "not pretrained"; a synthetic model
        # given by path (--teacher FOLDER) is not, so it gets the note.
        synthetic_note = " (synthetic, not pretrained)" if self.is_synthetic and self.args.teacher else ""
        logger.info(f"  Base model = {self.base_model_id}{synthetic_note}")
        logger.info(
            f"  Training images = {self.num_train_images if self.num_train_images is not None else 'streamed'}"
        )
        logger.info(f"  Resolution = {self.resolution} ({self.grid_size[0]}x{self.grid_size[1]} patches)")
        logger.info(
            f"  Trainable parts = {args.enabled_parts()} ({self.num_trainable_parameters:,} parameters)"
        )
        logger.info(
            f"  Processes = {accelerator.num_processes}, mixed precision = {accelerator.mixed_precision}, "
            f"torch.compile = {'on' if args.torch_compile else 'off'}"
        )
        logger.info(
            f"  Global batch = {global_batch}, steps = {self.total_steps}, epochs = {self.num_epochs}"
        )

    @property
    def num_trainable_parameters(self) -> int:
        return sum(
            p.numel() for p in self.accelerator.unwrap_model(self.student).parameters() if p.requires_grad
        )
