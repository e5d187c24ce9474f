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
"""The `phreg` command: `phreg push`, `phreg eval`, `phreg visualize`, `phreg segment`, `phreg eval-segmentation`,
`phreg probe`, `phreg benchmark`.

Each subcommand's options and work live in the module that owns that concern; this file only dispatches, so
`phreg push --help` and friends print the options of the subcommand.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
SUBCOMMANDS = {
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
    "benchmark": (
        "phreg_hf.evaluate.benchmark",
        "benchmark_main",
        "the paper's tables: `benchmark segmentation` (Table 1), `benchmark probe` (Table 2)",
    ),
}


def _usage() -> str:
    lines = ["usage: phreg {" + ",".join(SUBCOMMANDS) + "} [options]", "", "subcommands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, _, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Run `phreg SUBCOMMAND --help` for the options of one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"phreg: unknown subcommand {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = SUBCOMMANDS[name]
    return getattr(importlib.import_module(module_name), function_name)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
