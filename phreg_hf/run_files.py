"""The files of a run in `--output_dir`: atomic writes, checkpoint folders, and the identity of an image folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"


def atomic_write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def atomic_save(save_fn, output_dir: Path) -> list[str]:
    """Run `save_fn(tmp_dir)` and move every file it wrote into `output_dir` by rename (no partial files)."""
    tmp = output_dir / f".tmp-save-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        save_fn(tmp)
        names = sorted(os.listdir(tmp))
        for name in names:
            target = output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_listing_hash(folder: str | os.PathLike) -> str:
    """sha256 of the relative paths and sizes of every file under `folder`: which images a cache was built on.

    Sizes rather than modification times, so that re-writing the same images (the demo does) keeps the cache;
    an image edited in place to the very same size goes unnoticed (delete the cache then).
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-STEP` folders of `output_dir`, oldest first (unfinished `.tmp` ones excluded)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))
