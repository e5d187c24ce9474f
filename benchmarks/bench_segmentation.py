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
"""Segmentation throughput: a PH-Reg CLIP student vs its base CLIP (MaskCLIP and NACLIP paths), in one run.

    python benchmarks/bench_segmentation.py            # ViT-B/16 CLIP shape (hidden 768, 12 layers, patch 16)
    python benchmarks/bench_segmentation.py --small    # a tiny CLIP, for a quick check

The paper's protocol (`OpenVocabularySegmenter`): short side resized to 448, sliding window crop 336 / stride 112
(4 crops for a 448 x 448 image, 6 for 448 x 597), 21 classes (VOC21-sized), logit scale 40. Rows:

- base MaskCLIP: the base CLIP through the value path of its last block (0 registers);
- base NACLIP: the base CLIP through NACLIP's reduced last layer (the PH-Reg teacher's path, single view);
- student: `PhregCLIPModel.from_base(base, 16)`, value path; 16 more tokens per crop than the base (441 patches).

The vision tower has the ViT-B/16 shape; the text tower is small (1 layer), since it runs only once per class
before timing.

Each image goes through `predict` (preprocessing, windows, upsampling, softmax, argmax: everything a user pays);
the text embeddings are computed once per model before timing (they do not depend on the image). Rows alternate
image by image, so a change in background load hits all of them; one untimed warmup image each first. Weights are
random (no download): cost does not depend on them. Reported: images/s (median of per-image times) and the ratio
to base MaskCLIP.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from phreg_hf import PhregCLIPModel
from phreg_hf.models.pipeline_phreg_segmentation import OpenVocabularySegmenter
from phreg_hf.synthetic_clip import TINY_VOCAB_SIZE, build_tiny_clip_tokenizer

BASE_SIZE = dict(
    vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=16, image_size=224),
    # The text tower runs once per class before timing; a small one keeps the setup short (its size does not
    # change the timed image path).
    text=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4),
    projection_dim=512,
)
SMALL_SIZE = dict(
    vision=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=16, image_size=224),
    text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
    projection_dim=64,
)
VOC21 = ["background"] + [f"class {i}" for i in range(1, 21)]
CLIP_MEAN, CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)


def build_base(size: dict) -> CLIPModel:
    tokenizer = build_tiny_clip_tokenizer()
    text = dict(
        size["text"],
        intermediate_size=4 * size["text"]["hidden_size"],
        vocab_size=TINY_VOCAB_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(size["vision"], intermediate_size=4 * size["vision"]["hidden_size"])
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=size["projection_dim"])
    return CLIPModel(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="A tiny CLIP instead of the ViT-B/16 shape.")
    parser.add_argument("--images", type=int, default=4, help="Timed images per row.")
    parser.add_argument(
        "--width", type=int, default=597, help="Image width (height 448: 6 windows at 448x597)."
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    size = SMALL_SIZE if args.small else BASE_SIZE
    base = build_base(size).to(args.device)
    tokenizer = build_tiny_clip_tokenizer()
    classes = [[name] for name in VOC21]
    rows = {
        "base MaskCLIP": (PhregCLIPModel.from_base(base, 0), "maskclip"),
        "base NACLIP": (PhregCLIPModel.from_base(base, 0), "naclip"),
        "student (16 registers)": (PhregCLIPModel.from_base(base, 16), "maskclip"),
    }
    segmenters = {}
    for name, (model, mode) in rows.items():
        segmenters[name] = OpenVocabularySegmenter(
            model, tokenizer, CLIP_MEAN, CLIP_STD, classes, mode=mode, batch_size=8
        )
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (448, args.width, 3), dtype=np.uint8))
        for _ in range(args.images + 1)
    ]
    times: dict[str, list[float]] = {name: [] for name in segmenters}
    with torch.inference_mode():
        for index, image in enumerate(images):
            for name, segmenter in segmenters.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                segmenter.predict(image)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if index > 0:  # image 0 is the warmup
                    times[name].append(time.perf_counter() - start)

    shape = "tiny CLIP" if args.small else "ViT-B/16-shaped CLIP (random weights)"
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({platform.machine()})"
    print(
        f"Segmentation throughput, {shape}, {args.images} images of 448x{args.width}, crop 336 / stride 112, "
    )
    print(f"21 classes, float32, {device}, {torch.get_num_threads()} threads:\n")
    print("| row | images/s | s/image (median) | ratio to base MaskCLIP |")
    print("|---|---|---|---|")
    reference = statistics.median(times["base MaskCLIP"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1 / median:.3f} | {median:.3f} | {reference / median:.2f}x |")


if __name__ == "__main__":
    main()
