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
"""The training images of a distillation run: loading, checks before the first step, identity, held-out images.

`TrainingDataMixin` is part of `trainer.DistillTrainer` (kept apart so that each file holds one concern): it
builds the dataset and dataloader from `--train_dir` / `--dataset_name` (or the demo's sample photos), refuses a
set with no readable image before the first step, says what identifies the image set (for the teacher cache and
checkpoints), and loads the held-out images the final measures use.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..seeding import crop_seed_for
from .demo import DEMO_TILES, write_demo_images

MAX_DEFAULT_WORKERS = 16


def cpus_per_process() -> int:
    """CPUs this process may run on (its affinity, else the machine's), shared by the training processes of this
    machine (LOCAL_WORLD_SIZE, set by torchrun and accelerate launch)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    return max(cpus // local_processes, 1)


def resolve_num_workers(requested: int | None, device_type: str) -> int:
    """`--dataloader_num_workers`, or when unset the CPUs per process minus one (for the training process itself),
    at most `MAX_DEFAULT_WORKERS`: 0 on a 1-CPU share, 15 on 16 CPUs per GPU.

    Training on the CPU (`device_type == "cpu"`) loads in the training process by default: there the model's own
    threads already use every core, and a worker only takes cores from it. Measured with
    `benchmarks/bench_trainer.py` (ViT-S shape, 224 px, warm teacher cache, 2 CPU cores): 3.7 images/s with one
    worker against 4.9 with none.
    """
    if requested is not None:
        return int(requested)
    if device_type == "cpu":
        return 0
    return max(0, min(cpus_per_process() - 1, MAX_DEFAULT_WORKERS))


class TrainingDataMixin:
    """Data methods of `DistillTrainer` (they read `self.args`, `self.accelerator`, `self.image_processor`, ...)."""

    def _build_data(self) -> None:
        from .. import data

        args, accelerator = self.args, self.accelerator
        self.demo_images_note = None
        train_dir, eval_dir = args.train_dir, args.eval_images
        if args.is_demo and args.train_dir is None and args.dataset_name is None:
            train_dir, eval_dir = self._write_demo_images(eval_dir)
        self.train_dir = train_dir
        self.eval_dir = eval_dir
        with accelerator.main_process_first():
            self.train_dataset = data.load_image_dataset(
                train_dir=train_dir,
                dataset_name=args.dataset_name,
                dataset_config=args.dataset_config,
                image_column=args.image_column,
                split=args.dataset_split,
                streaming=args.streaming,
            )
        # uint8 crops, normalized on the device by the step loop (`normalize_pixels`): 3.4x-3.9x (500 x 375 JPEG)
        # and 3.8x-5.0x (2000 x 1500, decoded at half size) the crops per core of float32 crops normalized here,
        # and a quarter of the bytes per batch to move to the device (see `data.ImageTransform`'s uint8).
        transform = data.ImageTransform.from_image_processor(
            self.image_processor, self.resolution, random_crop=True, uint8=True
        )
        self.image_mean, self.image_std = list(transform.image_mean), list(transform.image_std)
        device = accelerator.device
        self.pixel_mean = torch.tensor(self.image_mean, device=device).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(self.image_std, device=device).view(1, 3, 1, 1)
        self.distill_dataset = self._wrap_dataset(self.train_dataset, transform)
        self.num_train_images = None if args.streaming else len(self.train_dataset)
        self.num_workers = resolve_num_workers(args.dataloader_num_workers, accelerator.device.type)
        workers = self.num_workers > 0
        self.train_dataloader = DataLoader(
            self.distill_dataset,
            batch_size=args.per_device_train_batch_size,
            shuffle=not args.streaming,
            collate_fn=data.collate_skipping_corrupt,
            num_workers=self.num_workers,
            # Workers live for the whole run (no restart, and no re-reading of the cache's index, per epoch); the
            # epoch reaches them through the dataset's shared-memory counter (`data._DistillItems`).
            persistent_workers=workers,
            prefetch_factor=args.dataloader_prefetch_factor if workers else None,
            # Page-locked batches: the copy to the GPU runs asynchronously (Accelerate's non_blocking).
            pin_memory=accelerator.device.type == "cuda",
            # Keep every image: a short last batch still trains (with 8 images per batch and few images, dropping
            # it would waste a large share of a small dataset).
            drop_last=False,
        )

    def _wrap_dataset(self, dataset, transform):
        from .. import data

        args = self.args
        # With a teacher cache each image keeps one crop for the whole run (the one its target was computed on).
        crop_seed_fn = functools.partial(crop_seed_for, args.seed) if args.teacher_cache else None
        dataset_class = data.IterableDistillImageDataset if args.streaming else data.DistillImageDataset
        return dataset_class(
            dataset, transform, image_column=args.image_column, seed=args.seed, crop_seed_fn=crop_seed_fn
        )

    def _write_demo_images(self, eval_dir):
        """The demo's images (see `write_demo_images`), written by the main process into output_dir."""
        root = self.output_dir / "demo_images"
        if self.accelerator.is_main_process:
            write_demo_images(root)
        self.accelerator.wait_for_everyone()
        train_dir, heldout_dir = root / "train", root / "heldout"
        self.demo_images_note = (
            f"scikit-image's sample photos: {len(os.listdir(train_dir))} train, the other "
            f"{len(os.listdir(heldout_dir)) // DEMO_TILES**2} held out as {len(os.listdir(heldout_dir))} tiles"
        )
        return str(train_dir), (eval_dir if eval_dir is not None else str(heldout_dir))

    def _dataset_identity(self) -> dict:
        """What identifies the training images (for the teacher cache and checkpoints): a folder by the bytes of
        its files, a Hub dataset by name, split and datasets' fingerprint (which follows its data files)."""
        from ..data import folder_content_hash

        args = self.args
        if self.train_dir is not None:
            return {
                "train_dir": str(Path(self.train_dir).resolve()),
                "num_images": self.num_train_images,
                "content_sha256": folder_content_hash(self.train_dir),
            }
        identity = {
            "dataset_name": args.dataset_name,
            "dataset_config": args.dataset_config,
            "split": args.dataset_split,
            "image_column": args.image_column,
        }
        if not args.streaming:
            identity["num_images"] = self.num_train_images
            identity["fingerprint"] = getattr(self.train_dataset, "_fingerprint", None)
        return identity

    def _check_training_images(self, max_streamed: int = 1000) -> None:
        """Raise before the first step when no training image can be read (else every step would be skipped
        and an untrained model saved). Stops at the first readable image, so a sound set costs one decode."""
        from ..data import UNREADABLE_IMAGE_ERRORS, open_image, unreadable_reason

        args = self.args
        source = self.train_dir or args.dataset_name
        examples = iter(self.train_dataset)
        reasons = []
        for count, example in enumerate(examples):
            if args.streaming and count >= max_streamed:
                raise ValueError(
                    f"The first {max_streamed} images of {source} are all unreadable (e.g. {reasons[0]}); check "
                    "--image_column and the data."
                )
            value = example[args.image_column]
            try:
                open_image(value)
                return
            except UNREADABLE_IMAGE_ERRORS as error:
                reasons.append(unreadable_reason(value, error))
        raise ValueError(
            f"None of the {len(reasons)} training images in {source} can be read, so nothing would train:\n  "
            + "\n  ".join(reasons[:5])
            + ("\n  ..." if len(reasons) > 5 else "")
            + "\nPass a folder or dataset of readable images (JPEG, PNG, WebP, ...)."
        )

    def _eval_pixel_values(self) -> tuple[torch.Tensor, list[int], str]:
        """Center-cropped held-out images `(n, 3, R, R)`, their indices, and a description of them."""
        from .. import data

        args = self.args
        transform = data.ImageTransform.from_image_processor(
            self.image_processor, self.resolution, random_crop=False
        )
        if self.eval_dir is not None:
            from ..data import load_images  # the folder reader of `phreg eval`

            loaded = load_images(self.eval_dir, transform, args.num_eval_images, option="--eval_images")
            self.eval_image_names = loaded.names  # previews are named after them
            count = len(loaded.indices)
            if self.demo_images_note is not None and args.eval_images is None:
                description = (
                    f"{count} held-out images in {self.eval_dir}, center-cropped ({self.demo_images_note})"
                )
            else:
                description = f"{count} held-out images from {self.eval_dir}, center-cropped"
            return loaded.pixel_values, loaded.indices, description

        dataset_class = data.IterableDistillImageDataset if args.streaming else data.DistillImageDataset
        dataset = dataset_class(self.train_dataset, transform, image_column=args.image_column)
        items = []
        iterator = iter(dataset) if args.streaming else (dataset[i] for i in range(len(dataset)))
        for item in iterator:
            if "unreadable" not in item:
                items.append(item)
            if len(items) >= args.num_eval_images:
                break
        if not items:
            raise ValueError("No readable image for the final measures in the training set.")
        self.eval_image_names = [f"train_{int(item['index']):05d}" for item in items]
        description = (
            f"{len(items)} of the training images, center-cropped (no held-out images were given, so these "
            "measures are not held out; pass --eval_images FOLDER for held-out ones)"
        )
        return (
            torch.stack([item["pixel_values"] for item in items]),
            [int(i["index"]) for i in items],
            description,
        )
