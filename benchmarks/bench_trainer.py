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
    python benchmarks/bench_trainer.py --hidden_size 768 --num_layers 12 --num_heads 12 --resolution 518 \
        --batch_size 8 --device cuda --bf16 --torch_compile   # ViT-B shape on a GPU (benchmarks/gpu_suite.sh)

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

With `--torch_compile` (CUDA only) rows (b), (c) and (d) run once more with the student (and, in (b), the teacher)
compiled: the trainer's `--torch_compile`, `torch.compile` of the student in (d); `--compiled_only` leaves out the
uncompiled (b), (c), (d). Each row is logged to stderr as soon as it is measured.

Every row runs `--warmup_steps` untimed steps first (kernel selection, memory, compilation), then `--steps` timed
ones; on CUDA the clock is read after a synchronize. `--bf16` runs every row under the trainer's bf16 autocast
(`--mixed_precision bf16`); without it, float32. Ratios are against (a) in the same run. The model is random-init with planted artifacts (`synthetic.py`);
throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
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
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=1,
        help="untimed optimizer steps before each row's timed ones (>= 1)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="cpu or cuda (default: cuda when available)"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default: float32)")
    parser.add_argument(
        "--torch_compile", action="store_true", help="also rows (b), (c), (d) with torch.compile (CUDA only)"
    )
    parser.add_argument(
        "--compiled_only",
        action="store_true",
        help="with --torch_compile: only (a), for the ratios, and the compiled rows",
    )
    parser.add_argument(
        "--num_workers", type=int, default=None, help="DataLoader workers (default: the trainer's)"
    )
    args = parser.parse_args()
    if args.warmup_steps < 1 or args.steps < 1:
        parser.error("--steps and --warmup_steps must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    if args.compiled_only and not args.torch_compile:
        parser.error("--compiled_only needs --torch_compile")
    if args.torch_compile and (args.device == "cpu" or not torch.cuda.is_available()):
        parser.error("--torch_compile needs a CUDA GPU (the trainer refuses it on the CPU)")
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = (
            "true"  # Accelerate's own switch; the trainers then train on the CPU
        )
    return args


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work before reading the clock (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    device, autocast = trainer.accelerator.device, trainer.accelerator.autocast
    images = 0
    for step in range(args.warmup_steps + steps):
        if step == args.warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        pixel_values = trainer.normalize_pixels(next(batches)["pixel_values"])  # uint8 crops
        with autocast():
            targets = reference_targets(
                trainer.teacher_model,
                pixel_values,
                args.num_views,
                shift,
                trainer.patch_size,
                fill,
                generator,
            )
            tokens = student.get_patch_tokens(pixel_values)
        loss, _, _ = distillation_loss(tokens, targets)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        if step >= args.warmup_steps:
            images += pixel_values.shape[0]
    synchronize(device)
    return images / (time.perf_counter() - start)


def bench_student_alone(trainer: DistillTrainer, args, compiled: bool = False) -> float:
    """images/s of the student's forward + backward + optimizer step on one in-memory batch (`compiled`: through
    `torch.compile` of the student)."""
    student = trainer.accelerator.unwrap_model(trainer.student)
    patch_tokens = torch.compile(student.get_patch_tokens) if compiled else student.get_patch_tokens
    batch = next(iter(trainer.train_dataloader))["pixel_values"][: args.batch_size]
    pixel_values = trainer.normalize_pixels(batch)  # uint8 crops
    device, autocast = trainer.accelerator.device, trainer.accelerator.autocast
    targets = torch.randn(
        pixel_values.shape[0], trainer.grid_size[0] * trainer.grid_size[1], student.config.hidden_size
    ).to(device)
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        with autocast():
            tokens = patch_tokens(pixel_values)
        loss, _, _ = distillation_loss(tokens, targets)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    synchronize(device)
    return args.steps * pixel_values.shape[0] / (time.perf_counter() - start)


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
        mixed_precision="bf16" if args.bf16 else "no",
        dataloader_num_workers=args.num_workers,
    )
    settings.update(overrides)
    return DistillArguments(**settings)


def timed_train(trainer: DistillTrainer, warmup_steps: int) -> float:
    """images/s of `trainer.train()`'s steps after the first `warmup_steps`, data loading included: the clock is
    read at the end of each optimizer step (after the step's one host sync and, on CUDA, a synchronize)."""
    marks = []
    end_of_window = trainer._end_of_window  # the trainer's per-step hook (step_loop.py)

    def timed_end_of_window(running):
        end_of_window(running)
        synchronize(trainer.accelerator.device)
        marks.append((time.perf_counter(), trainer.state.images_seen))

    trainer._end_of_window = timed_end_of_window
    trainer.train()
    (start, images_before), (end, images_after) = marks[warmup_steps - 1], marks[-1]
    return (images_after - images_before) / (end - start)


def measured(trainer: DistillTrainer, measure) -> tuple:
    """`measure(trainer)`, then the trainer's models freed (the caller keeps no reference) before the next row."""
    device = trainer.accelerator.device
    try:
        return device, measure(trainer)
    finally:
        trainer.accelerator.free_memory()
        del trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


class Rows:
    """The table's rows as they are measured; each is also logged to stderr at once, so a run cut short (a time
    limit, benchmarks/gpu_suite.sh) still shows what it measured."""

    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    def add(self, name: str, rate: float) -> None:
        self.rows.append((name, rate))
        print(f"measured: {name}: {rate:.1f} images/s", file=sys.stderr, flush=True)


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
    run_steps = args.warmup_steps + args.steps
    table = Rows()
    # (mark and tag of the row names, trainer options): the plain rows unless --compiled_only, then the compiled ones.
    variants = [] if args.compiled_only else [("", "", {})]
    variants += [("'", ", --torch_compile", {"torch_compile": True})] if args.torch_compile else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_dir = tmp / "images"
        write_images(train_dir, args.num_images, args.resolution)
        steps_per_epoch = -(-args.num_images // args.batch_size)

        def trainer(name: str, **overrides) -> DistillTrainer:
            return DistillTrainer(trainer_args(tmp / name, train_dir, args, **overrides), base_model=base)

        def reference_and_student_rows(reference: DistillTrainer) -> None:
            table.add(
                "(a) reference loop (teacher every step, per-view loops)",
                bench_reference(reference, args.steps, args),
            )
            if not args.compiled_only:
                table.add("(d) student forward+backward alone", bench_student_alone(reference, args))
            if args.torch_compile:
                rate = bench_student_alone(reference, args, compiled=True)
                table.add("(d') student forward+backward alone, torch.compile", rate)

        def warm_rate(warm: DistillTrainer) -> float:
            rate = timed_train(warm, args.warmup_steps)
            assert warm.teacher_cache.misses == 0, "the cache should have been warm"
            return rate

        device, _ = measured(trainer("a"), reference_and_student_rows)
        cache = tmp / "cache"
        measured(trainer("fill", max_steps=steps_per_epoch, teacher_cache=str(cache)), DistillTrainer.train)
        for mark, tag, overrides in variants:
            _, rate = measured(
                trainer("b", max_steps=run_steps, **overrides), lambda t: timed_train(t, args.warmup_steps)
            )
            table.add(f"(b{mark}) DistillTrainer, no cache{tag}", rate)
            _, rate = measured(
                trainer("c", max_steps=run_steps, teacher_cache=str(cache), **overrides), warm_rate
            )
            table.add(f"(c{mark}) DistillTrainer, warm teacher cache{tag}", rate)

    rows = table.rows
    order = {name[:2]: i for i, name in enumerate(["(a", "(b", "(c", "(d"])}
    rows.sort(key=lambda row: order[row[0][:2]])  # stable: each plain row before its torch.compile one
    hardware = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"\nPH-Reg training throughput: synthetic DINOv2 (hidden {args.hidden_size}, {args.num_layers} layers, "
        f"{args.num_heads} heads, patch {args.patch_size}, random weights) at {args.resolution} px, K = {args.num_views}, "
        f"batch {args.batch_size}, {'bf16 autocast' if args.bf16 else 'float32'}, {args.warmup_steps} warmup + "
        f"{args.steps} timed steps, device {device} ({hardware})\n"
    )
    rate_a = rows[0][1]
    width = max(56, *(len(name) for name, _ in rows))
    print(f"| {'row':<{width}} | {'images/s':>9} | {'vs (a)':>7} |")
    print(f"|{'-' * (width + 2)}|{'-' * 11}|{'-' * 9}|")
    for name, rate in rows:
        print(f"| {name:<{width}} | {rate:>9.1f} | {rate / rate_a:>6.2f}x |")


if __name__ == "__main__":
    main()
