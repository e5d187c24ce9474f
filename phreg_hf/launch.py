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
"""How the training script was launched: catch `accelerate launch --num_processes N` that runs one process.

`accelerate launch --num_processes 2 script.py` (or `... -m phreg_hf.distill`) on a machine without GPUs starts ONE process: without
`--multi_gpu` (or a config whose distributed_type is MULTI_GPU), Accelerate's simple launcher runs the script once
and tells it nothing about the requested count. `requested_processes` reads the count from the launcher's own
command line (the parent process) and `process_count_warning` compares it with the processes actually running.

`examples/accelerate_config.yaml` is a single-process launch config: `accelerate launch --config_file
examples/accelerate_config.yaml ...` uses it and prints none of the "values were not passed to `accelerate launch`"
notices a launch without any config prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch

_NUM_PROCESSES = re.compile(r"^--num[_-]processes(?:=(\d+))?$")


def _launcher_command_line() -> list[str]:
    """The parent process's argv (empty when it cannot be read)."""
    try:
        import psutil  # a dependency of accelerate

        return list(psutil.Process(os.getppid()).cmdline())
    except Exception:  # noqa: BLE001 - no parent information just means "nothing to compare"
        return []


def _is_training_script(word: str) -> bool:
    """Where the launcher's own options end: `script.py`, `-m` / `--module` (the next word is a module, e.g.
    `accelerate launch -m phreg_hf.distill`), the `phreg` console script, or `--`."""
    return word.endswith(".py") or word in ("-m", "--module", "--") or os.path.basename(word) == "phreg"


def requested_processes(launcher_argv: Sequence[str] | None = None) -> int | None:
    """The `--num_processes` given to `accelerate launch`, or None when the script was not started that way.

    Args:
        launcher_argv: the launcher's command line (default: the parent process's, read with psutil), e.g.
            `["python", "/usr/bin/accelerate", "launch", "--num_processes", "2", "examples/distill.py", ...]` or
            `[..., "launch", "--num_processes", "2", "-m", "phreg_hf.distill", ...]`.
    """
    argv = list(_launcher_command_line() if launcher_argv is None else launcher_argv)
    names = [os.path.basename(word) for word in argv]
    # `accelerate launch ...` (the console script) or `python -m accelerate.commands.launch ...`.
    starts = [
        index
        for index, name in enumerate(names)
        if name == "accelerate.commands.launch"
        or (name == "launch" and any(n.split(".")[0] == "accelerate" for n in names[:index]))
    ]
    if not starts:
        return None
    launch = starts[0]
    for index in range(launch + 1, len(argv)):
        word = argv[index]
        if _is_training_script(word):  # what follows are the training script's own options
            return None
        match = _NUM_PROCESSES.match(word)
        if match:
            value = match.group(1) or (argv[index + 1] if index + 1 < len(argv) else "")
            return int(value) if value.isdigit() else None
    return None


def process_count_warning(
    num_processes: int | None = None, launcher_argv: Sequence[str] | None = None
) -> str | None:
    """A message when `accelerate launch --num_processes N` started fewer than N processes; else None.

    Args:
        num_processes: processes actually running (default: `WORLD_SIZE`, 1 when unset).
        launcher_argv: see `requested_processes`.
    """
    requested = requested_processes(launcher_argv)
    running = int(os.environ.get("WORLD_SIZE", "1")) if num_processes is None else int(num_processes)
    if requested is None or requested <= running:
        return None
    return (
        f"accelerate launch was asked for --num_processes {requested} but only {running} process(es) run: without "
        "--multi_gpu, Accelerate starts a single process on a machine without GPUs. For "
        f"{requested} processes on CPUs, launch with\n"
        f"    accelerate launch --multi_gpu --num_processes {requested} -m phreg_hf.distill ...\n"
        f"or  torchrun --nproc_per_node {requested} -m phreg_hf.distill ...\n"
        "(or examples/distill.py in place of -m phreg_hf.distill) "
        "and the trainer joins them into a CPU (gloo) process group. Continuing with "
        f"{running} process(es)."
    )


def multi_process_cpu_run() -> bool:
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


__all__ = ["multi_process_cpu_run", "process_count_warning", "requested_processes"]
