#!/usr/bin/env python
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
"""PH-Reg distillation: add registers to a ViT / DINOv2 / CLIP / SigLIP / DINOv3 model and distill it from its
denoised self.

    accelerate launch examples/distill.py --teacher facebook/dinov2-base --train_dir ./images \\
        --output_dir ./dinov2-base-phreg

The entry point of a clone; an installed phreg-hf runs the same function (`phreg_hf.distill.cli.distill_main`) as
`phreg distill ...` or `accelerate launch -m phreg_hf.distill ...`. `python examples/distill.py --help` lists every
option (`phreg_hf.distill.arguments.DistillArguments`).

Without --teacher this runs an offline demo: a small random-init DINOv2 with planted position-locked artifacts
(SYNTHETIC, not a pretrained model: no weights can be downloaded here and random models have no natural
artifacts, see `phreg_hf/synthetic.py`) is distilled on natural sample images shipped with scikit-image
(`pip install "phreg-hf[demo]"`), and the artifact measures of the raw model, the denoised teacher and the student
are printed. The demo's settings (`phreg_hf.distill.demo.DEMO_DEFAULTS`, each difference from the reference
commented there) are its defaults whatever else is passed; any of them can still be set on the command line.

`accelerate launch --config_file examples/accelerate_config.yaml examples/distill.py` launches one process with no
notices about unset launch options; `accelerate launch --multi_gpu --num_processes N` (or `torchrun`) runs N.
"""

from __future__ import annotations

import sys

from phreg_hf.distill.cli import distill_main


def main(argv: list[str] | None = None) -> int:
    """`distill_main` under this script's name (usage and error lines say `distill.py`)."""
    return distill_main(argv, prog=None)


if __name__ == "__main__":
    sys.exit(main())
