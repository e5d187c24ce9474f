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
"""`phreg test-time-registers`: find the register neurons of a stock model on a folder of images and save the
test-time-registers model (the search itself: `test_time_registers.find_register_neurons`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..models.configuration_phreg_ttr import PhregTestTimeRegistersConfig
from .test_time_registers import (
    DEFAULT_DETECT_OUTLIERS_LAYER,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MIN_IMAGES,
    DEFAULT_NORM_THRESHOLD,
    DEFAULT_TOP_K,
    build_test_time_registers,
    format_register_neurons,
    saved_model_type,
)


@dataclass
class TestTimeRegistersArguments:
    """Options of `phreg test-time-registers` (`phreg test-time-registers --help` lists them with defaults)."""

    __test__ = False  # not a pytest test class, whatever its name

    base: str = field(
        metadata={
            "help": "Hub id or folder of the stock model (DINOv2, DINOv2 with registers, ViT, CLIP vision, CLIP)."
        }
    )
    images: str = field(metadata={"help": "Folder of unlabeled images the neurons are found on."})
    out: str = field(metadata={"help": "Folder the test-time-registers model is saved to (save_pretrained)."})
    max_images: int = field(
        default=DEFAULT_MAX_IMAGES,
        metadata={"help": "Use at most this many readable images (files in sorted order); 0 for all."},
    )
    min_images: int = field(
        default=DEFAULT_MIN_IMAGES,
        metadata={"help": "Refuse fewer readable images (the published search: 100)."},
    )
    norm_threshold: float = field(
        default=DEFAULT_NORM_THRESHOLD,
        metadata={
            "help": "A patch whose norm exceeds it at --detect_outliers_layer is an outlier (published: 30)."
        },
    )
    detect_outliers_layer: int = field(
        default=DEFAULT_DETECT_OUTLIERS_LAYER,
        metadata={
            "help": "Block whose output norms mark the outliers; negative counts from the end (published: -1)."
        },
    )
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": "Register neurons kept (published: 10)."})
    highest_layer: int | None = field(
        default=None, metadata={"help": "Last block a register neuron may come from (default: every block)."}
    )
    resolution: int | None = field(
        default=None,
        metadata={
            "help": "Side of the center crop (default: the image processor's crop size, else image_size)."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Images per forward pass."})
    base_revision: str | None = field(default=None, metadata={"help": "Hub revision of --base."})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, ... (default: cuda if available)."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace the test-time-registers model already in --out (never another kind of folder)."
        },
    )


def check_test_time_registers_out(out: str | os.PathLike, base: str, overwrite: bool) -> Path:
    """`--out` as a Path, or a ValueError: the base model's own folder (always); a non-empty folder unless
    `overwrite`, and even then only one that holds an earlier test-time-registers model."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the model.")
    if Path(base).exists() and out.resolve() == Path(base).resolve():
        raise ValueError(
            f"--out {out} is the --base folder; saving there would replace the base model. Pass another --out."
        )
    if out.is_dir() and any(out.iterdir()):
        if saved_model_type(out) != PhregTestTimeRegistersConfig.model_type:
            raise ValueError(
                f"--out {out} already holds files that are not a test-time-registers model; it is never written "
                "into, even with --overwrite. Pass an empty or new folder."
            )
        if not overwrite:
            raise ValueError(
                f"--out {out} already holds a test-time-registers model; pass --overwrite to replace it, or another "
                "--out."
            )
    return out


def make_test_time_registers(args: TestTimeRegistersArguments) -> tuple[dict[int, list[int]], dict, Path]:
    """Find the register neurons of `args.base` on `args.images` and save the model to `args.out`; returns
    `(neurons, search settings, out)`. Every check that needs no weights runs first."""
    from transformers import AutoImageProcessor

    from ..data import list_image_files
    from ..file_checks import check_local_weights
    from .artifacts import check_model_source, resolve_device

    list_image_files(args.images)
    check_model_source(args.base, "--base")
    out = check_test_time_registers_out(args.out, args.base, args.overwrite)
    for name, value in (
        ("--batch_size", args.batch_size),
        ("--top_k", args.top_k),
        ("--min_images", args.min_images),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    check_local_weights(args.base)
    processor = AutoImageProcessor.from_pretrained(args.base, revision=args.base_revision)
    model, neurons, settings = build_test_time_registers(
        args.base,
        args.images,
        processor=processor,
        base_revision=args.base_revision,
        device=resolve_device(args.device),
        max_images=args.max_images,
        min_images=args.min_images,
        norm_threshold=args.norm_threshold,
        detect_outliers_layer=args.detect_outliers_layer,
        top_k=args.top_k,
        highest_layer=args.highest_layer,
        resolution=args.resolution,
        batch_size=args.batch_size,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return neurons, settings, out


def test_time_registers_main(argv: Sequence[str] | None = None) -> int:
    """`phreg test-time-registers --base BASE --images DIR --out DIR [options]`.

    Exit codes: 0 done, 2 bad input (message on stderr).
    """
    from ..arg_parsing import run_cli

    code, args, result = run_cli(
        TestTimeRegistersArguments,
        argv,
        "phreg test-time-registers",
        "Test-time registers (Jiang et al. 2025), the training-free baseline: find the register neurons of a stock "
        "model on unlabeled images and save the model that moves their activations into one extra token.",
        make_test_time_registers,
    )
    if code is not None:
        return code
    neurons, settings, out = result
    skipped = f", {settings['num_skipped']} unreadable skipped" if settings["num_skipped"] else ""
    print(
        f"Register neurons of {args.base}, found on {settings['num_images']} images "
        f"({settings['num_images_with_outliers']} with outliers{skipped}):"
    )
    print("\n".join(format_register_neurons(neurons)))
    print(f"Saved the test-time-registers model to {out}")
    return 0


__all__ = [
    "TestTimeRegistersArguments",
    "check_test_time_registers_out",
    "make_test_time_registers",
    "test_time_registers_main",
]
