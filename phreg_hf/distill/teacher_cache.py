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
"""On-disk cache of denoised teacher targets, so that epochs after the first only run the student.

The denoised target of an image depends only on the image and the K views drawn for it (docs/method.md), so it
can be computed once and reused. With a cache the trainer therefore fixes, per image index:

- the crop: `crop_seed_for(seed, index)` seeds the random square crop, so the student sees, every epoch,
  exactly the pixels the target was computed on;
- the views: `view_seed_for(seed, index)` seeds the K shifts/flips.

Trade-off: without the cache every epoch draws a new crop and new views for each image (more augmentation,
K teacher forwards per image per epoch); with it the crop and views are fixed per image (less augmentation,
the teacher runs once per image over the whole run). For multi-epoch runs on a fixed image set the cache is
much faster; for a single pass over a large set it only costs disk.

Layout of the cache directory:

- `fingerprint.json`: what the targets depend on (teacher config and weight hash, resolution, K, shift
  fraction, flip probability, fill value, seed, normalization, dataset identity, storage dtype, how the crops
  were made: `data.ImageTransform.pipeline`, since uint8 crops differ slightly from float ones). Opening a
  cache with a different fingerprint raises a `ValueError` naming what changed.
- `targets-rank{R}-{uid}.safetensors`: shards written by process R (each process writes its own shards, with
  a random uid, so processes, restarts and resumes never collide; any process reads every shard). A shard
  holds `indices` `(M,)`, `crop_seeds` `(M,)`, `targets` `(M, N, C)` and `checksums` `(M,)`, a 63-bit
  xxh3_64 of each target row, verified whenever a row is read: bytes overwritten on disk are refused, naming
  the shard, never used. xxh3 (non-cryptographic: it guards against damage, not against an attacker who can
  write the folder) runs at several GB/s per core, where blake2b ran at 0.39 GB/s, a third of the step time
  of a 518 px DINOv2-B target. Shards are written to a temporary name and renamed, so a reader never sees a partial
  file and a crash loses at most the unflushed entries; the temporary files an interrupted run left behind
  are removed when the main process opens the cache.

A corrupt fingerprint or shard raises a `ValueError` that names the file and says to delete the cache; so does a
cache of an older format (format 2 checksummed rows with blake2b): its rows are never reinterpreted.

`CachedTargetReader` is the read side alone (index the shards, read and verify rows): picklable and opened lazily,
so that each DataLoader worker reads and verifies the targets of its own batch (`data.DistillImageDataset`);
only the training process writes (`TeacherTargetCache.put` / `flush`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import xxhash
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..data import UINT8_PIPELINE
from ..seeding import MASK_63

# 2: per-row blake2b checksums; 3: per-row xxh3_64 checksums. A cache of another format is refused, never misread.
CACHE_FORMAT_VERSION = 3
FINGERPRINT_FILE = "fingerprint.json"
SHARD_PREFIX = "targets-"
SHARD_SUFFIX = ".safetensors"
STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def hash_model(model: torch.nn.Module) -> str:
    """sha256 over a model's config and every tensor of its state dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        config_dict = config.to_diff_dict() if hasattr(config, "to_diff_dict") else dict(config)
        # Fields that say nothing about the computed function.
        for key in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
            config_dict.pop(key, None)
        digest.update(json.dumps(config_dict, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        # reshape(-1): a 0-dim tensor (e.g. CLIP's logit_scale) cannot be viewed as bytes directly.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def build_fingerprint(
    *,
    teacher_hash: str,
    resolution: int,
    num_views: int,
    shift_frac: float,
    flip_prob: float,
    fill_value: Sequence[float] | float,
    seed: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    dataset_identity: dict,
    storage_dtype: str,
    crop_pipeline: str = UINT8_PIPELINE,
) -> dict:
    """Everything a cached target depends on, as a JSON-able dict (see the module docstring). `crop_pipeline`
    names how the crops were made (`data.ImageTransform.pipeline`; the trainer's: uint8)."""
    if isinstance(fill_value, torch.Tensor):
        fill_value = fill_value.flatten().tolist()
    return {
        "format_version": CACHE_FORMAT_VERSION,
        "teacher": teacher_hash,
        "resolution": int(resolution),
        "num_views": int(num_views),
        "shift_frac": float(shift_frac),
        "flip_prob": float(flip_prob),
        "fill_value": [round(float(v), 6) for v in fill_value]
        if isinstance(fill_value, (list, tuple))
        else round(float(fill_value), 6),
        "seed": int(seed),
        "image_mean": [round(float(v), 6) for v in image_mean],
        "image_std": [round(float(v), 6) for v in image_std],
        "dataset": dataset_identity,
        "storage_dtype": storage_dtype,
        "crop_pipeline": crop_pipeline,
    }


def row_checksum(row: torch.Tensor) -> int:
    """63-bit xxh3_64 of a stored target row's bytes (its dtype as stored), hashed in place (no copy)."""
    data = row.contiguous().reshape(-1).view(torch.uint8).numpy()
    return xxhash.xxh3_64_intdigest(data) & MASK_63


def old_format_error(directory: Path, found, where: Path) -> ValueError:
    """The refusal of a cache written in another format (e.g. format 2's blake2b checksums)."""
    return ValueError(
        f"The teacher cache in {directory} was written in cache format {found} ({where.name}), by another version "
        f"of phreg-hf; this one reads format {CACHE_FORMAT_VERSION} only (rows checksummed with xxh3_64) and never "
        f"reinterprets older rows. Delete {directory}: the next run with --teacher_cache {directory} rebuilds it "
        "(the teacher runs once more per image). Or pass another --teacher_cache."
    )


class CachedTargetReader:
    """The read side of a teacher cache: indexes its shards, reads a row and verifies its checksum.

    Picklable and lazy (the open shard handles are dropped when pickled and reopened on first use), so each
    DataLoader worker holds its own. It re-indexes the folder on a lookup miss when the folder changed (a shard
    was added) or a second has passed, so targets flushed by the training process reach the workers.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._reset()

    def _reset(self) -> None:
        self._locations: dict[int, tuple[Path, int]] = {}  # image index -> (shard path, row)
        self._crop_seeds: dict[int, int] = {}
        self._handles: dict[Path, object] = {}  # open handles are memory-mapped, cheap
        self._checksums: dict[Path, list[int]] = {}
        # (folder mtime, time.monotonic()) of the last refresh
        self._looked_at: tuple[int, float] | None = None

    def __getstate__(self) -> dict:
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.directory = state["directory"]
        self._reset()

    def corrupt(self, path: Path, reason: str) -> ValueError:
        return ValueError(
            f"The teacher cache shard {path} is corrupt ({reason}). Delete {self.directory} (the targets are "
            "recomputed) or pass another --teacher_cache."
        )

    def refresh(self) -> None:
        """Index shards written since the last look (by any process)."""
        self._looked_at = (self.directory.stat().st_mtime_ns, time.monotonic())
        for path in sorted(self.directory.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
            if path in self._handles:
                continue
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
                version = (handle.metadata() or {}).get("format_version")
                if version != str(CACHE_FORMAT_VERSION):
                    raise old_format_error(self.directory, version or "unknown", path)
                indices = handle.get_tensor("indices").tolist()
                crop_seeds = handle.get_tensor("crop_seeds").tolist()
                checksums = handle.get_tensor("checksums").tolist()
                num_rows = handle.get_slice("targets").get_shape()[0]
            except (SafetensorError, OSError, KeyError, RuntimeError) as error:
                raise self.corrupt(path, f"{type(error).__name__}: {error}") from None
            if not len(indices) == len(crop_seeds) == len(checksums) == num_rows:
                raise self.corrupt(path, "its tensors have different lengths")
            self._handles[path] = handle
            self._checksums[path] = checksums
            for row, (index, crop_seed) in enumerate(zip(indices, crop_seeds, strict=True)):
                self._locations[int(index)] = (path, row)
                self._crop_seeds[int(index)] = int(crop_seed)

    def _maybe_refresh(self) -> None:
        if self._looked_at is None:
            self.refresh()
            return
        mtime, when = self._looked_at
        if self.directory.stat().st_mtime_ns != mtime or time.monotonic() - when >= 1.0:
            self.refresh()

    def __contains__(self, index: int) -> bool:
        return int(index) in self._locations

    def indices(self) -> set[int]:
        return set(self._locations)

    def crop_seed(self, index: int, look_again: bool = True) -> int | None:
        """The crop seed image `index` was cached with, or None when it is not (yet) on disk."""
        index = int(index)
        if index not in self._locations and look_again:
            self._maybe_refresh()
        return self._crop_seeds.get(index)

    def read(self, index: int) -> torch.Tensor:
        """The stored row `(N, C)` of image `index` (its storage dtype), checksum verified; KeyError if absent."""
        index = int(index)
        path, row = self._locations[index]
        try:
            target = self._handles[path].get_slice("targets")[row : row + 1][0]
        except (SafetensorError, OSError, RuntimeError) as error:
            raise self.corrupt(path, f"{type(error).__name__}: {error}") from None
        if row_checksum(target) != self._checksums[path][row]:
            raise self.corrupt(path, f"the target of image {index} does not match its checksum")
        return target


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class TeacherTargetCache:
    """Denoised targets keyed by image index, in safetensors shards (see the module docstring).

    Args:
        directory: the cache folder (created if missing).
        fingerprint: from `build_fingerprint`; compared with the one stored in `directory`.
        process_index: this process's rank, used in the names of the shards it writes.
        storage_dtype: "float16" (default in the trainer: half the disk of float32, ~3 significant digits,
            plenty for regression targets), "bfloat16" or "float32".
        max_shard_bytes: pending targets are flushed to a new shard once they reach this size.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        fingerprint: dict,
        process_index: int = 0,
        storage_dtype: str = "float16",
        max_shard_bytes: int = 256 * 2**20,
    ):
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}.")
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.process_index = int(process_index)
        self.storage_dtype = STORAGE_DTYPES[storage_dtype]
        self.max_shard_bytes = int(max_shard_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.process_index == 0:
            # Temporary files of an interrupted flush (the main process opens the cache before the others).
            for leftover in self.directory.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
        self._check_or_write_fingerprint()
        self.reader = CachedTargetReader(self.directory)
        self._pending: dict[int, tuple[torch.Tensor, int]] = {}
        self._pending_bytes = 0
        self.hits = 0
        self.misses = 0
        self.refresh()

    # ------------------------------------------------------------------------------------------------------
    def _check_or_write_fingerprint(self) -> None:
        path = self.directory / FINGERPRINT_FILE
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(
                    f"The teacher cache's {path} is corrupt ({type(error).__name__}: {error}), so nothing says "
                    f"how its targets were computed. Delete {self.directory} (the targets are recomputed) or pass "
                    "another --teacher_cache."
                ) from None
            found = stored.get("format_version") if isinstance(stored, dict) else None
            if found is not None and found != CACHE_FORMAT_VERSION:
                raise old_format_error(self.directory, found, path)
            if stored != self.fingerprint:
                changes = [
                    f"{key}: cached {stored.get(key, '<missing>')!r}, now {self.fingerprint.get(key, '<missing>')!r}"
                    for key in sorted(set(stored) | set(self.fingerprint))
                    if stored.get(key) != self.fingerprint.get(key)
                ]
                raise ValueError(
                    f"The teacher cache in {self.directory} was built with different settings, so its targets "
                    "do not fit this run:\n  "
                    + "\n  ".join(changes)
                    + "\nDelete that directory (the targets "
                    "are recomputed) or pass another --teacher_cache."
                )
            return
        leftovers = [p.name for p in self.directory.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")]
        if leftovers:
            raise ValueError(
                f"{self.directory} holds target shards but no {FINGERPRINT_FILE}, so nothing says how they were "
                "computed. Delete the directory or pass another --teacher_cache."
            )
        _atomic_write_text(path, json.dumps(self.fingerprint, indent=2, sort_keys=True))

    def refresh(self) -> None:
        """Index shards written since the last look (by any process)."""
        self.reader.refresh()

    def __len__(self) -> int:
        return len(self.reader.indices() | set(self._pending))

    def __contains__(self, index: int) -> bool:
        return int(index) in self.reader or int(index) in self._pending

    def stored_crop_seed(self, index: int) -> int | None:
        index = int(index)
        return self._pending[index][1] if index in self._pending else self.reader.crop_seed(index, False)

    def _get_one(self, index: int) -> torch.Tensor:
        if index in self._pending:
            return self._pending[index][0]
        return self.reader.read(index)

    # ------------------------------------------------------------------------------------------------------
    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """Stored targets `(B, N, C)` (float32) for cached `indices`; KeyError if one is missing."""
        missing = [int(i) for i in indices if int(i) not in self]
        if missing:
            self.refresh()
            missing = [i for i in missing if i not in self]
            if missing:
                raise KeyError(f"Image indices {missing[:10]} are not in the teacher cache {self.directory}.")
        return torch.stack([self._get_one(int(i)) for i in indices]).float()

    def put(self, indices: Sequence[int], targets: torch.Tensor, crop_seeds: Sequence[int]) -> None:
        """Store targets `(B, N, C)` of images `indices`, computed on crops seeded by `crop_seeds`."""
        if not indices:
            return
        if targets.ndim != 3 or targets.shape[0] != len(indices) or len(crop_seeds) != len(indices):
            raise ValueError(
                f"put() needs targets (B, N, C) with B = len(indices) = len(crop_seeds); got targets "
                f"{tuple(targets.shape)}, {len(indices)} indices, {len(crop_seeds)} crop seeds."
            )
        stored = targets.detach().to("cpu", self.storage_dtype)
        for row, (index, crop_seed) in enumerate(zip(indices, crop_seeds, strict=True)):
            self._pending[int(index)] = (stored[row].clone(), int(crop_seed))
            self._pending_bytes += stored[row].numel() * stored.element_size()
        if self._pending_bytes >= self.max_shard_bytes:
            self.flush()

    def get_or_compute(
        self,
        indices: Sequence[int],
        pixel_values: torch.Tensor,
        compute: Callable[[torch.Tensor, list[int]], torch.Tensor],
        crop_seeds: Sequence[int],
    ) -> tuple[torch.Tensor, int]:
        """Targets for a batch, computing (and storing) only the images not cached yet.

        Args:
            indices: the image index of each row of `pixel_values`.
            pixel_values: `(B, 3, H, W)` the crops the targets are (or were) computed on.
            compute: `(pixel_values (b, 3, H, W), indices) -> targets (b, N, C)` for the missing images.
            crop_seeds: the crop seed of each image (stored with the target).

        Returns:
            `(targets (B, N, C) float32 on pixel_values' device, number of images computed)`.
        """
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("get_or_compute() needs at least one image.")
        missing_rows = [row for row, index in enumerate(indices) if index not in self]
        if missing_rows:
            self.refresh()  # another process may have written them since we last looked
            missing_rows = [row for row, index in enumerate(indices) if index not in self]
        for row, index in enumerate(indices):
            stored = self.stored_crop_seed(index)
            if row not in missing_rows and stored != int(crop_seeds[row]):
                raise ValueError(
                    f"Image {index} was cached with crop seed {stored} but is now cropped with "
                    f"{crop_seeds[row]}; delete {self.directory} or pass another --teacher_cache."
                )
        unstored: dict[int, torch.Tensor] = {}  # row -> a non-finite target, used for this step only
        if missing_rows:
            computed = compute(pixel_values[missing_rows], [indices[row] for row in missing_rows])
            # A non-finite target (NaN/inf from the teacher) is used once, for this step only (which the trainer
            # then skips), and never stored: a cached NaN would spoil every later epoch of that image.
            finite = torch.isfinite(computed.flatten(1)).all(dim=1).tolist()
            keep = [i for i, ok in enumerate(finite) if ok]
            self.put(
                [indices[missing_rows[i]] for i in keep],
                computed[keep],
                [crop_seeds[missing_rows[i]] for i in keep],
            )
            unstored = {missing_rows[i]: computed[i].float() for i, ok in enumerate(finite) if not ok}
        self.misses += len(missing_rows)
        self.hits += len(indices) - len(missing_rows)
        stored_rows = [row for row in range(len(indices)) if row not in unstored]
        targets = self.get([indices[row] for row in stored_rows]) if stored_rows else None
        if unstored:
            full = torch.empty(len(indices), *next(iter(unstored.values())).shape)
            if stored_rows:
                full[stored_rows] = targets
            for row, target in unstored.items():
                full[row] = target.cpu()
            targets = full
        return targets.to(pixel_values.device), len(missing_rows)

    def flush(self) -> Path | None:
        """Write pending targets to a new shard of this process (atomic); returns its path, or None."""
        if not self._pending:
            return None
        indices = sorted(self._pending)
        targets = torch.stack([self._pending[i][0] for i in indices])
        crop_seeds = torch.tensor([self._pending[i][1] for i in indices], dtype=torch.int64)
        name = f"{SHARD_PREFIX}rank{self.process_index}-{uuid.uuid4().hex[:12]}{SHARD_SUFFIX}"
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        save_file(
            {
                "indices": torch.tensor(indices, dtype=torch.int64),
                "crop_seeds": crop_seeds,
                "targets": targets,
                "checksums": torch.tensor([row_checksum(row) for row in targets], dtype=torch.int64),
            },
            str(tmp),
            metadata={"format_version": str(CACHE_FORMAT_VERSION)},
        )
        os.replace(tmp, path)
        self._pending.clear()
        self._pending_bytes = 0
        self.refresh()
        return path
