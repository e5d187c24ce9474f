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
"""The files a run writes into `--output_dir`, written as one set.

A run's outputs (the student's weights, config and code files, the image processor, the settings and metrics
JSONs, `previews/`, the demo's `demo_base/`) are first written into a hidden staging folder inside
`--output_dir`, and moved into place only once all of them exist. Outputs of an earlier run that the new run
does not rewrite (old previews, an old metrics JSON, weight shards of another size, a card rendered for the old
weights) are removed at that moment, so a folder never mixes two runs. Files the user put there (anything not
in `run_output_names`, a hand-written or edited README.md) are never touched.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from ..constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE
from .checkpointing import remove_tree

# Written by every run (with the image processor's and transformers' own names, see `run_output_names`).
FIXED_RUN_OUTPUTS = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
    TRAINING_SETTINGS_FILE,
    METRICS_FILE,
    PREVIEWS_DIR,
    "demo_base",
    # A CLIP student's processor and tokenizer.
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
_WEIGHT_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
# The code files that travel with a student (`save_pretrained` writes them for trust_remote_code).
_CODE_FILE = re.compile(r"((configuration|modeling|pipeline)_phreg\w*|clip_dense)\.py")


def atomic_write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_output_names(folder: Path) -> list[str]:
    """Entries of `folder` that an earlier run (or `save_pretrained` of a student) wrote there."""
    from ..hub.model_card import card_is_generated_unedited
    from ..hub.student_folder import README_FILE

    names = []
    for path in folder.iterdir():
        name = path.name
        if (
            name in FIXED_RUN_OUTPUTS
            or _WEIGHT_SHARD.fullmatch(name)
            or _CODE_FILE.fullmatch(name)
            or (name == README_FILE and card_is_generated_unedited(path))
        ):
            names.append(name)
    return sorted(names)


def new_staging_folder(output_dir: Path) -> Path:
    staging = output_dir / f".staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    return staging


def commit_staged_outputs(staging: Path, output_dir: Path) -> list[str]:
    """Move every entry of `staging` into `output_dir`, after removing the earlier run's outputs it does not
    replace; returns the names moved in. Each entry moves by rename (no partial file is ever visible)."""
    staged = sorted(os.listdir(staging))
    for name in run_output_names(output_dir):
        if name not in staged:
            remove_tree(output_dir / name)
    for name in staged:
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            remove_tree(target)
        os.replace(staging / name, target)
    staging.rmdir()
    return staged


__all__ = ["atomic_write_json", "commit_staged_outputs", "new_staging_folder", "run_output_names"]
