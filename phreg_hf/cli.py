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
"""The `phreg` command: `phreg distill`, `phreg push`, `phreg eval`, `phreg visualize`, `phreg segment`,
`phreg eval-segmentation`, `phreg probe`, `phreg test-time-registers`, `phreg benchmark`; `phreg --version`.

Each subcommand's options and work live in the module that owns that concern; this file only dispatches, so
`phreg push --help` and friends print the options of the subcommand.

Output into a pipe that closes early (`phreg push ... --dry_run | head -2`) ends quietly with exit code 141, what a
shell reports for a process stopped by SIGPIPE, instead of a `BrokenPipeError` traceback (the handling Python's
`signal` documentation recommends: flush inside the handler, then point stdout at devnull so that the
interpreter's own flush at exit cannot raise again).
"""

from __future__ import annotations

import importlib
import os
import sys

from .constants import VERSION

# Exit code of a command whose reader went away (128 + SIGPIPE), as `yes | head -1` reports for `yes`.
BROKEN_PIPE_EXIT_CODE = 141

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
SUBCOMMANDS = {
    "distill": (
        "phreg_hf.distill.cli",
        "distill_main",
        "distill a student from its denoised self (the main job; no --teacher: the offline demo)",
    ),
    "push": (
        "phreg_hf.hub.push",
        "push_main",
        "render the model card of a saved student and upload it to the Hub",
    ),
    "eval": (
        "phreg_hf.evaluate.artifacts",
        "eval_main",
        "measure artifacts of base, denoised teacher and student",
    ),
    "visualize": (
        "phreg_hf.evaluate.visualization",
        "visualize_main",
        "write before/after PNGs (norms, PCA)",
    ),
    "segment": (
        "phreg_hf.evaluate.segmentation",
        "segment_main",
        "open-vocabulary segmentation with a CLIP (label PNGs)",
    ),
    "eval-segmentation": (
        "phreg_hf.evaluate.segmentation_eval",
        "eval_segmentation_main",
        "mIoU of base CLIP (MaskCLIP, NACLIP) vs a CLIP student",
    ),
    "probe": ("phreg_hf.evaluate.probe", "probe_main", "linear-probe segmentation / depth: base vs student"),
    "test-time-registers": (
        "phreg_hf.evaluate.test_time_registers_cli",
        "test_time_registers_main",
        "the training-free baseline: find register neurons, save the model",
    ),
    "benchmark": (
        "phreg_hf.evaluate.benchmark",
        "benchmark_main",
        "the paper's tables: `benchmark segmentation` (Table 1), `benchmark probe` (Table 2)",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS) + 2  # one column for the help texts, whatever the names
    lines = [
        "usage: phreg {" + ",".join(SUBCOMMANDS) + "} [options]",
        "       phreg --version",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<{width}}{help_text}" for name, (_, _, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Run `phreg SUBCOMMAND --help` for the options of one."]
    return "\n".join(lines)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"phreg-hf {VERSION}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"phreg: unknown subcommand {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = SUBCOMMANDS[name]
    return getattr(importlib.import_module(module_name), function_name)(rest) or 0


def main(argv: list[str] | None = None) -> int:
    """`phreg SUBCOMMAND [options]` (default: `sys.argv[1:]`); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # a reader that went away shows here, where it can still be handled
        return code
    except BrokenPipeError:
        # Nothing more can reach the reader; stdout goes to devnull so that the flush at exit stays silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
