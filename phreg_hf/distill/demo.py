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
"""The offline demo: a synthetic planted-artifact teacher, a DINOv2-style image processor and sample photos.

With no `--teacher`, `phreg distill` (and `examples/distill.py`) distills a small random-init DINOv2 whose
artifacts were planted on purpose (`synthetic.py`; NOT a pretrained model) on scikit-image's natural sample photos
(`pip install "phreg-hf[demo]"`): the whole pipeline, offline, in 1.5-3 minutes on 2 shared CPU cores (400 steps,
20-95 s of training depending on the load).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from transformers import PreTrainedModel

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
# The demo's synthetic base model (stock Dinov2Model + image processor), saved in output_dir for `phreg eval`.
DEMO_BASE_DIR = "demo_base"
# Where the demo writes when no --output_dir is given (overwritten by each demo run).
DEMO_OUTPUT_DIR = "phreg-demo"
# Defaults of a run without --teacher (the demo), in place of the reference ones of `DistillArguments`. They differ
# only where the tiny synthetic model and a budget of a minute or two of CPU time ask for it; any of them given on
# the command line still wins. Everything else keeps the reference settings of docs/method.md (K = 10 views, shift
# 0.15, 16 registers, AdamW, weight decay 1e-2, exponential decay, all four parts trained, loss (1 - cos) + MSE).
DEMO_DEFAULTS = {
    # The reference 1e-4 -> 5e-6 suits a pretrained model fine-tuned for hours; the tiny synthetic model must
    # unlearn planted artifacts 30x the size of its position embeddings in 400 steps (20 s of idle CPU time).
    "learning_rate": 3e-3,
    "final_learning_rate": 3e-4,
    # The sample images are few, so many short epochs; the targets are cached (--teacher_cache defaults to
    # OUTPUT_DIR/teacher_cache), so only the first epoch runs the teacher.
    "max_steps": 400,
    "per_device_train_batch_size": 8,
    "checkpointing_steps": 0,
    "logging_steps": 25,
}
DEMO_TEACHER_CACHE = "teacher_cache"  # under the output folder


def demo_defaults(output_dir: str | None) -> dict:
    """`DEMO_DEFAULTS` plus the teacher cache inside the demo's output folder (`DEMO_OUTPUT_DIR` by default)."""
    return {**DEMO_DEFAULTS, "teacher_cache": str(Path(output_dir or DEMO_OUTPUT_DIR) / DEMO_TEACHER_CACHE)}


def demo_banner(args) -> str:
    """What a demo run says first: what it is, its settings (those the command line changed marked), the real use.

    Args:
        args: the run's `DistillArguments` (no --teacher).
    """
    settings = []
    for name, default in demo_defaults(args.output_dir).items():
        value = getattr(args, name)
        settings.append(f"--{name} {value}" + ("" if value == default else f" (demo default {default})"))
    images = args.train_dir or args.dataset_name
    images_text = f"the images of {images}" if images else "scikit-image's sample photos"
    return (
        "PH-Reg offline demo: a SYNTHETIC random-init DINOv2 with planted position-locked artifacts (not a\n"
        f"pretrained model) distilled on {images_text}, into {args.output_dir or DEMO_OUTPUT_DIR}.\n"
        f"Demo settings (no --teacher; pass any option to change it): {', '.join(settings)}.\n"
        "Run with --teacher facebook/dinov2-base --train_dir IMAGES --output_dir OUT for the real method.\n"
    )


def build_demo_teacher() -> PreTrainedModel:
    """The demo's synthetic teacher: a random-init DINOv2 with planted artifacts (see `synthetic.py`)."""
    from ..synthetic import build_planted_artifact_model

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

    from .. import data

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
