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
"""Training throughput (images/s): reference-style loop vs the PH-Reg trainer, with and without a teacher cache.

    python benchmarks/bench_trainer.py                      # small synthetic DINOv2 on CPU (defaults)
    python benchmarks/bench_trainer.py --hidden_size 384 --num_layers 12 --resolution 224 --steps 10

Rows (all on the same images, batch size, K and model, in one process, one after the other):

(a) reference loop: what the reference code does every step: for each image and each of the K views, shift
    and flip the image and its patch-index grid in Python (as its dataset does), one teacher forward over
    the B*K views, scatter each view back with its own indexing op, then the student step. Teacher
    recomputed every step.
    Timed like (b) and (c): from batch loading to optimizer step.
(b) `DistillTrainer`, no cache: batched views and scatter/average as tensor ops (`teacher.py`), teacher
    recomputed every step.
(c) `DistillTrainer` with a warm `--teacher_cache`: targets read from disk, only the student runs.
(d) student forward + backward + optimizer step alone on a fixed in-memory batch: the ceiling for (c).

Ratios are against (a) in the same run. The model is random-init with planted artifacts (`synthetic.py`);
throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from phreg_hf.distill.trainer import DistillArguments, DistillTrainer, distillation_loss
from phreg_hf.synthetic import build_planted_artifact_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--patch_size", type=int, default=14)
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--num_views", type=int, default=10, help="K (reference: 10)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--num_images", type=int, default=32, help="training images (one epoch = num_images / batch)"
    )
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return parser.parse_args()


def write_images(folder: Path, num_images: int, resolution: int) -> None:
    """Natural sample photos (scikit-image), resized so that decoding costs about the same as R x R inputs."""
    from phreg_hf.data import write_sample_images

    staging = folder.parent / "staging"
    photos = [Image.open(p).convert("RGB") for p in sorted(write_sample_images(staging))]
    folder.mkdir(parents=True)
    for i in range(num_images):
        image = photos[i % len(photos)].copy()
        image.thumbnail((int(resolution * 1.25), int(resolution * 1.25)))
        if (i // len(photos)) % 2:  # more distinct images than there are photos
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(folder / f"{i:04d}.png")
    shutil.rmtree(staging)


# ---------------------------------------------------------------------------------------------------------------
# (a) the reference-style teacher: per-image, per-view Python loops
def reference_views(image: torch.Tensor, offsets, flips, patch: int, fill: torch.Tensor):
    """One image `(3, R, R)` -> K shifted/flipped views and their `(2, n, n)` source-patch coordinates."""
    _, height, width = image.shape
    n_h, n_w = height // patch, width // patch
    rows = torch.arange(n_h)[:, None].expand(n_h, n_w)
    cols = torch.arange(n_w)[None, :].expand(n_h, n_w)
    views, coords = [], []
    for (dy, dx), flip in zip(offsets, flips, strict=True):
        view = fill[:, None, None].expand(3, height, width).clone()
        coord = torch.full((2, n_h, n_w), -1, dtype=torch.long)
        src_y = slice(max(0, -dy) * patch, height - max(0, dy) * patch)
        dst_y = slice(max(0, dy) * patch, height - max(0, -dy) * patch)
        src_x = slice(max(0, -dx) * patch, width - max(0, dx) * patch)
        dst_x = slice(max(0, dx) * patch, width - max(0, -dx) * patch)
        view[:, dst_y, dst_x] = image[:, src_y, src_x]
        gy_src, gy_dst = slice(max(0, -dy), n_h - max(0, dy)), slice(max(0, dy), n_h - max(0, -dy))
        gx_src, gx_dst = slice(max(0, -dx), n_w - max(0, dx)), slice(max(0, dx), n_w - max(0, -dx))
        coord[0, gy_dst, gx_dst] = rows[gy_src, gx_src]
        coord[1, gy_dst, gx_dst] = cols[gy_src, gx_src]
        if flip:
            view, coord = view.flip(-1), coord.flip(-1)
        views.append(view)
        coords.append(coord)
    return torch.stack(views), torch.stack(coords)


@torch.no_grad()
def reference_targets(teacher_model, pixel_values, num_views, shift, patch, fill, generator):
    batch, _, height, width = pixel_values.shape
    n_h, n_w = height // patch, width // patch
    all_views, all_coords = [], []
    for b in range(batch):
        offsets = torch.randint(-shift, shift + 1, (num_views, 2), generator=generator).tolist()
        offsets[0] = [0, 0]
        flips = (torch.rand(num_views, generator=generator) < 0.5).tolist()
        flips[0] = False
        views, coords = reference_views(pixel_values[b].cpu(), offsets, flips, patch, fill)
        all_views.append(views)
        all_coords.append(coords)
    views = torch.cat(all_views).to(pixel_values.device)
    tokens = teacher_model.get_patch_tokens(views).float().reshape(batch, num_views, n_h, n_w, -1)
    coords = torch.stack(all_coords).to(pixel_values.device)  # (B, K, 2, n, n)
    summed = torch.zeros(batch, n_h, n_w, tokens.shape[-1], device=tokens.device)
    counts = torch.zeros(batch, n_h, n_w, device=tokens.device)
    for b in range(batch):
        for k in range(num_views):
            valid = (coords[b, k] >= 0).all(dim=0)
            ys, xs = coords[b, k, 0][valid], coords[b, k, 1][valid]
            summed[b, ys, xs] += tokens[b, k][valid]
            counts[b, ys, xs] += 1
    return (summed / counts.clamp(min=1)[..., None]).flatten(1, 2)


def _endless(dataloader):
    while True:
        yield from dataloader


def bench_reference(trainer: DistillTrainer, steps: int, args) -> float:
    """images/s of the reference-style loop, data loading included (as in the trainer's own runtime)."""
    student = trainer.accelerator.unwrap_model(trainer.student)
    fill = torch.as_tensor(trainer.fill_value, dtype=torch.float32).flatten()
    shift = round(0.15 * trainer.grid_size[0])
    generator = torch.Generator().manual_seed(0)
    batches = _endless(trainer.train_dataloader)
    images = 0
    for step in range(steps + 1):
        if step == 1:  # the first step warms up
            start = time.perf_counter()
        pixel_values = trainer.normalize_pixels(next(batches)["pixel_values"])  # uint8 crops
        targets = reference_targets(
            trainer.teacher_model,
            pixel_values,
            args.num_views,
            shift,
            trainer.patch_size,
            fill,
            generator,
        )
        loss, _, _ = distillation_loss(student.get_patch_tokens(pixel_values), targets)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        if step > 0:
            images += pixel_values.shape[0]
    return images / (time.perf_counter() - start)


def bench_student_alone(trainer: DistillTrainer, steps: int, batch_size: int) -> float:
    student = trainer.accelerator.unwrap_model(trainer.student)
    pixel_values = trainer.normalize_pixels(next(iter(trainer.train_dataloader))["pixel_values"][:batch_size])
    targets = torch.randn(
        pixel_values.shape[0], trainer.grid_size[0] * trainer.grid_size[1], student.config.hidden_size
    )
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss, _, _ = distillation_loss(
            student.get_patch_tokens(pixel_values), targets.to(pixel_values.device)
        )
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    return steps * pixel_values.shape[0] / (time.perf_counter() - start)


def trainer_args(output_dir: Path, train_dir: Path, args, **overrides) -> DistillArguments:
    settings = dict(
        train_dir=str(train_dir),
        output_dir=str(output_dir),
        overwrite_output_dir=True,
        resolution=args.resolution,
        num_views=args.num_views,
        per_device_train_batch_size=args.batch_size,
        report_to="none",
        checkpointing_steps=0,
        logging_steps=10**6,
        num_eval_images=1,
        num_preview_images=0,
        mixed_precision="no",
    )
    settings.update(overrides)
    return DistillArguments(**settings)


def timed_train(trainer: DistillTrainer) -> float:
    """images/s of `trainer.train()`'s loop (its own train_runtime_s: setup and saving excluded)."""
    settings = trainer.train()["settings"]
    return settings["images_seen"] / settings["train_runtime_s"]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_kwargs = dict(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        image_size=args.resolution,
        patch_size=args.patch_size,
    )
    base = build_planted_artifact_model("dinov2", **model_kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_dir = tmp / "images"
        write_images(train_dir, args.num_images, args.resolution)
        steps_per_epoch = -(-args.num_images // args.batch_size)

        reference_trainer = DistillTrainer(trainer_args(tmp / "a", train_dir, args), base_model=base)
        rate_a = bench_reference(reference_trainer, args.steps, args)

        rate_b = timed_train(
            DistillTrainer(trainer_args(tmp / "b", train_dir, args, max_steps=args.steps), base_model=base)
        )

        cache = tmp / "cache"
        fill = DistillTrainer(
            trainer_args(tmp / "c", train_dir, args, max_steps=steps_per_epoch, teacher_cache=str(cache)),
            base_model=base,
        )
        fill.train()
        warm = DistillTrainer(
            trainer_args(tmp / "c", train_dir, args, max_steps=args.steps, teacher_cache=str(cache)),
            base_model=base,
        )
        rate_c = timed_train(warm)
        assert warm.teacher_cache.misses == 0, "the cache should have been warm"

        rate_d = bench_student_alone(reference_trainer, args.steps, args.batch_size)

    device = reference_trainer.accelerator.device
    print(
        f"\nPH-Reg training throughput: synthetic DINOv2 (hidden {args.hidden_size}, {args.num_layers} layers, "
        f"patch {args.patch_size}) at {args.resolution} px, K = {args.num_views}, batch {args.batch_size}, "
        f"{args.steps} timed steps, device {device}, {torch.get_num_threads()} threads\n"
    )
    rows = [
        ("(a) reference loop (teacher every step, per-view loops)", rate_a),
        ("(b) DistillTrainer, no cache", rate_b),
        ("(c) DistillTrainer, warm teacher cache", rate_c),
        ("(d) student forward+backward alone", rate_d),
    ]
    print(f"| {'row':<56} | {'images/s':>9} | {'vs (a)':>7} |")
    print(f"|{'-' * 58}|{'-' * 11}|{'-' * 9}|")
    for name, rate in rows:
        print(f"| {name:<56} | {rate:>9.1f} | {rate / rate_a:>6.2f}x |")


if __name__ == "__main__":
    main()
