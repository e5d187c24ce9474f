#!/usr/bin/env python
"""PH-Reg distillation: add registers to a ViT / DINOv2 / CLIP model and distill it from its denoised self.

    accelerate launch examples/distill.py --teacher facebook/dinov2-base --train_dir ./images \\
        --output_dir ./dinov2-base-phreg

`python examples/distill.py --help` lists every option (`phreg_hf.trainer.DistillArguments`).

With NO arguments this runs an offline demo: a small random-init DINOv2 with planted position-locked
artifacts (SYNTHETIC, not a pretrained model: no weights can be downloaded here and random models have no
natural artifacts, see `phreg_hf/synthetic.py`) is distilled on natural sample images shipped with
scikit-image, and the artifact measures of the raw model, the denoised teacher and the student are printed.
The demo's settings (`DEMO_ARGUMENTS`) differ from the reference ones only where the tiny synthetic model
and a ~30 s CPU budget ask for it; each difference is commented there.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser

from phreg_hf.evaluation import format_metrics_table
from phreg_hf.trainer import DistillArguments, DistillTrainer

# The offline demo (`python examples/distill.py` with no arguments). Everything else keeps the reference
# settings of METHOD.md (K = 10 views, shift 0.15, 16 registers, AdamW, weight decay 1e-2, exponential decay,
# all four parts trained, loss (1 - cos) + MSE).
DEMO_ARGUMENTS = [
    # ./phreg-demo, overwritten by each demo run
    "--output_dir",
    "phreg-demo",
    "--overwrite_output_dir",
    # The reference 1e-4 -> 5e-6 suits a pretrained model fine-tuned for hours; the tiny synthetic model must
    # unlearn planted artifacts 30x the size of its position embeddings in about 30 s of CPU time.
    "--learning_rate",
    "3e-3",
    "--final_learning_rate",
    "3e-4",
    # The sample images are few, so many short epochs; the targets are cached, so only epoch 0 runs the teacher.
    "--max_steps",
    "400",
    "--per_device_train_batch_size",
    "8",
    "--teacher_cache",
    "phreg-demo/teacher_cache",
    "--checkpointing_steps",
    "0",
    "--logging_steps",
    "25",
]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    demo = not argv
    if demo:
        argv = list(DEMO_ARGUMENTS)
    parser = HfArgumentParser(DistillArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    trainer = DistillTrainer(args)
    is_main = trainer.accelerator.is_main_process
    if demo and is_main:
        print(
            "PH-Reg offline demo: a SYNTHETIC random-init DINOv2 with planted position-locked artifacts (not a\n"
            "pretrained model) distilled on scikit-image's sample photos. Settings: "
            + " ".join(DEMO_ARGUMENTS)
            + "\nRun with --teacher facebook/dinov2-base --train_dir IMAGES --output_dir OUT for the real method.\n",
            flush=True,
        )
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
