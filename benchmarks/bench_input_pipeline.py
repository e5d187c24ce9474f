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
"""Input pipeline throughput: can the CPUs feed one GPU? Per-core rate of each stage, the whole loader, the GPU's need.

    python benchmarks/bench_input_pipeline.py            # a minute or two
    python benchmarks/bench_input_pipeline.py --quick    # smoke run, well under a minute

Rows (one process, torch at `--threads` threads, default 1, so that stage rates are per core):

- decode: `data.open_image` of a 500 x 375 JPEG (Flickr30k's typical size; scikit-image photos resized and saved
  at quality 90), and `data.ImageTransform` (short-side resize to R = 518 px, random crop, normalize), alone and
  together.
- float vs uint8 crops, decode included, of the 500 x 375 JPEG and of a 2000 x 1500 one (a photo camera's size):
  the float32 path (full decode, whole-image resize, crop, normalize in the worker; baseline) against the
  trainer's `ImageTransform(uint8=True)` (JPEG draft when the short side is >= 2 R, torch's uint8 bicubic
  resize, crop, uint8 out), and the uint8 crops' normalization as the device does it (`data.normalize_pixels`,
  here on the CPU); with the largest and mean differences between the two paths' crops, in grey levels.
- cache read + verify: `CachedTargetReader.read` of one 1369 x 768 float16 row (a DINOv2-B target at 518 px),
  checksum verified, from a warm teacher cache (shards in the OS page cache). Baseline: the checksums alone over
  the same bytes, blake2b (cache format 2) vs xxh3_64 (format 3, now used).
- collate: `data.collate_skipping_corrupt` of batches of `--batch_size` items (uint8 pixels + cached target).
- loader: a torch `DataLoader` over `data.DistillImageDataset` built as the trainer builds it with a warm
  `--teacher_cache` (imagefolder dataset, fixed crop seeds, cached targets read in the workers, persistent workers,
  prefetch), one epoch after a warm-up epoch, with 0, 1 and 2 workers; ratios against 0 workers.
- projection: per-core rate x `--cores` (a linear projection, not a measurement), from the 1-worker loader and
  from the sum of the per-image stage times (uint8 crops of the 500 x 375 JPEG, as the trainer makes them),
  against the GPU's need: `tflop_per_image` (ViT-B/14 student at 518 px, 1386 tokens, forward + backward, 11
  frozen blocks without weight gradients) at `mfu` of the GPU's bf16 dense peak.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import tempfile
import time
from pathlib import Path

import torch
import xxhash
from PIL import Image
from torch.utils.data import DataLoader

from phreg_hf.data import (
    DistillImageDataset,
    ImageTransform,
    collate_skipping_corrupt,
    load_image_dataset,
    normalize_pixels,
    open_image,
    sample_image_paths,
)
from phreg_hf.distill.teacher_cache import CachedTargetReader, TeacherTargetCache, build_fingerprint
from phreg_hf.seeding import crop_seed_for

JPEG_SIZE = (500, 375)
LARGE_JPEG_SIZE = (2000, 1500)
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run, < 60 s)")
    parser.add_argument("--resolution", type=int, default=518, help="R, crop size in px")
    parser.add_argument("--tokens", type=int, default=1369, help="N, patch tokens of a cached target row")
    parser.add_argument("--hidden", type=int, default=768, help="C, channels of a cached target row")
    parser.add_argument("--num_images", type=int, default=128, help="JPEGs in the loader's folder")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the images per stage row")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of this process")
    parser.add_argument("--cores", type=int, default=16, help="CPU cores per GPU for the projection")
    parser.add_argument("--tflop_per_image", type=float, default=0.65, help="student fwd+bwd per image")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="GPU bf16 dense peak (H200: 989)")
    parser.add_argument("--mfu", type=float, default=0.40, help="fraction of the peak reached")
    args = parser.parse_args()
    if args.quick:
        args.num_images, args.repeats = 16, 1
    return args


def write_jpegs(folder: Path, num_images: int, size: tuple[int, int] = JPEG_SIZE) -> list[Path]:
    """`num_images` JPEGs of scikit-image's sample photos resized to `size` (mirrored copies when there are more)."""
    folder.mkdir(parents=True)
    photos = [open_image(p).resize(size, Image.Resampling.BICUBIC) for p in sample_image_paths()]
    paths = []
    for i in range(num_images):
        image = photos[i % len(photos)]
        if (i // len(photos)) % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def rate(function, items, repeats: int) -> float:
    """Calls per second of `function(item)` over `items`, `repeats` times, after one untimed call."""
    function(items[0])
    start = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            function(item)
    return repeats * len(items) / (time.perf_counter() - start)


def float_vs_uint8(paths: list[Path], resolution: int, repeats: int) -> dict:
    """Crops/s of the float32 and the uint8 path (decode included), of the uint8 crops' normalization, and the
    largest and mean |difference| between the two paths' crops in grey levels (same crop seeds)."""
    float_crops = ImageTransform(resolution, random_crop=True)
    uint8_crops = ImageTransform(resolution, random_crop=True, uint8=True)
    mean, std = float_crops._mean, float_crops._std
    seeded = list(enumerate(paths))
    differences = []
    for seed, path in seeded:
        grey = (float_crops.load(path, crop_seed=seed) * std + mean) * 255
        differences.append((grey - uint8_crops.load(path, crop_seed=seed).float()).abs())
    crops = [uint8_crops.load(path, crop_seed=seed) for seed, path in seeded]
    image, full_size = uint8_crops.open(paths[0])
    return {
        "draft": round(full_size[0] / image.width),
        "float": rate(lambda item: float_crops.load(item[1], crop_seed=item[0]), seeded, repeats),
        "uint8": rate(lambda item: uint8_crops.load(item[1], crop_seed=item[0]), seeded, repeats),
        "normalize": rate(lambda crop: normalize_pixels(crop, mean, std), crops, repeats * 4),
        "max_levels": max(float(d.max()) for d in differences),
        "mean_levels": sum(float(d.mean()) for d in differences) / len(differences),
    }


def fill_cache(directory: Path, num_images: int, tokens: int, hidden: int) -> None:
    fingerprint = build_fingerprint(
        teacher_hash="benchmark",
        resolution=518,
        num_views=10,
        shift_frac=0.15,
        flip_prob=0.5,
        fill_value=0.0,
        seed=SEED,
        image_mean=(0.485, 0.456, 0.406),
        image_std=(0.229, 0.224, 0.225),
        dataset_identity={"benchmark": True},
        storage_dtype="float16",
    )
    cache = TeacherTargetCache(directory, fingerprint)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, num_images, 16):
        indices = list(range(start, min(start + 16, num_images)))
        targets = torch.randn(len(indices), tokens, hidden, generator=generator)
        cache.put(indices, targets, [crop_seed_for(SEED, i) for i in indices])
    cache.flush()


def loader_rate(dataset, workers: int, batch_size: int) -> float:
    """images/s of one epoch of the trainer's DataLoader setup, after a warm-up epoch (worker start-up)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_skipping_corrupt,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
        drop_last=False,
    )
    for batch in loader:  # warm-up epoch
        assert batch.get("has_target") and all(batch["has_target"]), "the cache should be warm"
    start = time.perf_counter()
    images = sum(len(batch["indices"]) for batch in loader)
    elapsed = time.perf_counter() - start
    del loader
    return images / elapsed


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    row_bytes = args.tokens * args.hidden * 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_jpegs(tmp / "images", args.num_images)
        float_transform = ImageTransform(args.resolution, random_crop=True)
        decoded = [open_image(p) for p in paths]
        decode = rate(open_image, paths, args.repeats)
        crop = rate(lambda image: float_transform(image, crop_seed=7), decoded, args.repeats)
        del decoded
        crops = {
            JPEG_SIZE: float_vs_uint8(paths, args.resolution, args.repeats),
            LARGE_JPEG_SIZE: float_vs_uint8(
                write_jpegs(tmp / "large", max(args.num_images // 8, 4), LARGE_JPEG_SIZE),
                args.resolution,
                args.repeats,
            ),
        }
        # The trainer's crops (uint8), for the collate, loader and projection rows.
        transform = ImageTransform(args.resolution, random_crop=True, uint8=True)
        decode_crop = crops[JPEG_SIZE]["uint8"]

        cache_dir = tmp / "cache"
        fill_cache(cache_dir, args.num_images, args.tokens, args.hidden)
        reader = CachedTargetReader(cache_dir)
        reader.refresh()
        indices = list(range(args.num_images))
        cache_read = rate(reader.read, indices, args.repeats * 4)
        rows = [reader.read(i).reshape(-1).view(torch.uint8).numpy() for i in indices[:8]]
        blake = rate(lambda data: hashlib.blake2b(data, digest_size=8).digest(), rows, args.repeats * 16)
        xxh3 = rate(xxhash.xxh3_64_intdigest, rows, args.repeats * 16)

        items = [
            {"pixel_values": transform.load(p, crop_seed=i), "index": i, "target": reader.read(i)}
            for i, p in enumerate(paths[: args.batch_size])
        ]
        collate = args.batch_size * rate(collate_skipping_corrupt, [items] * 4, args.repeats * 4)
        del items, rows

        dataset = DistillImageDataset(
            load_image_dataset(train_dir=str(tmp / "images"), cache_dir=str(tmp / "hf")),
            transform,
            seed=SEED,
            crop_seed_fn=functools.partial(crop_seed_for, SEED),
            target_reader=CachedTargetReader(cache_dir),
        )
        loaders = {workers: loader_rate(dataset, workers, args.batch_size) for workers in (0, 1, 2)}

    per_image_s = 1 / decode_crop + 1 / cache_read + 1 / collate
    stage_sum = 1 / per_image_s
    need = args.peak_tflops * args.mfu / args.tflop_per_image
    print(
        f"\nInput pipeline: {JPEG_SIZE[0]}x{JPEG_SIZE[1]} JPEG -> {args.resolution} px, cached target "
        f"{args.tokens}x{args.hidden} float16 ({row_bytes / 1e6:.2f} MB), batch {args.batch_size}, "
        f"{args.num_images} images, torch threads {torch.get_num_threads()}, "
        f"{time.perf_counter() - began:.0f} s\n"
    )
    print(
        f"GPU need = peak {args.peak_tflops:g} TFLOP/s x MFU {args.mfu:g} / {args.tflop_per_image:g} TFLOP per "
        f"image (ViT-B/14 student fwd+bwd at 518 px, 1386 tokens) = {need:.0f} images/s\n"
    )
    crop_rows = []
    for (width, height), row in crops.items():
        draft = f" (draft 1/{row['draft']})" if row["draft"] > 1 else ""
        crop_rows += [
            (
                f"{width}x{height}: float32 decode + resize + crop + normalize (baseline)",
                row["float"],
                "",
                "1.00x",
            ),
            (
                f"{width}x{height}: uint8 decode{draft} + resize + crop (trainer)",
                row["uint8"],
                "",
                f"{row['uint8'] / row['float']:.2f}x",
            ),
            (
                f"{width}x{height}: + normalize_pixels (on the device; here on the CPU)",
                row["normalize"],
                "",
                "",
            ),
        ]
    table = [
        ("decode (open_image) alone", decode, "", ""),
        ("float32 resize + crop + normalize alone", crop, "", ""),
        *crop_rows,
        ("cache read + verify (CachedTargetReader.read)", cache_read, cache_read * row_bytes / 1e9, ""),
        ("  baseline: blake2b of the row's bytes (format 2)", blake, blake * row_bytes / 1e9, "1.00x"),
        (
            "  xxh3_64 of the row's bytes (format 3, now)",
            xxh3,
            xxh3 * row_bytes / 1e9,
            f"{xxh3 / blake:.2f}x",
        ),
        ("collate (collate_skipping_corrupt, uint8 pixels)", collate, "", ""),
        ("per-core, stages summed (1 / sum of per-image times, uint8 crops)", stage_sum, "", ""),
        ("loader, 0 workers (baseline)", loaders[0], "", "1.00x"),
        ("loader, 1 worker", loaders[1], "", f"{loaders[1] / loaders[0]:.2f}x"),
        ("loader, 2 workers", loaders[2], "", f"{loaders[2] / loaders[0]:.2f}x"),
        ("GPU need at 518 px (formula above, baseline)", need, "", "1.00x"),
        (f"projected: 1-worker loader x {args.cores} cores", loaders[1] * args.cores, "", ""),
        (f"projected: stages summed x {args.cores} cores", stage_sum * args.cores, "", ""),
    ]
    table[-2] = (*table[-2][:3], f"{loaders[1] * args.cores / need:.2f}x")
    table[-1] = (*table[-1][:3], f"{stage_sum * args.cores / need:.2f}x")
    width = max(len(name) for name, *_ in table)
    print(f"| {'row':<{width}} | {'images/s':>9} | {'GB/s':>5} | {'ratio':>6} |")
    print(f"|{'-' * (width + 2)}|{'-' * 11}|{'-' * 7}|{'-' * 8}|")
    for name, images, gbps, ratio in table:
        gbps = f"{gbps:.2f}" if gbps != "" else ""
        print(f"| {name:<{width}} | {images:>9.1f} | {gbps:>5} | {ratio:>6} |")
    print(
        "\nRatios: uint8 vs float32 crops of the same JPEG size, xxh3 vs blake2b, loaders vs 0 workers, "
        f"projections vs the GPU need. Projections are per-core rates x {args.cores}, not measured on "
        f"{args.cores} cores; stages summed: uint8 decode + crop of the {JPEG_SIZE[0]}x{JPEG_SIZE[1]} JPEG, cache "
        "read, collate."
    )
    for (width, height), row in crops.items():
        print(
            f"uint8 vs float32 crops, {width}x{height}: at most {row['max_levels']:.0f} grey levels apart, "
            f"{row['mean_levels']:.2f} on average."
        )


if __name__ == "__main__":
    main()
