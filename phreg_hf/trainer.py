"""PH-Reg distillation: `DistillArguments` (parsed with `HfArgumentParser`) and `DistillTrainer` (Accelerate).

The student (the base model plus registers, see `modeling_phreg.py`) learns to reproduce, on each training
image, the *denoised* patch features of the frozen base model (`teacher.py`): the average of the base model's
features over K shifted / flipped views, which keeps the image content and washes out position-locked
artifacts. Only the registers, position embeddings, patch-embedding projection and last block train
(each switchable); everything else is frozen and verified frozen. METHOD.md has the method and the reference
settings; where this file departs from the reference code, a comment says why.

Typical use (see `examples/distill.py`)::

    accelerate launch examples/distill.py --teacher facebook/dinov2-base --train_dir ./images \
        --output_dir ./dinov2-base-phreg

With no `--teacher`, a small random-init DINOv2 with planted artifacts (synthetic, see `synthetic.py`) is
distilled on natural sample images from scikit-image: an offline demo of the whole pipeline.

Steps, epochs and the learning rate (METHOD.md: AdamW, exponential decay per epoch to the final rate):

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

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoImageProcessor, PreTrainedModel

from . import clip_training, constants
from .modeling_phreg import TRAINABLE_PARTS, student_class_for, student_from_base
from .teacher_cache import (
    STORAGE_DTYPES,
    TeacherTargetCache,
    build_fingerprint,
    crop_seed_for,
    hash_model,
)

logger = get_logger(__name__)

# The offline demo's teacher: the default planted-artifact DINOv2 of `synthetic.py` (random init, NOT pretrained).
DEMO_TEACHER_KWARGS = dict(
    model_type="dinov2",
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=112,
    patch_size=14,
)
# How the settings JSON and the model card name a synthetic base (`synthetic.py`). Not a Hub id on purpose: a card
# must not link it to a Hub repository nor list it as base_model.
SYNTHETIC_BASE_NAME = "synthetic planted-artifact {model_type} (random init, not pretrained)"
# The demo holds out every other sample photo, cut into DEMO_TILES x DEMO_TILES tiles: more held-out images for
# the position-locked measure, whose floor is about 1 / number of images (20 photos would leave too few).
DEMO_TILES = 2
CHECKPOINT_PREFIX = "checkpoint-"
# The demo's synthetic base model (stock Dinov2Model + image processor), saved in output_dir for `phreg eval`.
DEMO_BASE_DIR = "demo_base"
# Reference resolutions (METHOD.md / reference code) when --resolution is not given.
REFERENCE_RESOLUTIONS = {"dinov2": 518, "clip_vision_model": 448, "clip": 448}
# Reference values of the options whose default depends on the model (CLIP dense runs: clip_training.py).
GENERIC_REFERENCE_SETTINGS = {
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-4,
    "final_learning_rate": 5e-6,
}


def _tensorboard_available() -> bool:
    return (
        importlib.util.find_spec("tensorboard") is not None
        or importlib.util.find_spec("tensorboardX") is not None
    )


def _multi_process_cpu_run() -> bool:
    """Several processes (torchrun, `accelerate launch --multi_gpu`) on a machine with no accelerator.

    Accelerate forms a (gloo) process group on CPU only when told to use the CPU; otherwise each process
    would train alone. `accelerate launch --cpu` sets this itself but starts a single process unless an
    MPI hostfile is configured.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    accelerators = [torch.cuda.is_available()]
    if hasattr(torch, "xpu"):
        accelerators.append(torch.xpu.is_available())
    if hasattr(torch.backends, "mps"):
        accelerators.append(torch.backends.mps.is_available())
    return not any(accelerators)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class DistillArguments:
    """Options of a PH-Reg distillation run (`HfArgumentParser(DistillArguments)`; `--help` lists them all)."""

    # ---- teacher / student
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of the base ViT / DINOv2 / CLIP (vision) model to add registers to, "
            "e.g. facebook/dinov2-base. Default: none, i.e. the offline demo with a small synthetic DINOv2 "
            "with planted artifacts (random init, not a pretrained model)."
        },
    )
    teacher_revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) of --teacher."}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel for teacher and student ('eager', 'sdpa', ...); default: the model's."
        },
    )
    num_register_tokens: int = field(
        default=16, metadata={"help": "Register tokens added to the student (PH-Reg reference: 16)."}
    )
    clip_dense_mode: Literal["naclip", "maskclip", "tokens"] | None = field(
        default=None,
        metadata={
            "help": "CLIP only. 'naclip' (default for full CLIP checkpoints, the paper's recipe): the student is a "
            "full PhregCLIPModel whose MaskCLIP value-path features learn the NACLIP teacher's in projection "
            "space, at the paper's CLIP settings (448 px, batch 16, lr 3e-4 -> 1e-5) unless overridden; "
            "'maskclip': the same with a MaskCLIP teacher; 'tokens' (default for vision-only towers): distill the "
            "vision tower's post-layernorm patch tokens (see phreg_hf/clip_training.py)."
        },
    )
    # ---- data
    train_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of training images (any PIL-readable format, subfolders included; via datasets' imagefolder)."
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub image dataset to train on instead of --train_dir, e.g. nlphuji/flickr30k."},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of --dataset_name."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    image_column: str = field(
        default="image", metadata={"help": "Column of the dataset that holds the images."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream --dataset_name / --train_dir instead of loading it first (needs --max_steps)."
        },
    )
    eval_images: str | None = field(
        default=None,
        metadata={
            "help": "Folder of held-out images for the final artifact measures (base / teacher / student). "
            "Default: the demo's held-out sample images, else the first training images (noted in the metrics)."
        },
    )
    num_eval_images: int = field(
        default=32, metadata={"help": "At most this many images are used for the final measures."}
    )
    num_preview_images: int = field(
        default=4,
        metadata={
            "help": "Before/after pictures of this many held-out images written to output_dir/previews/ (shown in "
            "the model card; needs matplotlib: pip install 'phreg-hf[viz]'); 0: none."
        },
    )
    resolution: int | None = field(
        default=None,
        metadata={
            "help": "Training side length R in pixels, a multiple of the patch size (short side resized to R, random "
            "R x R crop). Default: 518 for DINOv2 and 448 for CLIP (reference code), the config's image_size otherwise."
        },
    )
    dataloader_num_workers: int = field(
        default=0,
        metadata={
            "help": "Data loading worker processes per training process (0: load in the main process)."
        },
    )
    # ---- denoised teacher
    num_views: int = field(
        default=10, metadata={"help": "K shifted/flipped views averaged by the teacher (reference: 10)."}
    )
    shift_frac: float = field(
        default=0.15,
        metadata={"help": "Largest view shift as a fraction of the patch grid side (reference: 0.15)."},
    )
    flip_prob: float = field(
        default=0.5, metadata={"help": "Probability that a view (other than the first) is flipped."}
    )
    fill_value: float = field(
        default=1.0,
        metadata={
            "help": "Raw pixel value (0..1, before normalization) filling pixels shifted in (reference: 1.0, white)."
        },
    )
    max_views_per_forward: int | None = field(
        default=None,
        metadata={
            "help": "Cap on images x views per teacher forward pass, to bound memory (default: all at once)."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder caching the denoised targets (safetensors), so later epochs only run the student. With a "
            "cache each image keeps one fixed crop and one fixed set of views for the whole run."
        },
    )
    teacher_cache_dtype: Literal["float16", "bfloat16", "float32"] = field(
        default="float16", metadata={"help": "Storage precision of cached targets."}
    )
    # ---- what trains
    train_registers: bool = field(default=True, metadata={"help": "Train the register tokens."})
    train_position_embeddings: bool = field(default=True, metadata={"help": "Train the position embeddings."})
    train_patch_embeddings: bool = field(
        default=True, metadata={"help": "Train the patch-embedding projection (weight and bias)."}
    )
    train_last_block: bool = field(default=True, metadata={"help": "Train the last transformer block."})
    # ---- optimization
    num_epochs: int = field(
        default=10, metadata={"help": "Passes over the training images (ignored with --max_steps)."}
    )
    max_steps: int = field(
        default=-1,
        metadata={
            "help": "Optimizer steps to run; overrides --num_epochs when > 0 (needed with --streaming)."
        },
    )
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Images per process per micro-batch (default: the reference's 8; 16 for CLIP dense modes)."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "AdamW learning rate of the first epoch (default: the reference's 1e-4; 3e-4 for CLIP dense modes)."
        },
    )
    final_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the last epoch, reached by exponential decay (default: the reference's 5e-6; "
            "1e-5 for CLIP dense modes)."
        },
    )
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay (reference: 1e-2)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(
        default=0.0,
        metadata={"help": "Clip the gradient norm to this value; 0 disables (the reference does not clip)."},
    )
    mse_scale: float = field(
        default=1.0, metadata={"help": "Weight of the MSE term: loss = (1 - cosine) + mse_scale * MSE."}
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="auto",
        metadata={
            "help": "'auto': bf16 autocast on GPUs that support it (the reference setting), 'no' (fp32) otherwise."
        },
    )
    max_bad_steps: int = field(
        default=10,
        metadata={
            "help": "Stop with an error after this many consecutive steps skipped for NaN/inf loss or targets."
        },
    )
    seed: int = field(
        default=42,
        metadata={"help": "Seed of everything random: crops, views, order, registers (reference: 42)."},
    )
    # ---- output, checkpoints, logging
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the student, image processor, settings and metrics go. Default: ./phreg-demo for the demo."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Reuse a non-empty --output_dir, deleting its old checkpoints (the demo always does)."
        },
    )
    checkpointing_steps: int = field(
        default=500,
        metadata={
            "help": "Save a resumable checkpoint (output_dir/checkpoint-STEP) every this many steps; 0: never."
        },
    )
    checkpoints_total_limit: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many checkpoints (oldest deleted first); default: keep all."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint folder to resume from, or 'latest' for the newest in --output_dir."},
    )
    logging_steps: int = field(
        default=10, metadata={"help": "Log loss and learning rate every this many steps."}
    )
    report_to: str = field(
        default="tensorboard" if _tensorboard_available() else "none",
        metadata={
            "help": "Trackers for Accelerate ('tensorboard', 'wandb', 'all', or 'none'); default: tensorboard if installed."
        },
    )
    tracker_project_name: str = field(
        default="phreg", metadata={"help": "Project/run name given to the trackers."}
    )
    # ---- Hub
    push_to_hub: bool = field(
        default=False,
        metadata={
            "help": "At the end of training, upload the student with its model card to --hub_model_id (one commit, "
            "main process). A failed upload keeps --output_dir intact and prints the `phreg push` command to retry."
        },
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository 'namespace/name' for --push_to_hub."}
    )
    hub_private: bool = field(
        default=False, metadata={"help": "Create the --hub_model_id repository as private."}
    )
    hub_token: str | None = field(
        default=None,
        metadata={
            "help": "Hub token for --push_to_hub; default: the saved login (`hf auth login`) or HF_TOKEN."
        },
    )
    hub_license: str | None = field(
        default=None,
        metadata={
            "help": "License identifier of the model card (e.g. apache-2.0). Default: the base model's, read from "
            "its card; a push with an unknown license stops with a message asking for this option."
        },
    )

    def __post_init__(self) -> None:
        self.validate()

    @property
    def is_demo(self) -> bool:
        """No --teacher: the synthetic planted-artifact teacher (offline demo)."""
        return self.teacher is None

    def enabled_parts(self) -> list[str]:
        flags = {
            "registers": self.train_registers,
            "position_embeddings": self.train_position_embeddings,
            "patch_embeddings": self.train_patch_embeddings,
            "last_block": self.train_last_block,
        }
        return [part for part in TRAINABLE_PARTS if flags[part]]

    def resolve_defaults(self, clip_dense: bool) -> None:
        """Fill the options left at None with the reference values (METHOD.md), the CLIP ones for a CLIP dense run."""
        from .clip_training import CLIP_REFERENCE_SETTINGS

        defaults = CLIP_REFERENCE_SETTINGS if clip_dense else GENERIC_REFERENCE_SETTINGS
        for name in GENERIC_REFERENCE_SETTINGS:
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        self.validate()

    def validate(self) -> None:
        """Checks that need no model or data; raises ValueError / FileNotFoundError naming the fix."""
        if self.train_dir is not None and self.dataset_name is not None:
            raise ValueError(
                f"Pass either --train_dir ({self.train_dir}) or --dataset_name ({self.dataset_name}), not both."
            )
        if self.train_dir is None and self.dataset_name is None and not self.is_demo:
            raise ValueError(
                f"No training images for --teacher {self.teacher}: pass --train_dir FOLDER or --dataset_name NAME "
                "(leave out --teacher to run the offline demo on sample images)."
            )
        if self.dataset_config is not None and self.dataset_name is None:
            raise ValueError("--dataset_config needs --dataset_name.")
        if self.train_dir is not None and not Path(self.train_dir).is_dir():
            raise FileNotFoundError(f"--train_dir {self.train_dir} is not a folder; pass a folder of images.")
        if self.eval_images is not None and not Path(self.eval_images).is_dir():
            raise FileNotFoundError(
                f"--eval_images {self.eval_images} is not a folder; pass a folder of images."
            )
        positive_ints = {
            "num_views": self.num_views,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_bad_steps": self.max_bad_steps,
            "logging_steps": self.logging_steps,
            "num_eval_images": self.num_eval_images,
        }
        for name, value in positive_ints.items():
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")
        if self.num_register_tokens < 0:
            raise ValueError(
                f"--num_register_tokens must be >= 0, got {self.num_register_tokens} (reference: 16)."
            )
        if self.max_steps <= 0 and self.num_epochs < 1:
            raise ValueError(f"--num_epochs must be >= 1 (or set --max_steps > 0), got {self.num_epochs}.")
        if self.streaming and self.max_steps <= 0:
            raise ValueError("--streaming datasets have no known length: pass --max_steps N.")
        if not 0.0 <= self.shift_frac < 0.5:
            raise ValueError(f"--shift_frac must be in [0, 0.5), got {self.shift_frac} (reference: 0.15).")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"--flip_prob must be in [0, 1], got {self.flip_prob}.")
        if (self.learning_rate is not None and self.learning_rate <= 0) or (
            self.final_learning_rate is not None and self.final_learning_rate <= 0
        ):
            raise ValueError(
                f"--learning_rate ({self.learning_rate}) and --final_learning_rate ({self.final_learning_rate}) must "
                "be > 0; pass --final_learning_rate equal to --learning_rate for a constant rate."
            )
        if (
            None not in (self.learning_rate, self.final_learning_rate)
            and self.final_learning_rate > self.learning_rate
        ):
            raise ValueError(
                f"--final_learning_rate ({self.final_learning_rate}) is above --learning_rate ({self.learning_rate}); "
                "the schedule decays, so pass a final rate <= the initial one."
            )
        for name in (
            "weight_decay",
            "mse_scale",
            "max_grad_norm",
            "checkpointing_steps",
            "num_preview_images",
            "dataloader_num_workers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.resolution is not None and self.resolution <= 0:
            raise ValueError(f"--resolution must be > 0, got {self.resolution}.")
        if self.max_views_per_forward is not None and self.max_views_per_forward < 1:
            raise ValueError(f"--max_views_per_forward must be >= 1, got {self.max_views_per_forward}.")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"--checkpoints_total_limit must be >= 1, got {self.checkpoints_total_limit}.")
        parts = self.enabled_parts()
        if not parts:
            raise ValueError(
                "Every --train_* option is off, so nothing would train; keep at least one of --train_registers, "
                "--train_position_embeddings, --train_patch_embeddings, --train_last_block."
            )
        if parts == ["registers"] and self.num_register_tokens == 0:
            raise ValueError(
                "Only --train_registers is on but --num_register_tokens is 0: nothing would train."
            )
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(
                f"--mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}."
            )
        if self.output_dir is None and not self.is_demo:
            raise ValueError("Pass --output_dir: where the distilled student is saved.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(
                "--push_to_hub needs --hub_model_id NAMESPACE/NAME: the repository to upload to."
            )
        if self.hub_model_id is not None:
            from huggingface_hub.utils import validate_repo_id

            try:
                validate_repo_id(self.hub_model_id)
            except ValueError as error:
                raise ValueError(
                    f"--hub_model_id {self.hub_model_id!r} is not a valid Hub repository id ({error}); pass "
                    "'namespace/name', e.g. your-username/dinov2-base-phreg."
                ) from None


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
    """Counters saved with every checkpoint (`accelerator.register_for_checkpointing`)."""

    def __init__(self):
        self.global_step = 0  # optimizer steps done (skipped ones included)
        self.epoch = 0  # current epoch
        self.batches_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.skipped_steps = 0
        self.consecutive_bad_steps = 0
        self.skipped_images = 0  # unreadable images met (once per epoch per file)
        self.images_seen = 0
        self.teacher_images = 0  # images the teacher was run on

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def _atomic_write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _atomic_save(save_fn, output_dir: Path) -> list[str]:
    """Run `save_fn(tmp_dir)` and move every file it wrote into `output_dir` by rename (no partial files)."""
    tmp = output_dir / f".tmp-save-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        save_fn(tmp)
        names = sorted(os.listdir(tmp))
        for name in names:
            target = output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _folder_listing_hash(folder: str | os.PathLike) -> str:
    """sha256 of the relative paths and sizes of every file under `folder`: which images a cache was built on.

    Sizes rather than modification times, so that re-writing the same images (the demo does) keeps the cache;
    an image edited in place to the very same size goes unnoticed (delete the cache then).
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-STEP` folders of `output_dir`, oldest first (unfinished `.tmp` ones excluded)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def build_demo_teacher() -> PreTrainedModel:
    """The demo's synthetic teacher: a random-init DINOv2 with planted artifacts (see `synthetic.py`)."""
    from .synthetic import build_planted_artifact_model

    return build_planted_artifact_model(**DEMO_TEACHER_KWARGS)


def build_demo_image_processor(resolution: int):
    """A DINOv2-style (`BitImageProcessor`) processor: short side to R, R x R center crop, ImageNet mean/std."""
    import transformers
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    # Without torchvision, transformers 5 falls back to (and warns about) the PIL backend; pick it directly.
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "BitImageProcessorPil"):
        processor_class = transformers.BitImageProcessorPil
    else:
        processor_class = transformers.BitImageProcessor
    return processor_class(
        do_resize=True,
        size={"shortest_edge": resolution},
        resample=3,  # bicubic, as DINOv2's own processor
        do_center_crop=True,
        crop_size={"height": resolution, "width": resolution},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
        do_convert_rgb=True,
    )


def write_demo_images(root: str | os.PathLike) -> tuple[Path, Path]:
    """Write the demo's images under `root`: `train/` and `heldout/` (replaced if present).

    scikit-image's natural sample photos (shipped with the package, no download): the even-numbered ones
    train, the odd-numbered ones are held out, each cut into `DEMO_TILES` x `DEMO_TILES` tiles.
    """
    from PIL import Image

    from . import data

    root = Path(root)
    train_dir, heldout_dir = root / "train", root / "heldout"
    shutil.rmtree(root, ignore_errors=True)
    staging = root / "all"
    written = [Path(p) for p in data.write_sample_images(staging)]
    train_dir.mkdir(parents=True)
    heldout_dir.mkdir(parents=True)
    for i, path in enumerate(written):
        if i % 2 == 0:
            os.replace(path, train_dir / path.name)
            continue
        with Image.open(path) as image:
            width, height = image.size
            for row in range(DEMO_TILES):
                for col in range(DEMO_TILES):
                    box = (
                        col * width // DEMO_TILES,
                        row * height // DEMO_TILES,
                        (col + 1) * width // DEMO_TILES,
                        (row + 1) * height // DEMO_TILES,
                    )
                    image.crop(box).save(heldout_dir / f"{path.stem}_tile{row}{col}.png")
    shutil.rmtree(staging)
    return train_dir, heldout_dir


def distillation_loss(
    student_tokens: torch.Tensor, targets: torch.Tensor, mse_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PH-Reg loss on final-normed patch tokens: `(1 - mean cosine) + mse_scale * MSE` (METHOD.md).

    Args:
        student_tokens: `(B, N, C)` student patch tokens (any float dtype; computed in float32).
        targets: `(B, N, C)` denoised teacher targets.

    Returns:
        `(loss, mean cosine, mse)`, scalars.
    """
    student_tokens = student_tokens.float()
    targets = targets.float()
    cosine = F.cosine_similarity(student_tokens, targets, dim=-1).mean()
    mse = F.mse_loss(student_tokens, targets)
    return (1.0 - cosine) + mse_scale * mse, cosine, mse


class DistillTrainer:
    """The PH-Reg distillation loop on `accelerate.Accelerator`.

    Args:
        args: the run's `DistillArguments`.
        base_model: optionally an already loaded stock ViT / DINOv2 / CLIP model to distill instead of loading
            `args.teacher` (for notebooks and tests); recorded by its `name_or_path`.
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
            cpu=_multi_process_cpu_run(),
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=self._resolve_mixed_precision(),
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "runs")
            ),
            # A sampler seeded by (seed, epoch): the same order after a resume, whatever happened before.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
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
        self.state = _TrainingState()
        self.accelerator.register_for_checkpointing(self.state)
        self._open_teacher_cache()

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
        args, accelerator = self.args, self.accelerator
        existing = list_checkpoints(self.output_dir)
        saved_model = (self.output_dir / "config.json").exists()
        overwrite = args.overwrite_output_dir or (args.is_demo and args.output_dir is None)
        if (existing or saved_model) and args.resume_from_checkpoint is None and not overwrite:
            raise ValueError(
                f"--output_dir {self.output_dir} already holds a run ({len(existing)} checkpoints"
                f"{', a saved model' if saved_model else ''}). Pass --resume_from_checkpoint latest to continue it, "
                "--overwrite_output_dir to start over there, or another --output_dir."
            )
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if overwrite and args.resume_from_checkpoint is None:
                for checkpoint in existing:
                    shutil.rmtree(checkpoint)
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
            # Load only the vision tower's stock class (e.g. CLIPVisionModel from a full CLIP checkpoint), or the
            # whole CLIPModel when the run distills CLIP's text-aligned dense features (clip_training.py).
            model_type = AutoConfig.from_pretrained(args.teacher, revision=args.teacher_revision).model_type
            base_class = (
                clip_training.base_class_for(model_type, args.clip_dense_mode)
                or (student_class_for(model_type).base_model_classes[0])
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

        # Student and teacher both start as exact copies of the base (METHOD.md). The teacher is a 0-register
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
            # METHOD.md: the position embeddings are resized once to the training grid, and that table trains.
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
        from .teacher import DenoisingTeacher, normalized_fill_value

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

    def _build_data(self) -> None:
        from . import data

        args, accelerator = self.args, self.accelerator
        self.demo_images_note = None
        train_dir, eval_dir = args.train_dir, args.eval_images
        if args.is_demo and args.train_dir is None and args.dataset_name is None:
            train_dir, eval_dir = self._write_demo_images(eval_dir)
        self.train_dir = train_dir
        self.eval_dir = eval_dir
        with accelerator.main_process_first():
            self.train_dataset = data.load_image_dataset(
                train_dir=train_dir,
                dataset_name=args.dataset_name,
                dataset_config=args.dataset_config,
                image_column=args.image_column,
                split=args.dataset_split,
                streaming=args.streaming,
            )
        transform = data.ImageTransform.from_image_processor(
            self.image_processor, self.resolution, random_crop=True
        )
        self.image_mean, self.image_std = list(transform.image_mean), list(transform.image_std)
        self.distill_dataset = self._wrap_dataset(self.train_dataset, transform)
        self.num_train_images = None if args.streaming else len(self.train_dataset)
        self.train_dataloader = DataLoader(
            self.distill_dataset,
            batch_size=args.per_device_train_batch_size,
            shuffle=not args.streaming,
            collate_fn=data.collate_skipping_corrupt,
            num_workers=args.dataloader_num_workers,
            # Keep every image: a short last batch still trains (with 8 images per batch and few images, dropping
            # it would waste a large share of a small dataset).
            drop_last=False,
        )

    def _wrap_dataset(self, dataset, transform):
        from . import data

        args = self.args
        # With a teacher cache each image keeps one crop for the whole run (the one its target was computed on).
        crop_seed_fn = functools.partial(crop_seed_for, args.seed) if args.teacher_cache else None
        dataset_class = data.IterableDistillImageDataset if args.streaming else data.DistillImageDataset
        return dataset_class(
            dataset, transform, image_column=args.image_column, seed=args.seed, crop_seed_fn=crop_seed_fn
        )

    def _write_demo_images(self, eval_dir):
        """The demo's images (see `write_demo_images`), written by the main process into output_dir."""
        root = self.output_dir / "demo_images"
        if self.accelerator.is_main_process:
            write_demo_images(root)
        self.accelerator.wait_for_everyone()
        train_dir, heldout_dir = root / "train", root / "heldout"
        self.demo_images_note = (
            f"scikit-image's sample photos: {len(os.listdir(train_dir))} train, the other "
            f"{len(os.listdir(heldout_dir)) // DEMO_TILES**2} held out as {len(os.listdir(heldout_dir))} tiles"
        )
        return str(train_dir), (eval_dir if eval_dir is not None else str(heldout_dir))

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
        if args.streaming:
            dataset_identity = {
                "dataset_name": args.dataset_name,
                "dataset_config": args.dataset_config,
                "split": args.dataset_split,
                "train_dir": str(Path(self.train_dir).resolve()) if self.train_dir else None,
                "image_column": args.image_column,
            }
        elif self.train_dir is not None:
            dataset_identity = {
                "train_dir": str(Path(self.train_dir).resolve()),
                "num_images": self.num_train_images,
                "files": _folder_listing_hash(self.train_dir),
            }
        else:
            dataset_identity = {
                "dataset_name": args.dataset_name,
                "dataset_config": args.dataset_config,
                "split": args.dataset_split,
                "image_column": args.image_column,
                "num_images": self.num_train_images,
                # datasets' fingerprint of a Hub dataset follows its data files (revision).
                "fingerprint": getattr(self.train_dataset, "_fingerprint", None),
            }
        fingerprint = build_fingerprint(
            teacher_hash=hash_model(self.teacher_model),
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
        )
        # The main process writes the fingerprint of a new cache first; the others then find and check it.
        with accelerator.main_process_first():
            self.teacher_cache = TeacherTargetCache(
                args.teacher_cache,
                fingerprint,
                process_index=accelerator.process_index,
                storage_dtype=args.teacher_cache_dtype,
            )
        if accelerator.is_main_process:
            num_patches = self.grid_size[0] * self.grid_size[1]
            size = num_patches * self.target_dim * STORAGE_DTYPES[args.teacher_cache_dtype].itemsize
            total = f"{size * self.num_train_images / 2**30:.2f} GiB" if self.num_train_images else "unknown"
            logger.info(
                f"Teacher cache {args.teacher_cache}: {len(self.teacher_cache)} targets cached, "
                f"{size / 2**20:.2f} MiB per image, {total} for the whole training set."
            )

    # ----------------------------------------------------------------------------------------------------------
    # Teacher targets
    @torch.no_grad()
    def compute_targets(
        self, pixel_values: torch.Tensor, indices: Sequence[int], epoch: int | None
    ) -> torch.Tensor:
        """Denoised targets `(B, N, C)` float32 for `(B, 3, R, R)` images (teacher under the run's autocast)."""
        from .evaluation import views_for_images

        views = views_for_images(self.teacher, indices, self.grid_size, self.args.seed, epoch)
        with self.accelerator.autocast():
            targets = self.teacher(pixel_values, views=views)
        self.state.teacher_images += len(indices)
        return targets.float()

    def targets_for_batch(self, pixel_values: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """Targets of a training batch: from the cache (computed once per image), or recomputed every time."""
        indices = [int(i) for i in indices]
        if self.teacher_cache is None:
            return self.compute_targets(pixel_values, indices, epoch=self.state.epoch)
        crop_seeds = [crop_seed_for(self.args.seed, i) for i in indices]
        targets, _ = self.teacher_cache.get_or_compute(
            indices, pixel_values, lambda pv, idx: self.compute_targets(pv, idx, epoch=None), crop_seeds
        )
        return targets

    def student_patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, N, C)` final-normed student patch tokens, through the prepared (e.g. DDP) module's forward."""
        student = self.accelerator.unwrap_model(self.student)
        if self.clip_dense_mode is not None:  # text-aligned value-path features, in projection space
            outputs = self.student(
                pixel_values=pixel_values, return_dense_features=True, output_image_embeds=False
            )
            return outputs.dense_image_embeds
        outputs = self.student(pixel_values=pixel_values)
        tokens = outputs.last_hidden_state[:, student.num_prefix_tokens :]
        return tokens if student.last_hidden_state_is_normed else student.final_norm(tokens)

    # ----------------------------------------------------------------------------------------------------------
    # Training
    def _resume(self) -> None:
        args, accelerator = self.args, self.accelerator
        if args.resume_from_checkpoint is None:
            return
        if args.resume_from_checkpoint == "latest":
            checkpoints = list_checkpoints(self.output_dir)
            if not checkpoints:
                logger.warning(
                    f"--resume_from_checkpoint latest: no checkpoint in {self.output_dir}; starting anew."
                )
                return
            path = checkpoints[-1]
        else:
            path = Path(args.resume_from_checkpoint)
            if not path.is_dir():
                raise FileNotFoundError(
                    f"--resume_from_checkpoint {path} is not a folder; pass a {CHECKPOINT_PREFIX}STEP folder or 'latest'."
                )
        accelerator.load_state(str(path))
        logger.info(
            f"Resumed from {path}: step {self.state.global_step}, epoch {self.state.epoch}, "
            f"{self.state.batches_in_epoch} micro-batches into it."
        )

    def save_checkpoint(self) -> Path:
        """`save_state` into output_dir/checkpoint-STEP, atomically (written under a temporary name, renamed)."""
        accelerator = self.accelerator
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        tmp = self.output_dir / f"{final.name}.tmp"
        if self.teacher_cache is not None:
            self.teacher_cache.flush()
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            limit = self.args.checkpoints_total_limit
            if limit is not None:
                for old in list_checkpoints(self.output_dir)[:-limit]:
                    shutil.rmtree(old)
            logger.info(f"Saved checkpoint {final}")
        accelerator.wait_for_everyone()
        return final

    def _micro_step(self, batch) -> torch.Tensor:
        """Forward one micro-batch; returns the per-process stats to be summed over processes.

        Stats: `[bad, empty, skipped_images, batch_size, loss*B, cosine*B, mse*B]`; the loss itself is kept in
        `self._pending_loss` for `backward` once all processes agreed the step is sound.
        """
        pixel_values, indices = batch["pixel_values"], batch["index"]
        batch_size = pixel_values.shape[0]
        stats = torch.zeros(7, dtype=torch.float64, device=self.accelerator.device)
        stats[2], stats[3] = float(batch.get("num_skipped", 0)), float(batch_size)
        self._pending_loss = None
        if batch_size == 0:
            stats[1] = 1.0
            return stats
        targets = self.targets_for_batch(pixel_values, indices.tolist())
        with self.accelerator.autocast():
            tokens = self.student_patch_tokens(pixel_values)
        loss, cosine, mse = distillation_loss(tokens, targets, self.args.mse_scale)
        bad = not (torch.isfinite(targets).all() and torch.isfinite(loss))
        stats[0] = float(bad)
        if not bad:
            stats[4:] = torch.stack([loss.detach(), cosine.detach(), mse.detach()]).double() * batch_size
        self._pending_loss = loss
        return stats

    def _backward_empty(self) -> None:
        """A process whose micro-batch lost every image to decoding errors still joins the gradient sync
        (DDP needs every process in each backward) with a zero loss on a blank image."""
        blank = torch.zeros(1, 3, self.resolution, self.resolution, device=self.accelerator.device)
        with self.accelerator.autocast():
            tokens = self.student_patch_tokens(blank)
        self.accelerator.backward(tokens.float().sum() * 0.0)

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
        window_bad = False
        running = torch.zeros(4, dtype=torch.float64)  # images, loss*B, cosine*B, mse*B since the last log
        while state.global_step < self.total_steps:
            self._set_epoch(state.epoch)
            dataloader = self.train_dataloader
            if state.batches_in_epoch:
                dataloader = accelerator.skip_first_batches(dataloader, state.batches_in_epoch)
            for batch in dataloader:
                with accelerator.accumulate(self.student):
                    stats = accelerator.reduce(self._micro_step(batch), reduction="sum")
                    all_empty = stats[1].item() >= accelerator.num_processes
                    window_bad = window_bad or stats[0].item() > 0
                    if not window_bad and not all_empty:
                        if self._pending_loss is None:
                            self._backward_empty()
                        else:
                            accelerator.backward(self._pending_loss)
                    self._pending_loss = None
                    state.batches_in_epoch += 1
                    state.skipped_images += int(stats[2].item())
                    state.images_seen += int(stats[3].item())
                    if not window_bad:
                        running += stats[3:].cpu()
                    if not accelerator.sync_gradients:
                        continue
                    # End of an accumulation window: one optimizer step (unless the window went bad).
                    if window_bad:
                        self._record_bad_step(stats)
                    else:
                        state.consecutive_bad_steps = 0
                        if args.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(self.student.parameters(), args.max_grad_norm)
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.lr_scheduler.step()
                    window_bad = False
                state.global_step += 1
                progress.update(1)
                if state.global_step % args.logging_steps == 0 or state.global_step == self.total_steps:
                    self._log_progress(running, progress)
                    running.zero_()
                if args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0:
                    self.save_checkpoint()
                if state.global_step >= self.total_steps:
                    break
            else:
                # The epoch ran out (not stopped by max_steps): next epoch.
                self._end_epoch()
                continue
            break
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
            from .hub import push_training_output

            result["hub_commit_url"] = push_training_output(
                self.output_dir,
                args.hub_model_id,
                private=args.hub_private,
                token=args.hub_token,
                license=args.hub_license,
            )
        return result

    def _set_epoch(self, epoch: int) -> None:
        # Order (seedable sampler) and crops/views (dataset) are functions of (seed, epoch, index), so a resumed
        # run sees exactly what an uninterrupted one would.
        self.train_dataloader.set_epoch(epoch)
        if hasattr(self.distill_dataset, "set_epoch"):
            self.distill_dataset.set_epoch(epoch)

    def _end_epoch(self) -> None:
        state = self.state
        if self.teacher_cache is not None:
            # Make this epoch's targets visible to every process before the next epoch reshuffles the images.
            self.teacher_cache.flush()
            self.accelerator.wait_for_everyone()
            self.teacher_cache.refresh()
        # Short epochs (a handful of images) would flood the log.
        short = self.steps_per_epoch is not None and self.steps_per_epoch < self.args.logging_steps
        (logger.debug if short else logger.info)(
            f"Epoch {state.epoch} done at step {state.global_step}; {state.skipped_images} unreadable images "
            f"skipped so far, {state.skipped_steps} steps skipped."
        )
        state.epoch += 1
        state.batches_in_epoch = 0

    def _record_bad_step(self, stats: torch.Tensor) -> None:
        state = self.state
        state.skipped_steps += 1
        state.consecutive_bad_steps += 1
        logger.warning(
            f"Step {state.global_step}: NaN/inf in the loss or the teacher targets; step skipped (no update). "
            f"{state.skipped_steps} skipped so far, {state.consecutive_bad_steps} in a row."
        )
        if state.consecutive_bad_steps >= self.args.max_bad_steps:
            last = list_checkpoints(self.output_dir)
            raise RuntimeError(
                f"{state.consecutive_bad_steps} consecutive steps had NaN/inf loss or teacher targets (at step "
                f"{state.global_step}, epoch {state.epoch}; --max_bad_steps {self.args.max_bad_steps}). Training "
                "stopped. Try a lower --learning_rate, --mixed_precision no, or check the images. "
                + (f"The last checkpoint is {last[-1]}." if last else "No checkpoint was saved.")
            )

    def _log_start(self) -> None:
        args, accelerator = self.args, self.accelerator
        global_batch = (
            args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        )
        logger.info("***** PH-Reg distillation *****")
        logger.info(
            f"  Base model = {self.base_model_id}{' (synthetic, not pretrained)' if self.is_synthetic else ''}"
        )
        logger.info(
            f"  Training images = {self.num_train_images if self.num_train_images is not None else 'streamed'}"
        )
        logger.info(f"  Resolution = {self.resolution} ({self.grid_size[0]}x{self.grid_size[1]} patches)")
        logger.info(
            f"  Trainable parts = {args.enabled_parts()} ({self.num_trainable_parameters:,} parameters)"
        )
        logger.info(
            f"  Processes = {accelerator.num_processes}, mixed precision = {accelerator.mixed_precision}"
        )
        logger.info(
            f"  Global batch = {global_batch}, steps = {self.total_steps}, epochs = {self.num_epochs}"
        )

    @property
    def num_trainable_parameters(self) -> int:
        return sum(
            p.numel() for p in self.accelerator.unwrap_model(self.student).parameters() if p.requires_grad
        )

    def _log_progress(self, running: torch.Tensor, progress) -> None:
        state = self.state
        images = max(running[0].item(), 1.0)
        logs = {
            "train/loss": running[1].item() / images,
            "train/cosine": running[2].item() / images,
            "train/mse": running[3].item() / images,
            "train/lr": self.lr_scheduler.get_last_lr()[0],
            "train/epoch": state.epoch,
            "train/skipped_steps": state.skipped_steps,
            "train/skipped_images": state.skipped_images,
        }
        if running[0].item() == 0:
            logs = {k: v for k, v in logs.items() if k not in ("train/loss", "train/cosine", "train/mse")}
        self.accelerator.log(logs, step=state.global_step)
        progress.set_postfix({k.split("/")[1]: f"{v:.4g}" for k, v in logs.items() if k != "train/epoch"})
        logger.info(
            f"step {state.global_step}: " + ", ".join(f"{k.split('/')[1]}={v:.5g}" for k, v in logs.items())
        )

    # ----------------------------------------------------------------------------------------------------------
    # Final measures and outputs
    def _eval_pixel_values(self) -> tuple[torch.Tensor, list[int], str]:
        """Center-cropped held-out images `(n, 3, R, R)`, their indices, and a description of them."""
        from . import data

        args = self.args
        transform = data.ImageTransform.from_image_processor(
            self.image_processor, self.resolution, random_crop=False
        )
        if self.eval_dir is not None:
            from .evaluation import load_images  # the folder reader of `phreg eval`

            loaded = load_images(self.eval_dir, transform, args.num_eval_images, option="--eval_images")
            count = len(loaded.indices)
            if self.demo_images_note is not None and args.eval_images is None:
                description = f"{count} held-out images, center-cropped: {self.demo_images_note}"
            else:
                description = f"{count} held-out images from {self.eval_dir}, center-cropped"
            return loaded.pixel_values, loaded.indices, description

        dataset_class = data.IterableDistillImageDataset if args.streaming else data.DistillImageDataset
        dataset = dataset_class(self.train_dataset, transform, image_column=args.image_column)
        items = []
        iterator = iter(dataset) if args.streaming else (dataset[i] for i in range(len(dataset)))
        for item in iterator:
            if item is not None:
                items.append(item)
            if len(items) >= args.num_eval_images:
                break
        if not items:
            raise ValueError("No readable image for the final measures in the training set.")
        description = (
            f"{len(items)} of the training images, center-cropped (no held-out images were given, so these "
            "measures are not held out; pass --eval_images FOLDER for held-out ones)"
        )
        return (
            torch.stack([item["pixel_values"] for item in items]),
            [int(i["index"]) for i in items],
            description,
        )

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Artifact measures of base, denoised teacher and student on held-out images (`evaluation.py`).

        Returns the `constants.METRICS_FILE` payload: `{"num_images", "resolution", "images", "rows": {"base",
        "teacher", "student"}}`, the same as `phreg eval` computes. The teacher views are seeded per image with
        seed + 1 (independent of training), the images center-cropped, so base/teacher rows are comparable
        across runs. Also writes `output_dir/previews/*.png` (see `--num_preview_images`).
        """
        from .evaluation import measure_artifacts

        args, accelerator = self.args, self.accelerator
        student = accelerator.unwrap_model(self.student)
        pixel_values, indices, description = self._eval_pixel_values()
        common = dict(
            indices=indices,
            view_seed=args.seed + 1,  # views for the measures, distinct from any training draw
            batch_size=args.per_device_train_batch_size,
            device=accelerator.device,
            autocast=accelerator.autocast,
        )
        metrics = measure_artifacts(
            self.teacher_model, student, pixel_values, self.teacher, images=description, **common
        )
        if self.clip_dense_mode is not None:
            # How far the image-level embedding (classification, retrieval) drifted from the base CLIP's.
            metrics["clip_image_feature_cosine"] = clip_training.image_feature_cosine(
                self.teacher_model.clip, student, pixel_values.to(accelerator.device)
            )
        if args.num_preview_images > 0:
            self._write_previews(student, pixel_values, common)
        return metrics

    def _write_previews(self, student, pixel_values: torch.Tensor, common: dict) -> None:
        try:
            from .visualization import write_previews

            paths = write_previews(
                self.output_dir,
                self.teacher_model,
                student,
                self.teacher,
                pixel_values,
                self.image_mean,
                self.image_std,
                max_images=self.args.num_preview_images,
                **common,
            )
        except ImportError as error:
            logger.warning(f"No preview pictures: {error} (or pass --num_preview_images 0 to skip them).")
            return
        logger.info(f"Wrote {len(paths)} preview pictures to {paths[0].parent}")

    def hardware(self) -> str:
        n = self.accelerator.num_processes
        device = self.accelerator.device
        if device.type == "cuda":
            return f"{n} x {torch.cuda.get_device_name(device)}"
        if device.type == "cpu":
            return f"{n} x CPU process ({platform.machine()}, {os.cpu_count()} cores on the machine)"
        return f"{n} x {device.type}"

    def _license(self) -> str | None:
        """The student's license: --hub_license, else the base model's (its card's metadata), else unknown.

        The synthetic demo model is random weights made by this library, so it carries the library's license.
        """
        if self.args.hub_license:
            return self.args.hub_license
        if self.is_synthetic:
            return "apache-2.0"
        from .hub import base_model_license

        return base_model_license(self.base_model_id, self.args.hub_token)

    def training_settings(self) -> dict:
        """The `constants.TRAINING_SETTINGS_FILE` payload (read by the model card and `phreg eval`)."""
        from . import __version__

        args, state, accelerator = self.args, self.state, self.accelerator
        student = accelerator.unwrap_model(self.student)
        # Field names as the model card (hub.py) reads them.
        dataset = {
            "name": args.dataset_name,
            "config": args.dataset_config,
            "split": args.dataset_split if args.dataset_name else None,
            "train_dir": str(self.train_dir) if self.train_dir is not None else None,
            "image_column": args.image_column,
            "streaming": args.streaming,
            "num_images": self.num_train_images,
        }
        if self.demo_images_note:
            dataset["description"] = self.demo_images_note
        cache = None
        if self.teacher_cache is not None:
            cache = {
                "dir": str(args.teacher_cache),
                "dtype": args.teacher_cache_dtype,
                "hits": self.teacher_cache.hits,
                "misses": self.teacher_cache.misses,
                "note": "crops and views fixed per image for the whole run (computed once, reused every epoch)",
            }
        return {
            "base_model": self.base_model_id,
            "base_model_synthetic": self.synthetic_info,
            "license": self._license(),
            "model_type": student.config.model_type,
            "base_model_type": self.model_type,
            "student_class": type(student).__name__,
            "clip_dense_mode": self.clip_dense_mode,  # CLIP: teacher path (naclip / maskclip), None otherwise
            "num_register_tokens": args.num_register_tokens,
            "trainable_parts": args.enabled_parts(),
            "num_trainable_parameters": self.num_trainable_parameters,
            "dataset": dataset,
            "resolution": self.resolution,
            "patch_grid": list(self.grid_size),
            "num_views": args.num_views,
            "shift_frac": args.shift_frac,
            "flip_prob": args.flip_prob,
            "fill_value": args.fill_value,
            "loss": "(1 - mean cosine) + mse_scale * MSE on final-normed patch tokens",
            "mse_scale": args.mse_scale,
            "learning_rate": args.learning_rate,
            "final_learning_rate": args.final_learning_rate,
            "weight_decay": args.weight_decay,
            "optimizer": {
                "name": "AdamW",
                "betas": [args.adam_beta1, args.adam_beta2],
                "max_grad_norm": args.max_grad_norm,
                "schedule": "exponential decay "
                + ("per epoch" if self.lr_schedule.per_epoch else "per step"),
            },
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": args.per_device_train_batch_size
            * accelerator.num_processes
            * args.gradient_accumulation_steps,
            "num_processes": accelerator.num_processes,
            "global_steps": state.global_step,
            "optimizer_steps": state.global_step - state.skipped_steps,
            "epochs": round(state.global_step / self.steps_per_epoch, 3) if self.steps_per_epoch else None,
            "images_seen": state.images_seen,
            "teacher_images": state.teacher_images,
            "teacher_cache": cache,
            "mixed_precision": accelerator.mixed_precision,
            "hardware": self.hardware(),
            "train_runtime_s": round(self.train_runtime_s, 3),
            # Unreadable files met during training, counted each time (so once per epoch per file).
            "skipped_images": state.skipped_images,
            "skipped_steps": state.skipped_steps,
            "versions": {
                "phreg_hf": __version__,
                "transformers": _version("transformers"),
                "torch": torch.__version__,
                "accelerate": _version("accelerate"),
                "datasets": _version("datasets"),
            },
            "args": asdict(args),
        }

    def save_outputs(self) -> dict:
        """Main process: student + image processor (`save_pretrained`), settings and metrics JSONs, atomically."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            student = accelerator.unwrap_model(self.student)

            def save(folder: Path) -> None:
                if self.clip_dense_mode is not None:  # CLIP: the segmentation pipeline travels with it
                    clip_training.save_student(student, self.processor or self.image_processor, folder)
                    return
                student.save_pretrained(folder, safe_serialization=True)
                self.image_processor.save_pretrained(folder)

            _atomic_save(save, self.output_dir)
            if self.demo_base is not None:
                demo_base_dir = self.output_dir / DEMO_BASE_DIR
                self.demo_base.save_pretrained(demo_base_dir)
                self.image_processor.save_pretrained(demo_base_dir)
            metrics = self.evaluate()
            _atomic_write_json(self.output_dir / constants.METRICS_FILE, metrics)
            _atomic_write_json(self.output_dir / constants.TRAINING_SETTINGS_FILE, self.training_settings())
            logger.info(f"Saved the student, image processor, settings and metrics to {self.output_dir}")
        accelerator.wait_for_everyone()
        return {
            "settings": json.loads((self.output_dir / constants.TRAINING_SETTINGS_FILE).read_text()),
            "metrics": json.loads((self.output_dir / constants.METRICS_FILE).read_text()),
        }
