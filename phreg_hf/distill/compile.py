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
"""`--torch_compile`: run the student's and the teacher's forward passes through `torch.compile` (CUDA only).

What is compiled, and what is not:

- the student: the module Accelerate prepared (plain, or DDP-wrapped) is wrapped by `torch.compile`, and only the
  training forward (`DistillTrainer.student_patch_tokens`) calls the wrapper. The trainer's `self.student`, the
  module Accelerate registered for `save_state` / `load_state`, stays the uncompiled one, and so does what
  `unwrap_model` returns for `save_pretrained` and the final measures: checkpoints and the saved student hold the
  model's own parameter names, never `_orig_mod.`-prefixed ones, and load into a compiled or uncompiled run alike.
  The wrapper shares the module's parameters, so a resumed checkpoint's weights are what the compiled forward runs;
- the teacher: its `get_patch_tokens` (what `DenoisingTeacher` and the measures call, a bound method of the
  frozen model) is replaced, on that one instance, by its compiled version; its weights, their names and the
  teacher hash (`teacher_cache.hash_model`) are untouched.

bf16 autocast (`--mixed_precision`) applies inside the compiled code as outside it. Compiling changes which kernels
run, not what is computed, so it is not part of a checkpoint's run fingerprint (`checkpointing.py`) nor of the
teacher cache's: a run checkpointed with `--torch_compile` may be resumed without it and the other way round.

On CPU `torch.compile` brings little for these models and needs a C++ toolchain, so the option is refused there
(`check_torch_compile`, at argument-check time) instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def cuda_in_use() -> bool:
    """Whether this run trains on a CUDA device: what Accelerate picks when one is available, unless told to use
    the CPU (`ACCELERATE_USE_CPU`, set by `accelerate launch --cpu`); several processes on a machine without one
    train on the CPU (`launch.multi_process_cpu_run`)."""
    from accelerate.utils import parse_flag_from_env

    from ..launch import multi_process_cpu_run

    return (
        torch.cuda.is_available()
        and not parse_flag_from_env("ACCELERATE_USE_CPU")
        and not multi_process_cpu_run()
    )


def check_torch_compile(enabled: bool) -> None:
    """Refuse `--torch_compile` when the run would not train on a CUDA device (raises ValueError naming the fix)."""
    if enabled and not cuda_in_use():
        raise ValueError(
            "--torch_compile needs a CUDA GPU: this run would train on the CPU (torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}; `accelerate launch --cpu` counts as no GPU), where compiling brings "
            "little for these models. Drop --torch_compile, or run on a machine with a CUDA GPU."
        )


def compile_for_training(student: nn.Module, teacher_model: nn.Module, enabled: bool) -> Callable:
    """With `enabled`, compile the student's forward and the teacher's `get_patch_tokens` (see the module docstring).

    Args:
        student: the student as `accelerator.prepare` returned it (kept uncompiled for saving and loading).
        teacher_model: the frozen teacher model; its `get_patch_tokens` is replaced by the compiled one.
        enabled: `--torch_compile`; when False nothing changes and `student` itself is returned.

    Returns:
        What the training forward calls: `torch.compile(student)` (sharing its parameters), or `student`.
    """
    if not enabled:
        return student
    teacher_model.get_patch_tokens = torch.compile(teacher_model.get_patch_tokens)
    return torch.compile(student)


__all__ = ["check_torch_compile", "compile_for_training", "cuda_in_use"]
