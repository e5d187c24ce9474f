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
"""Checks and defaults shared by the evaluation commands: the resolution a model is measured at, the device, a
model source that exists, weights that are numbers (re-exported by `artifacts`, where they used to live)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def _side(size) -> int | None:
    """Square side of an image processor's `crop_size` / `size` (a dict or transformers' `SizeDict`)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    return get("height") or get("shortest_edge")


def default_resolution(image_processor, config) -> int:
    """The processor's center-crop side (or its resize side when it does not crop), else `config.image_size`."""
    side = None
    if getattr(image_processor, "do_center_crop", False):
        side = _side(getattr(image_processor, "crop_size", None))
    if side is None and getattr(image_processor, "do_resize", False):
        side = _side(getattr(image_processor, "size", None))
    image_size = config.image_size
    return int(side or (image_size[0] if isinstance(image_size, (list, tuple)) else image_size))


def check_resolution(resolution: int, patch_size: int) -> tuple[int, int]:
    """The patch grid `(R/p, R/p)`, or a ValueError naming the nearest resolutions that work."""
    if resolution % patch_size == 0 and resolution // patch_size >= 2:
        return resolution // patch_size, resolution // patch_size
    lower = (resolution // patch_size) * patch_size
    choices = [side for side in (lower, lower + patch_size) if side >= 2 * patch_size] or [2 * patch_size]
    raise ValueError(
        f"--resolution {resolution} must be a multiple of the patch size {patch_size} giving at least 2x2 "
        f"patches; pass --resolution {' or '.join(map(str, choices))}."
    )


def resolve_device(device: str | None, option: str = "--device") -> torch.device:
    """`device` as a `torch.device` (None: cuda when available, else cpu); ValueError naming the fix for a device
    that torch does not know or that this machine does not have (`--device cuda` without CUDA)."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"{option} {device!r} is not a device torch knows ({error}); pass cpu, cuda or cuda:N."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            )
            raise ValueError(
                f"{option} {device} asks for a GPU, but {why} (torch {torch.__version__}). Pass {option} cpu, or "
                f"leave {option} out to use a GPU when there is one."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}); pass one of them."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} {device}: Apple's MPS backend is not available here; pass {option} cpu.")
    return resolved


def check_model_source(model: str, option: str) -> None:
    """FileNotFoundError for a `--model`-like value that is neither an existing path nor a valid Hub id (a missing
    folder such as `/data/student`), instead of transformers' "Repo id must be in the form ..."."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(model).exists():
        return
    try:
        validate_repo_id(str(model))
        hub_id = not Path(model).is_absolute() and not str(model).startswith(("./", "../", "~"))
    except HFValidationError:
        hub_id = False
    if not hub_id:
        raise FileNotFoundError(
            f"{option} {model} does not exist; pass an existing model folder (written by save_pretrained or the "
            "trainer) or a Hub id such as openai/clip-vit-base-patch16."
        )


def check_finite_weights(model: nn.Module, option: str, source: str) -> None:
    """ValueError naming the first weight (parameter or buffer) of `model` that holds NaN or inf: every output of
    such a model is meaningless, and a table or label map made with it would look like a result."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{option} {source}: the weight {name} holds NaN or inf values, so the model's outputs are not "
                "numbers. The checkpoint is broken: re-train it, or load a good copy."
            )


__all__ = [
    "check_finite_weights",
    "check_model_source",
    "check_resolution",
    "default_resolution",
    "resolve_device",
]
