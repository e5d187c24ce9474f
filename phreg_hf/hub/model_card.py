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
"""The model card of a saved PH-Reg student, rendered from `model_cards/phreg_model_card.md`.

`huggingface_hub.ModelCard.from_template` renders it; every fact in it is read from the folder (config.json, the
run's settings and metrics JSONs, the code files), never typed by hand. `hub.py` uploads the folder with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

from ..constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE
from ..file_checks import file_sha256
from ..models.configuration_phreg import PhregCLIPConfig, PhregDinov3ViTConfig
from .dense_reports import dense_result_tables
from .student_folder import (
    CONFIG_FILE,
    DINOV2_MODEL_TYPES,
    NO_CLS_MODEL_TYPES,
    STUDENT_BACKBONES,
    _imported_packages,
    _is_hub_id,
    _license_error,
    _local_license,
    _read_optional_json,
    _resolve_base_model,
    code_files,
    read_student_config,
    student_trainable_parts,
)

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "phreg_model_card.md"
CARD_TAGS = ("phreg", "registers", "vision")
PIPELINE_TAG = "image-feature-extraction"
CLIP_PIPELINE_TAG = "image-segmentation"

TRAINABLE_PART_NAMES = {
    "registers": "register tokens",
    "position_embeddings": "position embeddings",
    "patch_embeddings": "patch-embedding projection",
    "last_block": "last transformer block",
}
# Columns of the results table, in this order (the metrics JSON's "rows"); other rows follow, sorted.
METRIC_ROW_LABELS = {
    "base": "Base model (before)",
    "teacher": "Denoised teacher",
    "student": "PH-Reg student (after)",
}
# Which way is better, for the measures whose meaning docs/method.md fixes. A metrics JSON may add or override
# entries with an optional {"better": {metric: "lower" | "higher"}}; unknown measures get no arrow.
METRIC_BETTER = {
    "outlier_ratio": "lower",
    "max_to_median_norm": "lower",
    "teacher_agreement": "higher",
    "position_locked_energy": "lower",
}
# One line per measure `metrics.artifact_report` returns (a test checks none is missing): every measure the card
# shows is defined under its table.
METRIC_DESCRIPTIONS = {
    "outlier_ratio": "share of patch tokens whose norm exceeds the image's median patch norm + 6 MAD",
    "max_to_median_norm": "largest patch-token norm over the median patch-token norm, averaged over images",
    "teacher_agreement": "mean cosine similarity of patch tokens to the denoised teacher's features",
    "position_locked_energy": "share of the feature variance explained by grid position alone, across images",
    "local_smoothness": "mean cosine similarity of neighbouring patch tokens; no better direction: artifact tokens "
    "lower it, but so does real detail",
}
# Readable names of the measures in the results table (the JSON keys stay in the notes under it).
METRIC_LABELS = {
    "outlier_ratio": "outlier ratio",
    "max_to_median_norm": "max/median norm",
    "teacher_agreement": "cosine to denoised teacher",
    "position_locked_energy": "position-locked energy",
    "local_smoothness": "local smoothness",
}


# ----------------------------------------------------------------------------------------------------------------
# Reading a saved student folder
def model_card_template_path() -> Path:
    """The card template: `phreg_hf/model_cards/` in an installed wheel (a symlink to the top-level `model_cards/`
    in a checkout), else the top-level `model_cards/` next to the package in a source checkout."""
    package_dir = Path(__file__).resolve().parents[1]  # phreg_hf/ (this file is phreg_hf/hub/model_card.py)
    candidates = (
        Path(__file__).parents[1] / "model_cards" / TEMPLATE_NAME,
        package_dir.parent / "model_cards" / TEMPLATE_NAME,
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Model card template {TEMPLATE_NAME} not found in {[str(c.parent) for c in candidates]}. Reinstall "
        "phreg-hf (pip install phreg-hf, or pip install -e . in a checkout) so that model_cards/ is shipped."
    )


# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Formatting
def _human_size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def _format_value(value: Any) -> str:
    """A setting as table-safe text (never 'None')."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _format_number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) or "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _format_duration(seconds: float) -> str:
    seconds = float(seconds)
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes or hours else []
    parts += [] if hours else [f"{secs} s"]
    return " ".join(parts)


def _token_layout(model_type: str, num_base_registers: int, num_registers: int, image_size) -> dict[str, str]:
    """How the card describes `last_hidden_state`: its length, token order, where the order comes from, and the
    input sizes the model takes."""
    base_registers = f"base_register_1 .. base_register_{num_base_registers}, " if num_base_registers else ""
    registers = f"register_1 .. register_{num_registers}"
    if model_type in NO_CLS_MODEL_TYPES:
        return {
            "token_layout": f"{num_registers} + patches",
            "token_order": f"[{registers}, patches]",
            "token_order_note": "SigLIP has no CLS token, so the registers come first; the pooled output is "
            "SigLIP's attention-pooling head over the patch tokens only",
            "pipeline_tokens": "[registers, patches]",
            "size_note": f"position embeddings are interpolated away from the native {image_size} x {image_size}",
        }
    layout = {
        "token_layout": f"1 + {f'{num_base_registers} + ' if num_base_registers else ''}{num_registers} + patches",
        "token_order": f"[CLS, {base_registers}{registers}, patches]",
        "token_order_note": "the order of transformers' `Dinov2WithRegistersModel`",
        "pipeline_tokens": "[CLS, registers, patches]",
        "size_note": f"position embeddings are interpolated away from the native {image_size} x {image_size}",
    }
    if model_type == PhregDinov3ViTConfig.model_type:
        layout["token_order_note"] = (
            "the order of transformers' `DINOv3ViTModel`, whose own registers come first; like CLS, no register "
            "gets a rotary position"
        )
        layout["size_note"] = "DINOv3's rotary position embeddings take any grid"
    return layout


def _format_trained_parts(parts: Sequence[str]) -> str:
    names = [TRAINABLE_PART_NAMES.get(part, part) for part in parts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _base_model_link(base_model: str) -> str:
    return (
        f"[{base_model}](https://huggingface.co/{base_model})"
        if _is_hub_id(base_model)
        else f"`{base_model}`"
    )


def _format_dataset(dataset: Any, with_description: bool = False) -> str:
    if not isinstance(dataset, dict):
        return _format_value(dataset)
    if dataset.get("name"):
        name = str(dataset["name"])
        text = f"[{name}](https://huggingface.co/datasets/{name})" if _is_hub_id(name) else f"`{name}`"
        if dataset.get("config"):
            text += f" (config `{dataset['config']}`)"
        if dataset.get("split"):
            text += f", split `{dataset['split']}`"
    elif dataset.get("train_dir"):
        text = f"local image folder `{Path(str(dataset['train_dir'])).name}`"
    else:
        text = "unrecorded images"
    if dataset.get("num_images") is not None:
        text += f" ({dataset['num_images']} images)"
    if with_description and dataset.get("description"):
        text += f"; {_format_value(dataset['description'])}"
    return text


def _dataset_ids(settings: dict | None) -> list[str]:
    dataset = (settings or {}).get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    return [str(name)] if _is_hub_id(name) else []


# ----------------------------------------------------------------------------------------------------------------
# Template variables
# What `training_status` can say, and the warning a push of a model that is not "trained" prints.
UNTRAINED_WARNINGS = {
    "untrained": f"its {TRAINING_SETTINGS_FILE} records no optimizer step, so the model is untrained.",
    "unrecorded": f"there is no {TRAINING_SETTINGS_FILE}, so nothing records that the model was trained (a "
    "student_from_base(...).save_pretrained folder is untrained).",
}


def training_status(settings: dict | None) -> str:
    """ "trained" (the record shows optimizer steps), "untrained" (it shows none) or "unrecorded" (no record)."""
    if not settings:
        return "unrecorded"
    steps = settings.get("optimizer_steps", settings.get("global_steps"))
    return "untrained" if steps is not None and int(steps) <= 0 else "trained"


_BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_processes")
# Settings not shown as rows: the raw command line (kept in full in the uploaded JSON), the license (in the card's
# metadata), what the synthetic base planted (the demo notice says it), and parts of other rows.
_HIDDEN_SETTINGS = (
    "args",
    "license",
    "base_model_synthetic",
    "base_model_type",
    "global_batch_size",
    "optimizer_steps",
    "skipped_steps",
    "final_learning_rate",
    "weight_decay",
    "patch_grid",
    "num_trainable_parameters",
    "teacher_images",
)


def _format_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _format_value(value)


def _format_optimizer(settings: dict) -> str:
    optimizer = settings.get("optimizer")
    if not isinstance(optimizer, dict):
        return _format_value(optimizer)
    pieces = []
    if optimizer.get("betas"):
        pieces.append("betas " + _format_value(optimizer["betas"]))
    if settings.get("weight_decay") is not None:
        pieces.append(f"weight decay {_format_value(settings['weight_decay'])}")
    clip = optimizer.get("max_grad_norm")
    if clip is not None:
        pieces.append(f"gradient norm clipped at {_format_value(clip)}" if clip else "no gradient clipping")
    name = str(optimizer.get("name") or "optimizer")
    return f"{name} ({', '.join(pieces)})" if pieces else name


def _format_learning_rate(settings: dict) -> str:
    text = _format_value(settings["learning_rate"])
    if settings.get("final_learning_rate") is not None:
        text += f" to {_format_value(settings['final_learning_rate'])}"
    schedule = (
        (settings.get("optimizer") or {}).get("schedule")
        if isinstance(settings.get("optimizer"), dict)
        else None
    )
    return f"{text}, {schedule}" if schedule else text


def _format_teacher_passes(settings: dict) -> str:
    """How often the teacher ran and whether its targets were cached (never the cache's local path)."""
    text = f"{_format_count(settings['teacher_images'])} images" if "teacher_images" in settings else ""
    cache = settings.get("teacher_cache")
    if isinstance(cache, dict):
        hits, misses = cache.get("hits"), cache.get("misses")
        counts = (
            f": {_format_count(hits)} reuses, {_format_count(misses)} computed" if hits is not None else ""
        )
        text += (
            f" (targets cached in {_format_value(cache.get('dtype'))}{counts}; each image keeps one crop and one "
            "set of views for the whole run)"
        )
    elif "teacher_cache" in settings:
        text += " (no cache: fresh crops and views every epoch)"
    return text.strip() or "-"


def _setting_label(key: str) -> str:
    """A readable label for a setting this card has no row for (a newer trainer's, or a user's)."""
    return key.replace("_", " ").strip().capitalize() or key


def _training_facts(settings: dict | None) -> dict:
    """Prose sentence, table rows and resolution of the run, from the trainer's settings JSON."""
    if not settings:
        return {"sentence": "", "rows": [], "resolution": ""}
    rows: list[dict] = []
    shown: set[str] = set()

    def add(label: str, key: str, text: str) -> None:
        rows.append({"label": label, "value": text})
        shown.add(key)

    settings = dict(settings)
    if "base_model" in settings:
        base = _base_model_link(str(settings["base_model"]))
        if settings.get("base_model_synthetic"):
            base = (
                "synthetic, random init with planted artifacts (phreg-hf's demo; see the notice at the top)"
            )
        add("Base model", "base_model", base)
    if "model_type" in settings:
        student_class = f"`{settings['student_class']}`, " if settings.get("student_class") else ""
        add("Student", "model_type", f"{student_class}model type `{settings['model_type']}`")
        shown.add("student_class")
    if "num_register_tokens" in settings:
        add("Register tokens", "num_register_tokens", _format_value(settings["num_register_tokens"]))
    parts = settings.get("trainable_parts")
    if parts:
        count = settings.get("num_trainable_parameters")
        count_text = f"{_format_count(count)} parameters; " if count is not None else ""
        add(
            "Trained parts",
            "trainable_parts",
            f"{_format_trained_parts(parts)} ({count_text}everything else frozen)",
        )
    if "dataset" in settings:
        add("Training data", "dataset", _format_dataset(settings["dataset"], with_description=True))
    resolution = ""
    if settings.get("resolution"):
        resolution = f"{settings['resolution']} x {settings['resolution']} px"
        grid = settings.get("patch_grid")
        grid_text = f" ({grid[0]} x {grid[1]} patches)" if isinstance(grid, list) and len(grid) == 2 else ""
        add("Resolution", "resolution", resolution + grid_text)
    if "num_views" in settings:
        add("Teacher views K", "num_views", _format_value(settings["num_views"]))
    if "shift_frac" in settings:
        add(
            "Largest view shift",
            "shift_frac",
            f"{_format_value(settings['shift_frac'])} of the patch grid side",
        )
    if "flip_prob" in settings:
        add("View flip probability", "flip_prob", _format_value(settings["flip_prob"]))
    if "fill_value" in settings:
        add(
            "Fill of shifted-in pixels",
            "fill_value",
            f"{_format_value(settings['fill_value'])} (raw pixel value in 0..1, before normalization)",
        )
    if "mse_scale" in settings:
        add(
            "Loss",
            "mse_scale",
            f"(1 - cosine similarity) + {_format_value(settings['mse_scale'])} x MSE on final-normed patch tokens",
        )
        shown.add("loss")
    if "optimizer" in settings:
        add("Optimizer", "optimizer", _format_optimizer(settings))
    if "learning_rate" in settings:
        add("Learning rate", "learning_rate", _format_learning_rate(settings))
    if all(settings.get(key) is not None for key in _BATCH_KEYS):
        per_device, accumulation, processes = (int(settings[key]) for key in _BATCH_KEYS)
        rows.append(
            {
                "label": "Batch size",
                "value": f"{per_device * accumulation * processes} ({per_device} per device x {accumulation} "
                f"accumulation steps x {processes} processes)",
            }
        )
        shown.update(_BATCH_KEYS)
    if "global_steps" in settings:
        steps = _format_count(settings["global_steps"])
        skipped = settings.get("skipped_steps")
        if skipped:
            steps += f" ({_format_count(skipped)} skipped for NaN/inf loss or targets, no update)"
        add("Optimizer steps", "global_steps", steps)
    if "epochs" in settings:
        add("Epochs", "epochs", _format_value(settings["epochs"]))
    if "images_seen" in settings:
        add("Training images seen", "images_seen", _format_count(settings["images_seen"]))
    if "teacher_images" in settings or "teacher_cache" in settings:
        add("Teacher passes", "teacher_cache", _format_teacher_passes(settings))
    if "mixed_precision" in settings:
        add("Mixed precision", "mixed_precision", _format_value(settings["mixed_precision"]))
    if "hardware" in settings:
        add("Hardware", "hardware", _format_value(settings["hardware"]))
    if settings.get("train_runtime_s") is not None:
        add("Training time", "train_runtime_s", _format_duration(settings["train_runtime_s"]))
    if "skipped_images" in settings:
        add("Unreadable images skipped", "skipped_images", _format_value(settings["skipped_images"]))
    if "versions" in settings:
        add("Software", "versions", _format_value(settings["versions"]))
    # Anything else recorded (a newer trainer's settings, a user's), under a readable label.
    for key, value in settings.items():
        if key not in shown and key not in _HIDDEN_SETTINGS:
            add(_setting_label(key), key, _format_value(value))

    clauses = []
    if parts:
        clauses.append(f"Only the {_format_trained_parts(parts)} were trained")
    else:
        clauses.append("It was trained")
    if settings.get("global_steps") is not None:
        clauses.append(f"for {settings['global_steps']} optimizer steps")
    if settings.get("dataset"):
        clauses.append(f"on {_format_dataset(settings['dataset'])}")
    if resolution:
        clauses.append(f"at {resolution}")
    if settings.get("num_views") is not None:
        clauses.append(f"against a teacher averaged over K = {settings['num_views']} views")
    if settings.get("hardware"):
        clauses.append(f"on {_format_value(settings['hardware'])}")
    if settings.get("train_runtime_s") is not None:
        clauses.append(f"in {_format_duration(settings['train_runtime_s'])}")
    sentence = " ".join(clauses) + "." if len(clauses) > 1 else ""
    return {"sentence": sentence, "rows": rows, "resolution": resolution}


def _results(metrics: dict | None) -> dict:
    """Results table from the metrics JSON: one row per measure, one column per model (base, teacher, student)."""
    if not metrics:
        return {"description": "", "columns": [], "rows": [], "notes": [], "scope": ""}
    model_rows = metrics.get("rows")
    if not isinstance(model_rows, dict) or not model_rows:
        raise ValueError(
            f'{METRICS_FILE} has no "rows" ({{"base"|"teacher"|"student": {{metric: value}}}}); re-run '
            "`phreg eval --out` or remove the file to push without results."
        )
    order = [name for name in METRIC_ROW_LABELS if name in model_rows]
    order += sorted(name for name in model_rows if name not in METRIC_ROW_LABELS)
    measures = list(dict.fromkeys(name for row in order for name in model_rows[row]))
    better = {**METRIC_BETTER, **(metrics.get("better") or {})}
    descriptions = {**METRIC_DESCRIPTIONS, **(metrics.get("descriptions") or {})}

    def cell(value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return _format_number(value)
        return "n/a"

    rows = [
        {
            "name": name,
            "label": METRIC_LABELS.get(name, name.replace("_", " ")).capitalize(),
            "better": better.get(name, "-"),
            "cells": [cell(model_rows[row].get(name)) for row in order],
        }
        for name in measures
    ]
    pieces = []
    if metrics.get("num_images") is not None:
        pieces.append(f"{metrics['num_images']} held-out images")
    else:
        pieces.append("held-out images")
    if metrics.get("images"):
        pieces.append(f"(`{Path(str(metrics['images'])).name or metrics['images']}`)")
    if metrics.get("resolution"):
        pieces.append(f"at {metrics['resolution']} x {metrics['resolution']} px")
    scope = ""
    if "teacher" in model_rows:
        scope = (
            "The denoised teacher is the frozen base model averaged over shifted and flipped views: the target the "
            "student was distilled towards, which costs K forward passes per image; it is not part of this repository."
        )
    return {
        "description": " ".join(pieces),
        "columns": [METRIC_ROW_LABELS.get(row, row) for row in order],
        "rows": rows,
        "notes": [
            {"name": n, "label": METRIC_LABELS.get(n, n.replace("_", " ")), "text": descriptions[n]}
            for n in measures
            if n in descriptions
        ],
        "scope": scope,
    }


def _check_settings_match_config(folder: Path, settings: dict | None, config: dict) -> None:
    """The card describes the weights in config.json: settings recorded for another model would make it lie."""
    for key in ("model_type", "num_register_tokens"):
        recorded = (settings or {}).get(key)
        if recorded is not None and recorded != config.get(key):
            raise ValueError(
                f"{folder / TRAINING_SETTINGS_FILE} records {key}={recorded!r} but {folder / CONFIG_FILE} has "
                f"{config.get(key)!r}: the settings belong to another model. Put the matching {TRAINING_SETTINGS_FILE} "
                "there, or remove it to push without training details."
            )


def _assert_no_none(value: Any, where: str = "template variables") -> None:
    """None would render as the word 'None' in the card: every variable must be a real value or empty."""
    if value is None:
        raise ValueError(f"{where} is None; the model card renderer must pass text, numbers or empty values.")
    if isinstance(value, dict):
        for key, item in value.items():
            _assert_no_none(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _assert_no_none(item, f"{where}[{index}]")


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise ValueError(f"Invalid Hub repository id {repo_id!r}: {error}") from error
    if repo_id.count("/") != 1:
        raise ValueError(
            f"Hub repository id {repo_id!r} needs its namespace, as in 'your-user-or-org/{repo_id}': the model card's "
            "code snippets name the full id."
        )


def render_template(template_path: str | Path, card_data: ModelCardData, **template_kwargs) -> ModelCard:
    """`ModelCard.from_template`, after a strict render that fails on any variable the template uses but is not
    given (jinja2.StrictUndefined; from_template itself renders a missing variable as an empty string)."""
    template_text = Path(template_path).read_text(encoding="utf-8")
    strict = jinja2.Environment(undefined=jinja2.StrictUndefined)
    variables = {**card_data.to_dict(), **template_kwargs}
    strict.from_string(template_text).render(card_data=card_data.to_yaml(), **variables)
    card = ModelCard.from_template(card_data, template_path=str(template_path), **template_kwargs)
    leftovers = [marker for marker in ("{{", "{%", "{#") if marker in str(card)]
    if leftovers:
        raise ValueError(
            f"The rendered model card still contains Jinja markers {leftovers}; fix {template_path}."
        )
    return card


def render_model_card(
    folder: str | Path,
    repo_id: str,
    license: str | None = None,
    base_model: str | None = None,
    *,
    license_name: str | None = None,
    license_link: str | None = None,
    export_subfolder: str | None = None,
) -> ModelCard:
    """Render the model card of the saved student in `folder` for the Hub repository `repo_id`.

    Reads `config.json`, the code files, and `phreg_training.json` / `phreg_metrics.json` when present.

    Args:
        folder: a saved student (a training run's output dir, or `student.save_pretrained(folder)`).
        repo_id: "namespace/name" of the Hub repository the card is for (used in the code snippets).
        license: license identifier; defaults to the one recorded in the settings JSON or in a local base model's
            README.md. A ValueError naming `--license` is raised when it stays unknown.
        base_model: Hub id (or local path) of the base model; defaults to the settings JSON's `base_model`.
        license_name, license_link: for `license="other"`.
        export_subfolder: subfolder holding the stock `Dinov2WithRegistersModel` export, if one is uploaded.

    Returns:
        The `huggingface_hub.ModelCard` (not written anywhere; `card.save(path)` writes it).
    """
    folder = Path(folder)
    config = read_student_config(folder)
    _check_repo_id(repo_id)
    settings = _read_optional_json(folder / TRAINING_SETTINGS_FILE)
    metrics = _read_optional_json(folder / METRICS_FILE)
    base_model = _resolve_base_model(base_model, settings)
    license_info = _local_license(license, base_model, settings)
    if license_info is None:
        raise _license_error(folder, repo_id, base_model, looked_up_online=False)
    if license_name:
        license_info["license_name"] = license_name
    if license_link:
        license_info["license_link"] = license_link

    model_type = config["model_type"]
    _check_settings_match_config(folder, settings, config)
    backbone_tag, backbone_name = STUDENT_BACKBONES[model_type]
    base_hub_id = base_model if _is_hub_id(base_model) else None
    # A full CLIP student (text tower + dense text-aligned features) ships an open-vocabulary segmentation pipeline.
    is_clip_full = model_type == PhregCLIPConfig.model_type
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_hub_id,
        base_model_relation="finetune" if base_hub_id else None,
        datasets=_dataset_ids(settings) or None,
        pipeline_tag=CLIP_PIPELINE_TAG if is_clip_full else PIPELINE_TAG,
        tags=[*CARD_TAGS, backbone_tag],
        **license_info,
    )

    is_synthetic = bool((settings or {}).get("base_model_synthetic"))
    if is_synthetic:
        base_phrase = (
            f"a demo student of a synthetic {backbone_name} model (random weights with artifacts planted by "
            "phreg-hf's offline demo, not a pretrained model)"
        )
    elif base_hub_id:
        base_phrase = f"the {backbone_name} model {_base_model_link(base_hub_id)}"
    elif base_model:
        base_phrase = (
            f"the {backbone_name} model `{Path(base_model).name or base_model}` (not a Hub model id)"
        )
    else:
        base_phrase = f"a {backbone_name} model (its base checkpoint is not recorded)"
    # A CLIP student's CLIPProcessor keeps its image processor inside processor_config.json.
    has_image_processor = (folder / IMAGE_PROCESSOR_NAME).is_file() or (
        is_clip_full and (folder / PROCESSOR_NAME).is_file()
    )
    processor_source = repo_id if has_image_processor else (base_hub_id or "<base model id>")
    patch_size = config.get("patch_size", "?")
    patch_size = patch_size[0] if isinstance(patch_size, list) else patch_size
    image_size = config.get("image_size", "?")
    image_size = image_size[0] if isinstance(image_size, list) else image_size
    num_registers = int(config.get("num_register_tokens", 0))
    # A base pretrained with registers (Dinov2WithRegisters, DINOv3) keeps its own, before PH-Reg's.
    num_base_registers = int(config.get("num_base_register_tokens", 0))
    parts = (settings or {}).get("trainable_parts")
    trained_parts_text = (
        f"the {_format_trained_parts(parts)}"
        if parts
        else f"the parts PH-Reg trained (by default the {_format_trained_parts(student_trainable_parts(model_type))})"
    )
    versions = (settings or {}).get("versions") or {}
    phreg_version = ""
    if isinstance(versions, dict):
        phreg_version = str(versions.get("phreg_hf") or versions.get("phreg-hf") or "")

    status = training_status(settings)
    if status != "trained":
        logger.warning(
            "%s is not a trained PH-Reg model: %s The model card says so; train it first (`phreg distill`) to publish one.",
            folder,
            UNTRAINED_WARNINGS[status],
        )
    notices = []
    if is_synthetic:
        notices.append(
            f"**Demo model, not for use.** Its base is a small random-init {backbone_name} with artifacts planted on "
            "purpose by phreg-hf's offline demo, not a pretrained model: its features mean nothing. It shows the "
            "PH-Reg pipeline end to end."
        )
    if status == "untrained":
        notices.append(
            f"**Untrained.** Its training record ({TRAINING_SETTINGS_FILE}) shows no optimizer step: the register "
            "tokens are as initialized and the model computes, artifacts included, what its base model computes."
        )
    elif status == "unrecorded":
        notices.append(
            f"**Not trained, as far as this repository shows.** It came without {TRAINING_SETTINGS_FILE}, the record "
            "the PH-Reg trainer writes, so nothing says its register tokens were trained. A student saved right "
            "after `student_from_base` has random registers and computes, artifacts included, what its base model "
            "computes."
        )

    remote_code = code_files(folder, config)
    template_kwargs = {
        "notices": notices,
        "is_trained": status == "trained",
        "repo_id": repo_id,
        "model_name": repo_id.split("/")[-1],
        "base_model_phrase": base_phrase,
        "num_register_tokens": num_registers,
        **_token_layout(model_type, num_base_registers, num_registers, image_size),
        "hidden_size": config.get("hidden_size", "?"),
        "patch_size": patch_size,
        "image_size": image_size,
        "has_image_processor": has_image_processor,
        "processor_source": processor_source,
        "is_dinov2": model_type in DINOV2_MODEL_TYPES,
        "export_subfolder": export_subfolder or "",
        "has_settings": settings is not None,
        "settings_file": TRAINING_SETTINGS_FILE,
        "training": _training_facts(settings),
        "has_metrics": metrics is not None,
        "metrics_file": METRICS_FILE,
        "results": _results(metrics),
        "trained_parts_text": trained_parts_text,
        "code_files": [{"name": n, "sha256": file_sha256(folder / n)} for n in remote_code],
        "code_imports": ", ".join(f"`{p}`" for p in _imported_packages([folder / n for n in remote_code]))
        or "nothing else",
        "phreg_version": phreg_version,
        "dense_results": dense_result_tables(folder),
        "is_clip_full": is_clip_full,
        "projection_dim": config.get("projection_dim", "?"),
        "previews": [
            path.relative_to(folder).as_posix() for path in sorted((folder / PREVIEWS_DIR).glob("*.png"))
        ],
    }
    _assert_no_none(template_kwargs)
    return render_template(model_card_template_path(), card_data, **template_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Telling our rendered cards from the user's
# A rendered card ends with this comment (invisible on the Hub). `run` identifies the files the card describes,
# `sha256` the card text above the comment: a card whose text no longer matches was edited by hand, and one
# whose run no longer matches describes other weights.
_CARD_MARKER = re.compile(r"\n<!-- phreg-hf card; run: ([0-9a-f]{64}); sha256: ([0-9a-f]{64}) -->\n?\Z")
# The files whose bytes (weights: size and header) define "the run" a card describes.
_RUN_FILES = (CONFIG_FILE, TRAINING_SETTINGS_FILE, METRICS_FILE, IMAGE_PROCESSOR_NAME)


def folder_run_hash(folder: str | Path) -> str:
    """sha256 identifying the model in `folder`: config, settings, metrics, processor, and each weight file's size
    and safetensors header (which holds every tensor's name, shape and offsets)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in _RUN_FILES:
        path = folder / name
        digest.update(f"{name}\0".encode())
        digest.update(path.read_bytes() if path.is_file() else b"<absent>")
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode() + head)
    return digest.hexdigest()


def with_card_marker(card_text: str, run_hash: str) -> str:
    """The card text with our closing marker (see `_CARD_MARKER`)."""
    body = card_text.rstrip("\n") + "\n"
    content_hash = hashlib.sha256(body.encode()).hexdigest()
    return f"{body}\n<!-- phreg-hf card; run: {run_hash}; sha256: {content_hash} -->\n"


def read_card_marker(path: str | Path) -> tuple[str, bool] | None:
    """`(run hash, edited?)` of a card we rendered, or None for a file without our marker (the user's own)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = _CARD_MARKER.search(text)
    if match is None:
        return None
    body = text[: match.start()]
    edited = hashlib.sha256(body.encode()).hexdigest() != match.group(2)
    return match.group(1), edited


def card_is_generated_unedited(path: str | Path) -> bool:
    """True for a README.md that phreg-hf rendered and nobody edited since (safe to re-render)."""
    marker = read_card_marker(path)
    return marker is not None and not marker[1]
