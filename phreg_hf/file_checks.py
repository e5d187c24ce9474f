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
- `check_output_file`: a report path (`--out`) that would replace a file only with `--overwrite`, and never a file
  that makes up a model folder (its config, weights, code, tokenizer), which no report may replace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

from .constants import TRAINING_SETTINGS_FILE

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


# The files of a model folder (`save_pretrained`, the trainer's outputs): a report written over one of them would
# leave a folder that no longer loads, or a student without the record of its training. (The metrics JSON is not
# among them: `phreg eval --out STUDENT/phreg_metrics.json` refreshes it on purpose.)
MODEL_FOLDER_FILE_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        TRAINING_SETTINGS_FILE,
    }
)
MODEL_FOLDER_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".gguf",
    ".onnx",
    ".msgpack",
    ".h5",
    ".py",
)


def is_model_folder_file(path: str | os.PathLike) -> bool:
    """True when `path` names a config, weight, code or tokenizer file of a model folder (a folder holding a
    `config.json`), whether or not that file exists yet."""
    path = Path(path)
    named_like_one = path.name in MODEL_FOLDER_FILE_NAMES or path.name.endswith(MODEL_FOLDER_SUFFIXES)
    return named_like_one and (path.parent / "config.json").is_file()


def check_output_file(path: str | os.PathLike, option: str = "--out", overwrite: bool = False) -> Path:
    """The path a command is about to write a report to, or a ValueError naming it and the fix.

    Refused: a folder; a file of a model folder (`is_model_folder_file`), even with `overwrite`; an existing file
    unless `overwrite`.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; pass a file path, e.g. {path / 'report.json'}.")
    if is_model_folder_file(path):
        raise ValueError(
            f"{option} {path} is a file of the model folder {path.parent} (its {path.name}); writing a report there "
            "would replace it and break the model, so this is refused even with --overwrite. Pass another name, "
            f"e.g. {path.parent / 'phreg_dense_report.json'}."
        )
    if path.exists() and not overwrite:
        raise ValueError(f"{option} {path} already exists; pass --overwrite to replace it, or another path.")
    return path


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
    "MODEL_FOLDER_FILE_NAMES",
    "file_sha256",
    "check_inside_folder",
    "check_local_weights",
    "check_markdown_safe_name",
    "check_output_file",
    "is_model_folder_file",
    "check_safetensors_file",
]
