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
"""The test-time-registers rows of `phreg eval`, `phreg probe`, `phreg eval-segmentation` and `phreg benchmark`:
the training-free baseline (Jiang et al. 2025) measured beside base, teacher and student.

Two sources, one per run:

- `--test_time_registers DIR`: a model saved by `phreg test-time-registers`, refused unless made from `--base`
  (`load_test_time_registers`);
- `--ttr_images DIR`: built on the fly from `--base` and that folder of images (`build_test_time_registers`),
  with the settings `phreg test-time-registers` uses by default (the published ones for a base named in
  `PUBLISHED_SETTINGS`). The neurons found are printed.

Either way the report records where the model came from, its register neurons and the search settings
(`ttr_record`). `phreg benchmark` keys stored results by a folder's file hashes, or for an on-the-fly model by
`on_the_fly_fingerprint`: a hash of the base's fingerprint, the images' contents and the settings, which are all
that decides its neurons, so a result is never reused once any of them changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import field

from .test_time_registers import (
    DEFAULT_DETECT_OUTLIERS_LAYER,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MIN_IMAGES,
    DEFAULT_NORM_THRESHOLD,
    DEFAULT_TOP_K,
    PUBLISHED_SETTINGS,
)


def test_time_registers_field(rows: str = "the row test_time_registers"):
    """The `--test_time_registers` option of an argument dataclass; `rows`: the rows it adds, for the help."""
    return field(
        default=None,
        metadata={
            "help": "Folder of a test-time-registers model of --base (`phreg test-time-registers --out`): adds "
            f"{rows}, the training-free baseline."
        },
    )


def ttr_images_field(rows: str = "the row test_time_registers"):
    """The `--ttr_images` option of an argument dataclass; `rows`: the rows it adds, for the help."""
    return field(
        default=None,
        metadata={
            "help": "Folder of unlabeled images: build the test-time-registers model of --base on the fly (the "
            "defaults of `phreg test-time-registers`; the published setting for facebook/dinov2-large) for "
            f"{rows}; instead of --test_time_registers."
        },
    )


def ttr_min_images_field():
    """The `--ttr_min_images` option: the on-the-fly search refuses fewer images."""
    return field(
        default=DEFAULT_MIN_IMAGES,
        metadata={"help": "With --ttr_images: refuse fewer readable images (the published search: 100)."},
    )


def search_settings(base: str) -> dict:
    """The settings of an on-the-fly search for `base`: `phreg test-time-registers`'s defaults, or the published
    setting of a base named in `PUBLISHED_SETTINGS`."""
    defaults = dict(
        detect_outliers_layer=DEFAULT_DETECT_OUTLIERS_LAYER,
        norm_threshold=DEFAULT_NORM_THRESHOLD,
        highest_layer=None,
        top_k=DEFAULT_TOP_K,
        max_images=DEFAULT_MAX_IMAGES,
    )
    return {**defaults, **PUBLISHED_SETTINGS.get(base, {})}


def check_ttr_options(args) -> None:
    """Refuse both sources at once, a bad `--ttr_min_images`, and a `--ttr_images` folder without images, before
    any model loads."""
    if args.test_time_registers and args.ttr_images:
        raise ValueError(
            "Pass either --test_time_registers DIR (a saved test-time-registers model) or --ttr_images DIR (build "
            "one from --base on the fly), not both."
        )
    if args.ttr_min_images < 1:
        raise ValueError(f"--ttr_min_images must be at least 1, got {args.ttr_min_images}.")
    if args.ttr_images:
        from ..data import list_image_files

        count = len(list_image_files(args.ttr_images, "--ttr_images"))
        if count < args.ttr_min_images:
            raise ValueError(
                f"--ttr_images {args.ttr_images} holds {count} image files, fewer than --ttr_min_images="
                f"{args.ttr_min_images} (the published search uses 100 to 1000); add images or lower --ttr_min_images."
            )


def has_test_time_registers(args) -> bool:
    return bool(args.test_time_registers or args.ttr_images)


def ttr_model_name(args) -> str | None:
    """How the row names its model: the folder, or what it was built from."""
    if args.test_time_registers:
        return args.test_time_registers
    if args.ttr_images:
        return f"{args.base} + test-time registers found on {args.ttr_images}"
    return None


def load_ttr_model(args, base_model, *, processor=None, device=None, announce: bool = True):
    """The test-time-registers model of the run (float32, eval mode, on `device`), or None when neither option
    is given.

    Args:
        args: has base, test_time_registers, ttr_images, ttr_min_images (and base_revision when it has one).
        base_model: the base the folder must have been made from (the checks of `load_test_time_registers`).
        processor: the image processor the on-the-fly search reads the images with (default: the base's).
        announce: print the neurons an on-the-fly search found.
    """
    from .test_time_registers import (
        build_test_time_registers,
        format_register_neurons,
        load_test_time_registers,
    )

    if args.test_time_registers:
        model = load_test_time_registers(args.test_time_registers, base_model, args.base)
    elif args.ttr_images:
        try:
            model, neurons, found = build_test_time_registers(
                args.base,
                args.ttr_images,
                processor=processor,
                base_revision=getattr(args, "base_revision", None),
                device=device,
                min_images=args.ttr_min_images,
                progress=announce,
                **search_settings(args.base),
            )
        except ValueError as error:  # e.g. no outliers at the default threshold
            raise ValueError(
                f"{error} (--ttr_images searches with the defaults of `phreg test-time-registers`; for other "
                "settings run it with them and pass its --out folder as --test_time_registers DIR.)"
            ) from None
        if announce:
            skipped = f", {found['num_skipped']} unreadable skipped" if found["num_skipped"] else ""
            print(
                f"Test-time registers of {args.base}, built on the fly on {found['num_images']} images of "
                f"{args.ttr_images} ({found['num_images_with_outliers']} with outliers{skipped}); register neurons:"
            )
            print("\n".join(format_register_neurons(neurons)))
    else:
        return None
    model = model.float().eval()
    return model.to(device) if device is not None else model


def ttr_record(args, model) -> dict | None:
    """What the report records of the test-time-registers model: its source, register neurons and search
    settings (None without one)."""
    if model is None:
        return None
    source = (
        {"source": "folder", "folder": args.test_time_registers}
        if args.test_time_registers
        else {"source": "built on the fly", "images": args.ttr_images, "min_images": args.ttr_min_images}
    )
    neurons = {str(layer): list(ids) for layer, ids in (model.config.register_neurons or {}).items()}
    return {**source, "register_neurons": neurons, "search_settings": model.config.search_settings}


def ttr_report(args, model) -> dict:
    """`{"test_time_registers": ttr_record(...)}` for a report when the run has that row, else `{}`."""
    record = ttr_record(args, model)
    return {} if record is None else {"test_time_registers": record}


def images_fingerprint(folder: str) -> str:
    """sha256 of every image file of `folder` (relative path and content)."""
    from pathlib import Path

    from ..data import list_image_files
    from ..file_checks import file_sha256

    digest = hashlib.sha256()
    for path in list_image_files(folder, "--ttr_images"):
        digest.update(f"{path.relative_to(Path(folder)).as_posix()}\t{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def on_the_fly_fingerprint(args, base_fingerprint: str) -> str:
    """The fingerprint of the model `--ttr_images` builds (see the module docstring): a hash of the base's
    fingerprint, the images' contents and the search settings. (A saved folder's is its file hashes:
    `benchmark_results.model_fingerprint`.)"""
    from ..constants import VERSION

    payload = {
        "built_on_the_fly_from": base_fingerprint,
        "images": images_fingerprint(args.ttr_images),
        "settings": {**search_settings(args.base), "min_images": args.ttr_min_images},
        "phreg_hf_version": VERSION,
    }
    return "ttr:" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


__all__ = [
    "check_ttr_options",
    "has_test_time_registers",
    "images_fingerprint",
    "load_ttr_model",
    "on_the_fly_fingerprint",
    "search_settings",
    "test_time_registers_field",
    "ttr_images_field",
    "ttr_min_images_field",
    "ttr_model_name",
    "ttr_record",
    "ttr_report",
]
