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
"""Resumable benchmark results: one JSON per finished benchmark, reused only for the same models, data and settings.

A `phreg benchmark` run writes `OUT/<kind>/<benchmark>.json` (atomically: a temporary file and a rename) as soon as
a benchmark is done, with its fingerprint:

- models: per model option the sha256 of every weight and config file of a local folder (a Hub id is recorded
  as `id@revision`: weights that are not on disk cannot be hashed, so pin a revision to make reuse safe);
- data: `LayoutPairs.fingerprint()` (every pair's relative paths and sizes);
- settings: every resolved setting (class file content included) and the phreg-hf version.

A repeated run reuses a result whose fingerprint matches and recomputes only what is missing (a run killed midway
redoes the unfinished benchmark). A result of other models, data or settings is never reused: the run is refused
with the part that differs, before any model is loaded, unless `--overwrite` asks to recompute it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from ..constants import VERSION
from ..file_checks import file_sha256
from .segmentation_eval import write_json_atomically

_HASHED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")


@lru_cache(maxsize=16)
def _folder_hash(folder: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.suffix in _HASHED_SUFFIXES and not path.name.startswith("phreg_dense_"):
            digest.update(f"{path.relative_to(folder).as_posix()}\t{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def model_fingerprint(model: str, revision: str | None = None) -> str:
    """sha256 of a local model folder's weight / config files, or `hub:ID@REVISION` for a Hub id."""
    if Path(model).is_dir():
        return _folder_hash(str(Path(model).resolve()))
    return f"hub:{model}@{revision or 'main'}"


def settings_fingerprint(settings: dict) -> str:
    """sha256 of the settings (JSON, sorted keys) plus the version, and the class file's bytes when named."""
    payload = dict(settings, phreg_hf_version=VERSION)
    class_file = settings.get("class_names")
    if class_file and Path(class_file).is_file():
        payload["class_file_sha256"] = file_sha256(class_file)
        payload.pop("class_names")  # where the file lies does not matter, its content does
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ResultStore:
    """`OUT/<kind>/<name>.json` results with fingerprints (see the module docstring)."""

    def __init__(self, out: str | Path, kind: str):
        self.folder = Path(out) / kind
        if Path(out).exists() and not Path(out).is_dir():
            raise ValueError(f"--out {out} is a file; pass a folder (results go to {out}/{kind}/NAME.json).")

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def lookup(self, name: str, fingerprint: dict, overwrite: bool) -> tuple[dict | None, str]:
        """`(stored report or None, what happens)`: the report when its fingerprint matches; None to compute.

        Raises:
            ValueError when a stored result has another fingerprint and `overwrite` is off, naming what differs.
        """
        path = self.path(name)
        if not path.is_file():
            return None, "computing"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if overwrite:
                return None, f"recomputing (the stored result is unreadable: {error})"
            raise ValueError(
                f"{path} is not valid JSON ({error}); pass --overwrite to recompute it, or remove it."
            ) from None
        old = stored.get("fingerprint") or {}
        if old == fingerprint:
            return stored, "reused (same models, data and settings)"
        differs = [part for part in ("models", "data", "settings") if old.get(part) != fingerprint.get(part)]
        reason = f"other {' / '.join(differs) or 'fingerprint'}"
        if overwrite:
            return None, f"recomputing ({reason} than the stored result)"
        raise ValueError(
            f"{path} holds a result computed with {reason}, so it is not reused. Pass --overwrite to recompute it, "
            "or another --out to keep it."
        )

    def save(self, name: str, report: dict, fingerprint: dict) -> Path:
        return write_json_atomically(self.path(name), {**report, "fingerprint": fingerprint})


__all__ = ["ResultStore", "model_fingerprint", "settings_fingerprint"]
