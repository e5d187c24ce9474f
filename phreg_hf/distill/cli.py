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
"""The main job's command line: parse `DistillArguments`, train, print the summary. Three ways in, one function:

    phreg distill --teacher facebook/dinov2-base --train_dir ./images --output_dir ./dinov2-base-phreg
    accelerate launch -m phreg_hf.distill --teacher ...        # several processes: add --multi_gpu --num_processes N
    accelerate launch examples/distill.py --teacher ...       # from a clone

`phreg distill --help` (or `python -m phreg_hf.distill --help`) lists every option. Without --teacher it runs the
offline demo (`demo.py`: a synthetic planted-artifact DINOv2 on scikit-image's sample photos, which
`pip install "phreg-hf[demo]"` installs).

Bad input found before training starts (an option, a missing folder, the demo without scikit-image) ends with one
`PROG: error: ...` line and exit code 2, as every `phreg` subcommand; errors during training keep their traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from ..arg_parsing import BAD_INPUT_ERRORS
from ..data import SampleImagesUnavailable, sample_image_paths
from ..evaluate.artifacts import format_metrics_table
from ..launch import process_count_warning
from .arguments import DistillArguments, parse_distill_arguments
from .demo import demo_banner
from .trainer import DistillTrainer

# How the parser names the command in its usage line, per way in (argparse would say "__main__.py" for -m).
PHREG_PROG = "phreg distill"
MODULE_PROG = "python -m phreg_hf.distill"


def _check_demo_images(args: DistillArguments) -> None:
    """The demo without images of its own needs scikit-image's photos: refuse before any model is built."""
    if args.is_demo and args.train_dir is None and args.dataset_name is None:
        try:
            sample_image_paths()
        except SampleImagesUnavailable as error:
            raise SampleImagesUnavailable(
                f"{error} Or train on your own images: --train_dir IMAGES (the demo's synthetic model) or "
                "--teacher facebook/dinov2-base --train_dir IMAGES --output_dir OUT (the real method)."
            ) from None


def _print_summary(args: DistillArguments, output_dir, result: dict) -> None:
    settings = result["settings"]
    print(
        f"\nDistilled {settings['base_model']} -> {output_dir} in {settings['train_runtime_s']:.1f} s "
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
        print(f"Pushed to the Hub: {url}" if url else "Push to the Hub failed; see the error above to retry.")


def distill_main(argv: Sequence[str] | None = None, prog: str | None = PHREG_PROG) -> int:
    """Run one distillation from a command line (default: `sys.argv[1:]`); returns the exit code.

    Args:
        argv: the options (`DistillArguments`), e.g. `["--teacher", "facebook/dinov2-base", ...]`; none: the demo.
        prog: the command named in usage and error lines (None: argparse's default, the script's file name).

    Returns:
        0 when the student is saved, the parser's code for --help / a usage error, 2 for bad input found before
        training (message on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    name = prog or os.path.basename(sys.argv[0])
    warning = process_count_warning()  # `accelerate launch --num_processes 2` that started one process
    if warning:
        print(f"WARNING: {warning}\n", file=sys.stderr, flush=True)
    try:
        args = parse_distill_arguments(argv, prog=prog)
        _check_demo_images(args)
        logging.basicConfig(
            format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
            datefmt="%H:%M:%S",
            level=logging.INFO,
        )
        trainer = DistillTrainer(args)
    except SystemExit as exit_:  # --help, or a usage error argparse has printed
        return int(exit_.code or 0)
    except BrokenPipeError:
        raise
    except (*BAD_INPUT_ERRORS, SampleImagesUnavailable) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    is_main = trainer.accelerator.is_main_process
    if args.is_demo and is_main:
        print(demo_banner(args), flush=True)
    result = trainer.train()
    if is_main:
        _print_summary(args, trainer.output_dir, result)
    return 0


__all__ = ["MODULE_PROG", "PHREG_PROG", "distill_main"]
