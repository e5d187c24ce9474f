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
"""The output folder of `phreg segment`: claimed by one run at a time, and written as one set.

- `plan_outputs` names each image's label map and overlay (`labels/REL.png`, `overlays/REL.png`) and refuses two
  images that would share one (`x.jpg` and `x.png`), and an `--out` that is (or is inside) `--images`.
- `claim_output_folder` creates a lock file in `--out` with `O_CREAT | O_EXCL`, which exactly one process can do:
  a second run into the same folder is refused while the first runs; the lock goes when the run ends.
- The outputs are written into a hidden staging folder inside `--out` and moved into place by `commit_outputs`
  once all of them exist. The label maps and overlays of an earlier run that the new run does not rewrite are
  removed then, as listed in the earlier `classes.json` ("outputs"), so a folder never mixes two runs' maps.
  Files the user put in `--out` are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CLASSES_FILE = "classes.json"
LABELS_DIR = "labels"
OVERLAYS_DIR = "overlays"
LOCK_FILE = ".phreg-segment.lock"
STAGING_PREFIX = ".phreg-segment-staging-"


@dataclass(frozen=True)
class OutputEntry:
    """One image and the files `phreg segment` writes for it, relative to `--images` / `--out` (POSIX)."""

    image: str
    label_map: str
    overlay: str


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def check_folders(images: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse an `--out` equal to or inside `--images` (a rerun would segment its own label maps and overlays),
    and `--images` inside the output's `labels/` or `overlays/` (a run would replace the images it reads)."""
    images_root, out_root = Path(images).resolve(), Path(out).resolve()
    if _inside(out_root, images_root):
        raise ValueError(
            f"--out {out} is {'--images' if out_root == images_root else 'inside --images'} {images}: the label "
            "maps and overlays written there would be segmented as images by the next run. Pass an --out outside "
            f"the image folder, e.g. {Path(images).resolve().parent / (images_root.name + '-segmented')}."
        )
    for name in (LABELS_DIR, OVERLAYS_DIR):
        if _inside(images_root, out_root / name):
            raise ValueError(
                f"--images {images} is inside {Path(out) / name}, where this run writes its {name}: pass an --out "
                "that does not hold the images."
            )


def plan_outputs(paths: Sequence[Path], images: str | os.PathLike) -> list[OutputEntry]:
    """Each image's `labels/REL.png` and `overlays/REL.png`; ValueError naming two images that would share them."""
    root = Path(images)
    entries, owner = [], {}
    for path in paths:
        relative = path.relative_to(root)
        label_map = (Path(LABELS_DIR) / relative).with_suffix(".png").as_posix()
        if label_map in owner:
            raise ValueError(
                f"--images {images} holds {owner[label_map]} and {relative.as_posix()}, whose label maps would both "
                f"be {label_map} (one would overwrite the other). Rename one of them, or move it to another folder."
            )
        owner[label_map] = relative.as_posix()
        overlay = (Path(OVERLAYS_DIR) / relative).with_suffix(".png").as_posix()
        entries.append(OutputEntry(relative.as_posix(), label_map, overlay))
    return entries


def _lock_holder_is_gone(text: str) -> bool:
    """True when the lock names a process of this machine that no longer runs (a killed run left it)."""
    try:
        record = json.loads(text)
        if record.get("host") != socket.gethostname():
            return False
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, OSError):
        return False
    return False


@contextlib.contextmanager
def claim_output_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Hold `--out` for one run: create it, then its lock file exclusively; ValueError naming the folder when
    another run holds it. Staging folders left by a killed run are removed once the lock is held; a folder this
    claim created is removed again if the run wrote nothing there."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            holder = lock.read_text()
        except OSError:
            holder = ""
        if _lock_holder_is_gone(holder):
            advice = (
                f"the run that made it ({holder.strip()}) is no longer running: remove {lock} and run again"
            )
        else:
            advice = f"wait for that run to finish, or pass another --out (if no run is writing there, remove {lock})"
        raise ValueError(
            f"--out {out} is being written by another `phreg segment` run (lock file {lock}); {advice}."
        ) from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    try:
        for leftover in out.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(out.iterdir()):  # a run refused before writing leaves no empty folder behind
            out.rmdir()


def _safe_output_path(relative: str) -> bool:
    parts = Path(relative).parts
    return (
        bool(parts)
        and ".." not in parts
        and not Path(relative).is_absolute()
        and (relative == CLASSES_FILE or (len(parts) > 1 and parts[0] in (LABELS_DIR, OVERLAYS_DIR)))
    )


def earlier_outputs(out: str | os.PathLike, overwrite: bool) -> list[str] | None:
    """The files an earlier run recorded in `OUT/classes.json` (its label maps, overlays and itself), None when
    there is no `classes.json`. ValueError when `overwrite` is asked of a `classes.json` that lists no files (an
    older phreg-hf, or not ours): its label maps cannot be told from the user's."""
    classes_file = Path(out) / CLASSES_FILE
    if not classes_file.is_file():
        return None
    try:
        record = json.loads(classes_file.read_text(encoding="utf-8"))
        entries = record["outputs"]
        files = [entry[key] for entry in entries for key in ("label_map", "overlay")]
    except (OSError, ValueError, KeyError, TypeError):
        if not overwrite:
            return []  # the caller refuses anyway: classes.json exists
        raise ValueError(
            f"{classes_file} does not list the files its run wrote (written by an older phreg-hf, or not by "
            "`phreg segment`), so --overwrite cannot tell that run's label maps from files of yours. Remove "
            f"{Path(out) / LABELS_DIR}, {Path(out) / OVERLAYS_DIR} and {classes_file} yourself, or pass another "
            "--out."
        ) from None
    return [f for f in files if isinstance(f, str) and _safe_output_path(f)] + [CLASSES_FILE]


def new_staging_folder(out: str | os.PathLike) -> Path:
    staging = Path(out) / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def _remove_empty_parents(path: Path, stop: Path) -> None:
    for parent in path.parents:
        if parent == stop or not parent.is_relative_to(stop):
            return
        try:
            parent.rmdir()
        except OSError:  # not empty: files of another image, or of the user
            return


def commit_outputs(staging: Path, out: Path, written: Sequence[str], earlier: Sequence[str] | None) -> None:
    """Move the staged files (`written`, relative paths, `classes.json` last) into `out`, after removing the files
    of `earlier` (the earlier run's record) that this run does not rewrite, and the folders they leave empty."""
    keep = set(written)
    for relative in earlier or ():
        target = out / relative
        if relative not in keep and target.is_file() and not target.is_symlink():
            target.unlink()
            _remove_empty_parents(target, out)
    for relative in sorted(written, key=lambda name: name == CLASSES_FILE):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)
    shutil.rmtree(staging)


def manifest(entries: Sequence[OutputEntry]) -> list[dict]:
    """The "outputs" record of `classes.json`: which image each label map and overlay belongs to."""
    return [{"image": e.image, "label_map": e.label_map, "overlay": e.overlay} for e in entries]


__all__ = [
    "CLASSES_FILE",
    "LABELS_DIR",
    "LOCK_FILE",
    "OVERLAYS_DIR",
    "OutputEntry",
    "check_folders",
    "claim_output_folder",
    "commit_outputs",
    "earlier_outputs",
    "manifest",
    "new_staging_folder",
    "plan_outputs",
]
