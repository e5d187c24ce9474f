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
"""What a saved PH-Reg student folder holds, as the card and the upload read it: its config, its remote-code files,
its run records, and the license and base model it inherits.
"""

from __future__ import annotations

import ast
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import validate_repo_id
from transformers.dynamic_module_utils import get_relative_import_files

from ..constants import TRAINING_SETTINGS_FILE
from ..models.configuration_phreg import (
    PhregCLIPConfig,
    PhregCLIPVisionConfig,
    PhregDinov2Config,
    PhregDinov2WithRegistersConfig,
    PhregDinov3ViTConfig,
    PhregSiglipVisionConfig,
    PhregViTConfig,
)
from ..models.modeling_phreg import TRAINABLE_PARTS
from ..models.modeling_phreg_dinov3 import PhregDinov3ViTModel

logger = logging.getLogger(__name__)

README_FILE = "README.md"
CONFIG_FILE = "config.json"
# model_type of a saved student -> (Hub tag of the backbone, its name in prose)
STUDENT_BACKBONES = {
    PhregDinov2Config.model_type: ("dinov2", "DINOv2"),
    PhregViTConfig.model_type: ("vit", "ViT"),
    PhregCLIPVisionConfig.model_type: ("clip", "CLIP vision"),
    PhregDinov2WithRegistersConfig.model_type: ("dinov2", "DINOv2 with registers"),
    PhregCLIPConfig.model_type: ("clip", "CLIP"),
    PhregSiglipVisionConfig.model_type: ("siglip", "SigLIP vision"),
    PhregDinov3ViTConfig.model_type: ("dinov3", "DINOv3"),
}
# Students without a CLS token: their registers come first (`[register_1 .. register_N, patches]`).
NO_CLS_MODEL_TYPES = (PhregSiglipVisionConfig.model_type,)
# Students whose backbone lacks one of the `TRAINABLE_PARTS` (DINOv3: no position table, rotary positions).
STUDENT_TRAINABLE_PARTS = {PhregDinov3ViTConfig.model_type: PhregDinov3ViTModel.trainable_parts}


def student_trainable_parts(model_type: str) -> tuple[str, ...]:
    """The parts PH-Reg trains by default in a student of this `model_type`."""
    return STUDENT_TRAINABLE_PARTS.get(model_type, TRAINABLE_PARTS)


# Students that export to a stock `Dinov2WithRegistersModel` (`to_dinov2_with_registers`).
DINOV2_MODEL_TYPES = (PhregDinov2Config.model_type, PhregDinov2WithRegistersConfig.model_type)


def read_student_config(folder: str | Path) -> dict:
    """config.json of a saved PH-Reg student; clear errors for a missing folder or another kind of model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Output folder {folder} does not exist. Pass the --output_dir of a finished "
            "`phreg distill` (or `examples/distill.py`) run, or a folder written by student.save_pretrained(...)."
        )
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_FILE}, so it is not a saved PH-Reg student. Point to the --output_dir of a "
            "training run, or save a student there with `import phreg_hf; student.save_pretrained(folder)`."
        )
    config = _read_json(config_path)
    model_type = config.get("model_type")
    if model_type not in STUDENT_BACKBONES:
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not a PH-Reg student (model_type one of "
            f"{sorted(STUDENT_BACKBONES)}). Build one with phreg_hf.student_from_base(base, num_register_tokens) "
            "and train it (`phreg distill`), then push its output folder."
        )
    if model_type == PhregCLIPConfig.model_type:
        # A full CLIP student: the vision student's fields (patch size, registers, ...) are read from vision_config.
        config = {**config.get("vision_config", {}), **config}
    if not config.get("auto_map"):
        raise ValueError(
            f"{config_path} has no auto_map, so Hub users could not load it with trust_remote_code=True. Re-save "
            f"it with the code files: `import phreg_hf; AutoModel.from_pretrained({str(folder)!r})"
            f".save_pretrained({str(folder)!r})`."
        )
    return config


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-create it or remove it.") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object, got {type(data).__name__}.")
    return data


def _read_optional_json(path: Path) -> dict | None:
    return _read_json(path) if path.is_file() else None


def code_files(folder: str | Path, config: dict | None = None) -> list[str]:
    """The Python files `trust_remote_code` runs: the modules in `auto_map` and their relative imports."""
    folder = Path(folder)
    config = read_student_config(folder) if config is None else config
    names: list[str] = []
    # The custom pipeline of a CLIP student (segmentation) is remote code too.
    pipelines = [task["impl"] for task in (config.get("custom_pipelines") or {}).values()]
    for reference in [*config["auto_map"].values(), *pipelines]:
        references = reference if isinstance(reference, (list, tuple)) else [reference]
        for ref in references:
            if not ref:
                continue
            # "module.Class", or "repo_id--module.Class" when the config was copied from another repository.
            module = ref.split("--")[-1].rsplit(".", 1)[0]
            names.append(f"{module}.py")
    missing = [name for name in dict.fromkeys(names) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder / CONFIG_FILE} names {missing} in auto_map, but they are missing from {folder}. Re-save the "
            "student after `import phreg_hf` so save_pretrained writes its code files."
        )
    for name in list(dict.fromkeys(names)):
        names += [Path(path).name for path in get_relative_import_files(folder / name)]
    return sorted(dict.fromkeys(names))


def _imported_packages(paths: Sequence[Path]) -> list[str]:
    """Top-level packages the code files import, other than the standard library and each other."""
    packages: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                packages.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                packages.add(node.module.split(".")[0])
    local = {path.stem for path in paths}
    return sorted(
        p for p in packages if p not in sys.stdlib_module_names and p not in local and p != "__future__"
    )


# License and base model
def _is_hub_id(name: str | None) -> bool:
    if not name or name.startswith((".", "/", "~")) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except ValueError:
        return False
    return True


def _license_from_card_data(data: Any) -> dict | None:
    license_id = getattr(data, "license", None) if data is not None else None
    if not license_id:
        return None
    info = {"license": license_id}
    for key in ("license_name", "license_link"):
        if getattr(data, key, None):
            info[key] = getattr(data, key)
    return info


def _local_license(license: str | None, base_model: str | None, settings: dict | None) -> dict | None:
    """The license from, in order: the explicit argument, the trainer's settings, a local base model's README.md."""
    if license:
        return {"license": license}
    if settings and settings.get("license"):
        return {"license": settings["license"]}
    if base_model and (Path(base_model) / README_FILE).is_file():
        return _license_from_card_data(ModelCard.load(Path(base_model) / README_FILE).data)
    return None


def _hub_license(base_model: str | None, token: str | None) -> dict | None:
    """Best effort: the license in the base model's Hub card metadata (one network call, errors ignored)."""
    if not _is_hub_id(base_model):
        return None
    try:
        info = HfApi(token=token).model_info(base_model)
    except Exception as error:  # noqa: BLE001 - any failure just means "unknown": the caller asks for --license
        logger.info("Could not read the license of %s from the Hub: %s", base_model, error)
        return None
    return _license_from_card_data(getattr(info, "card_data", None))


def base_model_license(base_model: str | None, token: str | None = None) -> str | None:
    """The license identifier of a base model: a local folder's README.md metadata, else its Hub card (one
    best-effort network call; any failure means unknown). None when unknown; the trainer records the result in
    its settings JSON so that the card (and a later `phreg push`) need not look it up again."""
    info = _local_license(None, base_model, None) or _hub_license(base_model, token)
    return info["license"] if info else None


def _license_error(folder: Path, repo_id: str, base_model: str | None, looked_up_online: bool) -> ValueError:
    source = f"the base model {base_model!r}" if base_model else "its base model (not recorded)"
    settings_path = folder / TRAINING_SETTINGS_FILE
    if settings_path.is_file():
        where = f"{settings_path} or in a local base model's README.md"
    else:
        where = (
            f"a local base model's README.md ({folder} has no {TRAINING_SETTINGS_FILE}, the training record that "
            "would hold it)"
        )
    if looked_up_online:
        online = " Its Hub card gave none, or could not be read."
    elif _is_hub_id(base_model):
        online = (
            " (The base model's Hub card is read only by a real push, not by --dry_run or render_model_card.)"
        )
    else:
        online = ""
    return ValueError(
        f"The license of this model is unknown: it inherits the license of {source}, which is not recorded in "
        f"{where}.{online} Pass the base model's "
        "license identifier (e.g. apache-2.0, mit; see https://huggingface.co/docs/hub/repositories-licenses) "
        f"with --license:\n    phreg push {shlex.quote(str(folder))} {repo_id} --license LICENSE\n"
        "or license=... from Python."
    )


def _resolve_base_model(base_model: str | None, settings: dict | None) -> str | None:
    if base_model:
        return base_model
    recorded = (settings or {}).get("base_model")
    return str(recorded) if recorded else None
