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
"""Resumable checkpoints of a distillation run: what a `checkpoint-STEP` folder holds and when it may be resumed.

A checkpoint is Accelerate's `save_state` (model weights as safetensors; optimizer, scheduler, sampler and RNG
states as torch files) plus our own `phreg_checkpoint.json`, written last, which holds:

- `run`: the run's fingerprint (teacher weights hash, resolution, registers, views, trained parts, seed, batch,
  processes, dataset identity). Resuming with a different fingerprint is refused, naming each difference: a
  checkpoint of another teacher or resolution would otherwise be continued and labelled with the new one.
- `state`: the trainer's counters (step, epoch, skipped images, cache hits, ...), as JSON.
- `files`: the sha256 of every other file of the folder. A file that is missing, changed or not listed (e.g. a
  dropped-in `custom_checkpoint_0.pkl`) makes the checkpoint refused.

Security: a checkpoint folder cannot run code when resumed. Our counters are JSON, not pickles (nothing is
registered with `accelerator.register_for_checkpointing`, whose `custom_checkpoint_*.pkl` Accelerate unpickles
with `weights_only=False`), and Accelerate loads every other file with `torch.load(weights_only=True)`, which
refuses arbitrary objects. The manifest check comes first, so a tampered folder is refused before any load.

Only folders with a manifest count as checkpoints (`list_checkpoints`): one whose save was interrupted has none.
Folders are removed by renaming them to a hidden `.trash-*` name first, so a half-deleted checkpoint is never
picked as `latest`; `clean_leftovers` removes what an interrupted save or removal left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from accelerate.logging import get_logger

from ..file_checks import file_sha256

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
MANIFEST_FILE = "phreg_checkpoint.json"
MANIFEST_FORMAT = 1
# Hidden names of unfinished work inside an output folder: interrupted saves, stagings and removals.
LEFTOVER_PATTERNS = (".tmp-save-*", ".staging-*", ".trash-*", f"{CHECKPOINT_PREFIX}*.tmp")


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a folder (or file) so that no reader ever sees it half-deleted: rename to `.trash-*`, then delete."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)


def clean_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove hidden leftovers of interrupted saves/removals in `folder` (see `LEFTOVER_PATTERNS`); their names."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for pattern in LEFTOVER_PATTERNS:
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete `checkpoint-STEP` folders of `output_dir` (with their manifest), oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name) and (p / MANIFEST_FILE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def _listed_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.name != MANIFEST_FILE
    )


def write_manifest(folder: str | os.PathLike, run_fingerprint: dict, state: dict) -> Path:
    """Write `phreg_checkpoint.json` into a saved checkpoint folder (last, atomically): it marks it complete."""
    folder = Path(folder)
    files = {name: file_sha256(folder / name) for name in _listed_files(folder)}
    payload = {"format": MANIFEST_FORMAT, "run": run_fingerprint, "state": state, "files": files}
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, folder / MANIFEST_FILE)
    return folder / MANIFEST_FILE


def fingerprint_differences(recorded: dict, current: dict) -> list[str]:
    """`key: checkpoint X, now Y` for every key whose value differs."""
    return [
        f"{key}: checkpoint {recorded.get(key, '<missing>')!r}, now {current.get(key, '<missing>')!r}"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]


def verify_checkpoint(folder: str | os.PathLike, run_fingerprint: dict) -> dict:
    """Check that `folder` is a complete, untouched checkpoint of this very run; returns its saved counters.

    Raises:
        FileNotFoundError: not a folder, or no manifest (not written by phreg-hf, or its save was interrupted).
        ValueError: a file is missing, changed or unexpected, or the run's settings differ (each one named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {folder} is not a folder; pass a {CHECKPOINT_PREFIX}STEP folder or 'latest'."
        )
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {MANIFEST_FILE}: it is not a complete phreg-hf checkpoint (its save was interrupted, "
            f"or another program wrote it). Resume from another {CHECKPOINT_PREFIX}STEP folder, or 'latest'."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded_files, recorded_run, state = manifest["files"], manifest["run"], manifest["state"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{manifest_path} is corrupt ({type(error).__name__}: {error}); resume from another checkpoint."
        ) from None
    present = _listed_files(folder)
    unexpected = sorted(set(present) - set(recorded_files))
    missing = sorted(set(recorded_files) - set(present))
    changed = sorted(
        name
        for name in set(present) & set(recorded_files)
        if (folder / name).is_symlink() or file_sha256(folder / name) != recorded_files[name]
    )
    if unexpected or missing or changed:
        problems = []
        problems += [f"not written by this checkpoint's save: {unexpected}"] if unexpected else []
        problems += [f"missing: {missing}"] if missing else []
        problems += [f"changed since it was saved: {changed}"] if changed else []
        raise ValueError(
            f"Refusing to resume from {folder}: its files do not match {MANIFEST_FILE} ("
            + "; ".join(problems)
            + "). A checkpoint is loaded only as it was written. Resume from another checkpoint, or start anew."
        )
    differences = fingerprint_differences(recorded_run, run_fingerprint)
    if differences:
        raise ValueError(
            f"Refusing to resume from {folder}: it belongs to a run with other settings, so continuing it would "
            "label its weights with this run's:\n  "
            + "\n  ".join(differences)
            + "\nResume with the checkpoint's settings, or start anew in another --output_dir."
        )
    return state


class CheckpointingMixin:
    """Checkpoint methods of `trainer.DistillTrainer`: the run's fingerprint, save, verified resume."""

    def run_fingerprint(self) -> dict:
        """What a checkpoint of this run must have been trained with to be resumed, as it reads back from the
        manifest's JSON (so that a recorded and a current fingerprint compare equal)."""
        args = self.args
        fingerprint = {
            "teacher": self.teacher_hash,
            "base_model": self.base_model_id,
            "resolution": self.resolution,
            "num_register_tokens": args.num_register_tokens,
            "num_views": args.num_views,
            "shift_frac": args.shift_frac,
            "flip_prob": args.flip_prob,
            "fill_value": args.fill_value,
            "trainable_parts": args.enabled_parts(),
            "mse_scale": args.mse_scale,
            "seed": args.seed,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "num_processes": self.accelerator.num_processes,
            "dataset": self.dataset_identity,
            "teacher_cache": args.teacher_cache is not None,  # fixed crops and views per image, or not
        }
        return json.loads(json.dumps(fingerprint, default=str))

    def _resume(self) -> None:
        args, accelerator = self.args, self.accelerator
        if args.resume_from_checkpoint is None:
            return
        if args.resume_from_checkpoint == "latest":
            checkpoints = list_checkpoints(self.output_dir)
            if not checkpoints:
                logger.warning(
                    f"--resume_from_checkpoint latest: no checkpoint in {self.output_dir}; starting anew."
                )
                return
            path = checkpoints[-1]
        else:
            path = Path(args.resume_from_checkpoint)
        # Checked before anything is loaded: the files are exactly those saved, by a run with these settings.
        saved_state = verify_checkpoint(path, self.run_fingerprint())
        try:
            accelerator.load_state(str(path))
        except Exception as error:  # noqa: BLE001 - name the checkpoint whatever torch/accelerate raised
            raise ValueError(
                f"Could not load the checkpoint {path}: {type(error).__name__}: {error}. Resume from another "
                "checkpoint, or start anew."
            ) from error
        self.state.load_state_dict(saved_state)
        logger.info(
            f"Resumed from {path}: step {self.state.global_step}, epoch {self.state.epoch}, "
            f"{self.state.batches_in_epoch} micro-batches into it."
        )

    def save_checkpoint(self) -> Path:
        """`save_state` into output_dir/checkpoint-STEP plus our manifest, atomically (written under a temporary
        name, completed by the manifest, then renamed)."""
        accelerator = self.accelerator
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        tmp = self.output_dir / f"{final.name}.tmp"
        if self.teacher_cache is not None:
            self.teacher_cache.flush()
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_manifest(tmp, self.run_fingerprint(), self.state.state_dict())
            if final.exists():
                remove_tree(final)
            os.replace(tmp, final)
            limit = self.args.checkpoints_total_limit
            if limit is not None:
                for old in list_checkpoints(self.output_dir)[:-limit]:
                    remove_tree(old)
            logger.info(f"Saved checkpoint {final}")
        accelerator.wait_for_everyone()
        return final


__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointingMixin",
    "MANIFEST_FILE",
    "clean_leftovers",
    "list_checkpoints",
    "remove_tree",
    "verify_checkpoint",
    "write_manifest",
]
