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
"""Checks on files we are about to load or upload, with errors that name the file and the fix.

- `check_safetensors_file`: the header parses and the file is exactly as long as its header says, so a truncated
  or overwritten `model.safetensors` is caught before upload or load (safetensors itself fails later, or with an
  error that names no file).
- `check_local_weights`: the same for every weight file of a local model folder.
- `check_inside_folder`: a file to upload is a regular file inside the folder the user named: no symlink (to
  `/etc/passwd`, or a `previews/` pointing elsewhere), no path escaping the folder.
- `check_markdown_safe_name`: a file name that the model card shows (previews) cannot break its markdown.
- `file_sha256`: a file's sha256, read in chunks (checkpoint manifests, image-set fingerprints, the card's list
  of code files).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

# Letters (any script), digits, '.', '-', '_' : a name that renders verbatim inside a markdown link.
_MARKDOWN_SAFE_NAME = re.compile(r"[\w.\-]+")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise ValueError naming `path` unless it is a complete safetensors file (header + exactly its data)."""
    path = Path(path)
    size = path.stat().st_size
    fix = f"Re-save the model (save_pretrained) or copy {path.name} again; the file is truncated or corrupt."
    if size < 8:
        raise ValueError(f"{path} is not a safetensors file ({size} bytes, no header). {fix}")
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > size - 8:
            raise ValueError(
                f"{path}: its header claims {header_size} bytes but the file holds {size}. {fix}"
            )
        try:
            header = json.loads(handle.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: unreadable safetensors header ({error}). {fix}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object. {fix}")
    ends = [
        int(entry["data_offsets"][1])
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        raise ValueError(
            f"{path} holds {size} bytes but its header describes {expected}: the file is "
            f"{'truncated' if size < expected else 'longer than its tensors'}. {fix}"
        )


def check_local_weights(folder: str | os.PathLike) -> None:
    """`check_safetensors_file` on every `*.safetensors` at the top of a local model folder (none: no check)."""
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            check_safetensors_file(path)


def check_inside_folder(path: Path, folder: Path) -> None:
    """Raise ValueError unless `path` is a regular file inside `folder`, reached through no symlink."""
    root = folder.resolve()
    relative = path.relative_to(folder) if path.is_relative_to(folder) else None
    parts = (
        [folder / Path(*relative.parts[: i + 1]) for i in range(len(relative.parts))] if relative else [path]
    )
    links = [p for p in parts if p.is_symlink()]
    if links:
        target = os.readlink(links[0])
        raise ValueError(
            f"Refusing to upload {links[0]}: it is a symbolic link (to {target}), and only files inside {folder} "
            "are uploaded. Replace the link by a copy of the file, or remove it."
        )
    if relative is None or not path.resolve().is_relative_to(root):
        raise ValueError(f"Refusing to upload {path}: it is outside {folder}.")
    if not path.is_file():
        raise ValueError(f"Refusing to upload {path}: not a regular file.")


def check_markdown_safe_name(relative_path: str) -> None:
    """Raise ValueError if a name shown in the model card has characters that break its markdown."""
    for part in relative_path.split("/"):
        if not _MARKDOWN_SAFE_NAME.fullmatch(part):
            raise ValueError(
                f"Refusing to upload {relative_path!r}: the model card links it, and its name holds characters "
                "(spaces, newlines, brackets, ...) that break the card's markdown. Rename it using letters, "
                "digits, '.', '-' and '_' only."
            )


__all__ = [
    "file_sha256",
    "check_inside_folder",
    "check_local_weights",
    "check_markdown_safe_name",
    "check_safetensors_file",
]
