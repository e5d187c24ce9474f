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
"""PH-Reg distillation: add registers to a ViT / DINOv2 / CLIP model and distill it from its denoised self.

    accelerate launch examples/distill.py --teacher facebook/dinov2-base --train_dir ./images \\
        --output_dir ./dinov2-base-phreg

`python examples/distill.py --help` lists every option (`phreg_hf.distill.arguments.DistillArguments`).

Without --teacher this runs an offline demo: a small random-init DINOv2 with planted position-locked artifacts
(SYNTHETIC, not a pretrained model: no weights can be downloaded here and random models have no natural
artifacts, see `phreg_hf/synthetic.py`) is distilled on natural sample images shipped with scikit-image, and the
artifact measures of the raw model, the denoised teacher and the student are printed. The demo's settings
(`phreg_hf.distill.demo.DEMO_DEFAULTS`, each difference from the reference commented there) are its defaults whatever
else is passed; any of them can still be set on the command line.

`accelerate launch --config_file examples/accelerate_config.yaml examples/distill.py` launches one process with no
notices about unset launch options; `accelerate launch --multi_gpu --num_processes N` (or `torchrun`) runs N.
"""

from __future__ import annotations

import logging
import sys

from phreg_hf.distill.arguments import parse_distill_arguments
from phreg_hf.distill.demo import demo_banner
from phreg_hf.distill.trainer import DistillTrainer
from phreg_hf.evaluate.artifacts import format_metrics_table
from phreg_hf.launch import process_count_warning


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warning = process_count_warning()  # `accelerate launch --num_processes 2` that started one process
    if warning:
        print(f"WARNING: {warning}\n", file=sys.stderr, flush=True)
    args = parse_distill_arguments(argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    trainer = DistillTrainer(args)
    is_main = trainer.accelerator.is_main_process
    if args.is_demo and is_main:
        print(demo_banner(args), flush=True)
    result = trainer.train()
    if is_main:
        settings = result["settings"]
        print(
            f"\nDistilled {settings['base_model']} -> {trainer.output_dir} in {settings['train_runtime_s']:.1f} s "
            f"({settings['global_steps']} steps, {settings['num_processes']} process(es), "
            f"{settings['skipped_images']} unreadable images skipped, {settings['skipped_steps']} steps skipped)."
        )
        print("Artifact measures, raw base model vs denoised teacher vs distilled student:")
        print(format_metrics_table(result["metrics"]))
        if (
            "clip_image_feature_cosine" in result["metrics"]
        ):  # CLIP dense runs (--clip_dense_mode naclip/maskclip)
            cosine = result["metrics"]["clip_image_feature_cosine"]
            print(f"CLIP image embedding (get_image_features) cosine to the base: {cosine:.4f}")
        if args.push_to_hub:
            url = result.get("hub_commit_url")
            print(
                f"Pushed to the Hub: {url}"
                if url
                else "Push to the Hub failed; see the error above to retry."
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
