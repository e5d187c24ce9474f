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
"""`DistillArguments`: every option of a PH-Reg distillation run, parsed with `HfArgumentParser`.

Checks that need no model or data run in `validate()` (at construction), so a bad command line fails before
any model is loaded. The trainer (`trainer.py`) reads these; the model card reads them back from the run's
settings JSON.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..constants import DEFAULT_EVAL_IMAGES
from ..models.modeling_phreg import TRAINABLE_PARTS
from .compile import check_torch_compile

# Reference values of the options whose default depends on the model (CLIP dense runs: clip_training.py).
GENERIC_REFERENCE_SETTINGS = {
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-4,
    "final_learning_rate": 5e-6,
}
# Resolutions (by the base's model_type) when --resolution is not given: DINOv2 and CLIP from docs/method.md / the
# reference code; DINOv3 our choice (512 px, a 32 x 32 grid, near DINOv2's 37 x 37 at fewer tokens; its RoPE was
# trained across resolutions). Any other backbone (ViT; SigLIP, whose position table was trained at one grid) trains
# at its config's image_size.
REFERENCE_RESOLUTIONS = {
    "dinov2": 518,
    "dinov2_with_registers": 518,
    "clip_vision_model": 448,
    "clip": 448,
    "dinov3_vit": 512,
}
# The settings a run takes per backbone when they are not given, and where each comes from (in --help's epilog;
# the CLIP dense values are `clip_training.CLIP_REFERENCE_SETTINGS`).
REFERENCE_SETTINGS_TEXT = (
    "Settings per backbone when not given (resolution; batch; learning rate -> final): DINOv2, with or without "
    "registers: 518; 8; 1e-4 -> 5e-6 (PH-Reg reference code). CLIP dense modes (naclip, maskclip): 448; 16; "
    "3e-4 -> 1e-5 (reference code). CLIP vision tower, tokens mode: 448 (reference code); 8; 1e-4 -> 5e-6 (the "
    "DINOv2 values, our choice). DINOv3 ViT: 512, a 32 x 32 grid near DINOv2's 37 x 37 at fewer tokens; 8; "
    "1e-4 -> 5e-6 (all our choice). SigLIP and SigLIP 2 (fixed resolution): the checkpoint's image_size, the one "
    "grid its position table was trained at; 8; 1e-4 -> 5e-6 (all our choice). ViT: the config's image_size; 8; "
    "1e-4 -> 5e-6 (our choice)."
)


def _tensorboard_available() -> bool:
    return (
        importlib.util.find_spec("tensorboard") is not None
        or importlib.util.find_spec("tensorboardX") is not None
    )


def _looks_like_local_path(name: str) -> bool:
    """A name that can only mean a local folder (not a Hub id 'namespace/name')."""
    path = Path(name).expanduser()
    return (
        name.startswith((".", "/", "~"))
        or path.is_absolute()
        or "\\" in name
        or name.count("/") > 1
        or (path.parent != Path(".") and path.parent.is_dir())
    )


@dataclass
class DistillArguments:
    """Options of a PH-Reg distillation run (`HfArgumentParser(DistillArguments)`; `--help` lists them all)."""

    # ---- teacher / student
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of the base ViT / DINOv2 / CLIP (vision) / SigLIP / DINOv3 ViT model to add "
            "registers to, e.g. facebook/dinov2-base. Default: none, i.e. the offline demo with a small synthetic DINOv2 "
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
            "vision tower's post-layernorm patch tokens (see phreg_hf/distill/clip_training.py)."
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
        default=DEFAULT_EVAL_IMAGES,
        metadata={
            "help": "At most this many images are used for the final measures (the first ones in sorted order; "
            "the same default as `phreg eval --max_images`, so both measure the same images)."
        },
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
            "R x R crop). Default: 518 for a DINOv2 --teacher and 448 for a CLIP one (reference code), 512 for a "
            "DINOv3 one (our choice), the config's image_size otherwise (SigLIP: our choice, its position table's "
            "native grid); the demo's synthetic model trains at its own image_size (112)."
        },
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader worker processes per training process, which decode and crop the images and read and "
            "verify their cached teacher targets (0: all in the training process). Default on a GPU: the CPUs this "
            "process may use (its affinity, shared among the processes on this machine) minus one for the "
            "training process, at most 16; on the CPU, 0 (the model's threads use every core there)."
        },
    )
    dataloader_prefetch_factor: int = field(
        default=4,
        metadata={"help": "Batches each DataLoader worker loads ahead (with --dataloader_num_workers > 0)."},
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
    train_position_embeddings: bool | None = field(
        default=None,
        metadata={
            "help": "Train the position embeddings. Default: on wherever the model has a learned position table; "
            "DINOv3 has none (rotary position embeddings, no parameters), so it trains the other parts, and "
            "asking for this option there is an error."
        },
    )
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
            "help": "Images per process per micro-batch (default: the reference's 8; 16 for CLIP dense modes; "
            "see the settings per backbone below)."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "AdamW learning rate of the first epoch (default: the reference's 1e-4; 3e-4 for CLIP dense modes; "
            "see the settings per backbone below)."
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
    torch_compile: bool = field(
        default=False,
        metadata={
            "help": "Run the student's and the teacher's forward passes through torch.compile (CUDA GPUs only; "
            "refused on the CPU). The first steps are slower while it compiles; checkpoints and the saved student "
            "are the same as without it, and a run may be resumed with or without it."
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
            # None: on, where the model has the part (`resolve_trainable_parts`).
            "position_embeddings": self.train_position_embeddings is not False,
            "patch_embeddings": self.train_patch_embeddings,
            "last_block": self.train_last_block,
        }
        return [part for part in TRAINABLE_PARTS if flags[part]]

    def resolve_defaults(self, clip_dense: bool) -> None:
        """Fill the options left at None with the reference values (docs/method.md), the CLIP ones for a CLIP dense run."""
        from .clip_training import CLIP_REFERENCE_SETTINGS

        defaults = CLIP_REFERENCE_SETTINGS if clip_dense else GENERIC_REFERENCE_SETTINGS
        for name in GENERIC_REFERENCE_SETTINGS:
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        self.validate()

    def resolve_trainable_parts(self, model_parts: Sequence[str], model_name: str) -> list[str]:
        """Settle `--train_position_embeddings` once the student is known; returns the parts it does not have.

        Args:
            model_parts: the parts the student has (its `trainable_parameter_groups()` keys).
            model_name: how errors name the student (e.g. its class).
        """
        missing = [part for part in TRAINABLE_PARTS if part not in model_parts]
        if "position_embeddings" in missing:
            if self.train_position_embeddings:
                raise ValueError(
                    f"--train_position_embeddings: {model_name} has no learned position table (DINOv3 uses rotary "
                    "position embeddings, which have no parameters), so there are no position embeddings to train. "
                    "Drop the option: the registers, patch embeddings and last block train as usual."
                )
            self.train_position_embeddings = False
        elif self.train_position_embeddings is None:
            self.train_position_embeddings = True
        self.validate()
        return missing

    def validate(self) -> None:
        """Checks that need no model or data; raises ValueError / FileNotFoundError naming the fix."""
        if (
            self.teacher is not None
            and not Path(self.teacher).exists()
            and _looks_like_local_path(self.teacher)
        ):
            raise FileNotFoundError(
                f"--teacher {self.teacher}: folder not found. Pass an existing folder holding the model "
                "(config.json and its weights), or a Hub id such as facebook/dinov2-base."
            )
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
            "dataloader_prefetch_factor": self.dataloader_prefetch_factor,
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
            if getattr(self, name) is not None and getattr(self, name) < 0:
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
        check_torch_compile(self.torch_compile)
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


def distill_argument_parser(prog: str | None = None):
    """The `phreg distill` / `examples/distill.py` parser: every `DistillArguments` option, with the demo's defaults
    in the epilog. `prog` names the command in the usage line (default: argparse's, the script's file name)."""
    from ..arg_parsing import make_parser
    from .demo import DEMO_DEFAULTS, DEMO_OUTPUT_DIR, DEMO_TEACHER_CACHE

    demo = ", ".join(f"--{name} {value}" for name, value in DEMO_DEFAULTS.items())
    parser = make_parser(
        DistillArguments,
        prog=prog,
        description="PH-Reg distillation: add registers to a ViT / DINOv2 / CLIP / SigLIP / DINOv3 model and distill "
        "it from its denoised self.",
        epilog=f"{REFERENCE_SETTINGS_TEXT} Without --teacher (the offline demo on a synthetic model) these defaults "
        f"change: {demo}, --output_dir {DEMO_OUTPUT_DIR} (overwritten by each demo run), --teacher_cache "
        f"OUTPUT_DIR/{DEMO_TEACHER_CACHE}. Any of them given on the command line still wins.",
    )
    # HfArgumentParser gives a boolean that defaults to None ("where the model has the part") neither a bare
    # `--X` (= True) nor a `--no_X` switch; both are added here, as for the other --train_* options.
    for action in parser._actions:
        if action.dest == "train_position_embeddings":
            action.nargs, action.const = "?", True
    parser.add_argument(
        "--no_train_position_embeddings",
        "--no-train-position-embeddings",
        dest="train_position_embeddings",
        action="store_false",
        default=None,
        help="Turn off --train_position_embeddings (on by default wherever the model has a learned position table).",
    )
    return parser


def parse_distill_arguments(argv: list[str], prog: str | None = None) -> DistillArguments:
    """Parse a command line into `DistillArguments`; without --teacher the demo's defaults replace the reference ones.

    The demo's settings (`demo.DEMO_DEFAULTS`) stay in force whatever else is passed (e.g. only --output_dir),
    and each of them can still be set on the command line. With --teacher every default is the reference one.
    """
    parser = distill_argument_parser(prog)
    (args,) = parser.parse_args_into_dataclasses(args=list(argv))
    if not args.is_demo:
        return args
    from .demo import demo_defaults

    parser.set_defaults(**demo_defaults(args.output_dir))
    (args,) = parser.parse_args_into_dataclasses(args=list(argv))
    return args
