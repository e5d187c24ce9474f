"""Model card and Hub upload of a saved PH-Reg student: `phreg push OUTPUT_DIR REPO_ID`.

A pushed repository holds what a Hub user needs and nothing more, in one commit: the safetensors weights (one file
or shards plus their index), `config.json` with its `auto_map`, the self-contained code files it names, the image
processor config, the rendered `README.md`, the trainer's settings and metrics JSON when present, and preview
PNGs when present. Pickle files are refused, and training state (`checkpoint-*/`, logs) is never uploaded.

The card is rendered from `model_cards/phreg_model_card.md` with `huggingface_hub.ModelCard.from_template`;
every fact in it is read from the folder (config.json, the two JSONs, the code files), never typed by hand.

Failure policy: the card is rendered into the folder first (`README.md`, so it can be reviewed), then the only
network calls are `HfApi.create_repo` / `create_branch` / `create_commit` (plus, outside `--dry_run`, one
best-effort `model_info` to read the base model's license). If they fail (no token, network, refused upload)
nothing in the folder but `README.md` has been written, and the error names the command that retries:
`phreg push OUTPUT_DIR REPO_ID`.

Decision: the student classes do not override `push_to_hub`. `modeling_phreg.py` travels with checkpoints as
remote code and must import nothing of phreg_hf; transformers' own `model.push_to_hub` already uploads
safetensors, config and code files (with a generic card). `push_student_to_hub` adds this card and the run's
files on top, in one commit.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import math
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import validate_repo_id
from transformers import HfArgumentParser
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

from .configuration_phreg import PhregCLIPConfig, PhregCLIPVisionConfig, PhregDinov2Config, PhregViTConfig
from .constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE
from .modeling_phreg import TRAINABLE_PARTS

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "phreg_model_card.md"
README_FILE = "README.md"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
# Subfolder of the repository that holds the stock `Dinov2WithRegistersModel` export (--export_dinov2_with_registers).
EXPORT_SUBFOLDER = "dinov2_with_registers"
# Pickle-based formats can run code when loaded: never uploaded, and their presence stops a push.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Same default as transformers' `PreTrainedModel.push_to_hub` / `save_pretrained`.
DEFAULT_MAX_SHARD_SIZE = "50GB"

# model_type of a saved student -> (Hub tag of the backbone, its name in prose)
STUDENT_BACKBONES = {
    PhregDinov2Config.model_type: ("dinov2", "DINOv2"),
    PhregViTConfig.model_type: ("vit", "ViT"),
    PhregCLIPVisionConfig.model_type: ("clip", "CLIP vision"),
    PhregCLIPConfig.model_type: ("clip", "CLIP"),
}
# A CLIP student's processor and tokenizer (its text tower and segmentation pipeline need them).
PROCESSOR_FILES = (
    PROCESSOR_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
CARD_TAGS = ("phreg", "registers", "vision")
PIPELINE_TAG = "image-feature-extraction"

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
# Which way is better, for the measures whose meaning METHOD.md fixes. A metrics JSON may add or override
# entries with an optional {"better": {metric: "lower" | "higher"}}; unknown measures get no arrow.
METRIC_BETTER = {
    "outlier_ratio": "lower",
    "max_to_median_norm": "lower",
    "teacher_agreement": "higher",
    "position_locked_energy": "lower",
}
METRIC_DESCRIPTIONS = {
    "outlier_ratio": "share of patch tokens whose norm exceeds a robust threshold of the image's patch norms",
    "max_to_median_norm": "largest patch-token norm over the median patch-token norm",
    "teacher_agreement": "cosine similarity of patch tokens to the denoised teacher's features",
    "position_locked_energy": "share of the feature variance explained by grid position alone, across images",
}


class HubPushError(RuntimeError):
    """The upload failed (no token, network, refused); the local folder is intact and the message says how to retry."""


@dataclass(frozen=True)
class UploadFile:
    path_in_repo: str
    local_path: Path
    size: int


@dataclass
class UploadPlan:
    """What one commit would upload from `folder`, and what it leaves out (relative path, reason)."""

    folder: Path
    files: list[UploadFile]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self, repo_id: str) -> str:
        lines = [f"{len(self.files)} files ({_human_size(self.total_size)}) for {repo_id}, in one commit:"]
        lines += [f"  {_human_size(f.size):>10}  {f.path_in_repo}" for f in self.files]
        if self.skipped:
            lines.append("Not uploaded:")
            lines += [f"  {path}  ({reason})" for path, reason in self.skipped]
        return "\n".join(lines)


@dataclass
class PushResult:
    repo_id: str
    plan: UploadPlan
    card: ModelCard
    commit: CommitInfo | None = None  # None for a dry run

    @property
    def commit_url(self) -> str | None:
        return None if self.commit is None else self.commit.commit_url


# ----------------------------------------------------------------------------------------------------------------
# Reading a saved student folder
def model_card_template_path() -> Path:
    """The card template: `phreg_hf/model_cards/` in an installed wheel (a symlink to the top-level `model_cards/`
    in a checkout), else the top-level `model_cards/` next to the package in a source checkout."""
    package_dir = Path(__file__).resolve().parent
    candidates = (
        Path(__file__).parent / "model_cards" / TEMPLATE_NAME,
        package_dir.parent / "model_cards" / TEMPLATE_NAME,
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Model card template {TEMPLATE_NAME} not found in {[str(c.parent) for c in candidates]}. Reinstall "
        "phreg-hf (pip install phreg-hf, or pip install -e . in a checkout) so that model_cards/ is shipped."
    )


def read_student_config(folder: str | Path) -> dict:
    """config.json of a saved PH-Reg student; clear errors for a missing folder or another kind of model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Output folder {folder} does not exist. Pass the --output_dir of a finished "
            "`accelerate launch examples/distill.py` run, or a folder written by student.save_pretrained(...)."
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
            "and train it (examples/distill.py), then push its output folder."
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
    # The custom pipeline of a CLIP student (segmentation.py) is remote code too.
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
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
        f"{folder / TRAINING_SETTINGS_FILE} or in a local base model's README.md.{online} Pass the base model's "
        "license identifier (e.g. apache-2.0, mit; see https://huggingface.co/docs/hub/repositories-licenses) "
        f"with --license:\n    phreg push {shlex.quote(str(folder))} {repo_id} --license LICENSE\n"
        "or license=... from Python."
    )


def _resolve_base_model(base_model: str | None, settings: dict | None) -> str | None:
    if base_model:
        return base_model
    recorded = (settings or {}).get("base_model")
    return str(recorded) if recorded else None


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


def _format_trained_parts(parts: Sequence[str]) -> str:
    names = [TRAINABLE_PART_NAMES.get(part, part) for part in parts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _base_model_link(base_model: str) -> str:
    return (
        f"[{base_model}](https://huggingface.co/{base_model})"
        if _is_hub_id(base_model)
        else f"`{base_model}`"
    )


def _format_dataset(dataset: Any) -> str:
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
    return text


def _dataset_ids(settings: dict | None) -> list[str]:
    dataset = (settings or {}).get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    return [str(name)] if _is_hub_id(name) else []


# ----------------------------------------------------------------------------------------------------------------
# Template variables
_BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_processes")
# Settings not shown in the card table: the raw command line (kept in full in the uploaded JSON).
_HIDDEN_SETTINGS = ("args",)


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
        add("Base model", "base_model", _base_model_link(str(settings["base_model"])))
    if "model_type" in settings:
        add("Student model type", "model_type", f"`{settings['model_type']}`")
    if "num_register_tokens" in settings:
        add("Register tokens", "num_register_tokens", _format_value(settings["num_register_tokens"]))
    parts = settings.get("trainable_parts")
    if parts:
        add("Trained parts", "trainable_parts", _format_trained_parts(parts) + " (everything else frozen)")
    if "dataset" in settings:
        add("Training data", "dataset", _format_dataset(settings["dataset"]))
    resolution = ""
    if settings.get("resolution"):
        resolution = f"{settings['resolution']} x {settings['resolution']} px"
        add("Resolution", "resolution", resolution)
    if "num_views" in settings:
        add("Teacher views K", "num_views", _format_value(settings["num_views"]))
    if "shift_frac" in settings:
        add(
            "Largest view shift",
            "shift_frac",
            f"{_format_value(settings['shift_frac'])} of the patch grid side",
        )
    if "mse_scale" in settings:
        add("Loss", "mse_scale", f"(1 - cosine similarity) + {_format_value(settings['mse_scale'])} x MSE")
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
    for key, label in (("global_steps", "Optimizer steps"), ("epochs", "Epochs")):
        if key in settings:
            add(label, key, _format_value(settings[key]))
    if "mixed_precision" in settings:
        add("Mixed precision", "mixed_precision", _format_value(settings["mixed_precision"]))
    if "hardware" in settings:
        add("Hardware", "hardware", _format_value(settings["hardware"]))
    if settings.get("train_runtime_s") is not None:
        add("Training time", "train_runtime_s", _format_duration(settings["train_runtime_s"]))
    if "skipped_images" in settings:
        add("Skipped images", "skipped_images", _format_value(settings["skipped_images"]))
    if "versions" in settings:
        add("Software", "versions", _format_value(settings["versions"]))
    # Everything else the trainer recorded (optimizer settings, ...) under its own key.
    for key, value in settings.items():
        if key not in shown and key not in _HIDDEN_SETTINGS:
            add(f"`{key}`", key, _format_value(value))

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
        "notes": [{"name": n, "text": descriptions[n]} for n in measures if n in descriptions],
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
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_hub_id,
        base_model_relation="finetune" if base_hub_id else None,
        datasets=_dataset_ids(settings) or None,
        pipeline_tag=PIPELINE_TAG,
        tags=[*CARD_TAGS, backbone_tag],
        **license_info,
    )

    if base_hub_id:
        base_phrase = f"the {backbone_name} model {_base_model_link(base_hub_id)}"
    elif base_model:
        base_phrase = (
            f"the {backbone_name} model `{Path(base_model).name or base_model}` (not a Hub model id)"
        )
    else:
        base_phrase = f"a {backbone_name} model (its base checkpoint is not recorded)"
    has_image_processor = (folder / IMAGE_PROCESSOR_NAME).is_file()
    processor_source = repo_id if has_image_processor else (base_hub_id or "<base model id>")
    patch_size = config.get("patch_size", "?")
    patch_size = patch_size[0] if isinstance(patch_size, list) else patch_size
    image_size = config.get("image_size", "?")
    image_size = image_size[0] if isinstance(image_size, list) else image_size
    num_registers = int(config.get("num_register_tokens", 0))
    parts = (settings or {}).get("trainable_parts")
    trained_parts_text = (
        f"the {_format_trained_parts(parts)}"
        if parts
        else f"the parts PH-Reg trained (by default the {_format_trained_parts(TRAINABLE_PARTS)})"
    )
    versions = (settings or {}).get("versions") or {}
    phreg_version = ""
    if isinstance(versions, dict):
        phreg_version = str(versions.get("phreg_hf") or versions.get("phreg-hf") or "")

    remote_code = code_files(folder, config)
    template_kwargs = {
        "repo_id": repo_id,
        "model_name": repo_id.split("/")[-1],
        "base_model_phrase": base_phrase,
        "num_register_tokens": num_registers,
        "token_layout": f"1 + {num_registers} + patches",
        "hidden_size": config.get("hidden_size", "?"),
        "patch_size": patch_size,
        "image_size": image_size,
        "has_image_processor": has_image_processor,
        "processor_source": processor_source,
        "is_dinov2": model_type == PhregDinov2Config.model_type,
        "export_subfolder": export_subfolder or "",
        "has_settings": settings is not None,
        "settings_file": TRAINING_SETTINGS_FILE,
        "training": _training_facts(settings),
        "has_metrics": metrics is not None,
        "metrics_file": METRICS_FILE,
        "results": _results(metrics),
        "trained_parts_text": trained_parts_text,
        "code_files": [{"name": n, "sha256": _sha256(folder / n)} for n in remote_code],
        "code_imports": ", ".join(f"`{p}`" for p in _imported_packages([folder / n for n in remote_code]))
        or "nothing else",
        "phreg_version": phreg_version,
        "previews": [
            path.relative_to(folder).as_posix() for path in sorted((folder / PREVIEWS_DIR).glob("*.png"))
        ],
    }
    _assert_no_none(template_kwargs)
    return render_template(model_card_template_path(), card_data, **template_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# What gets uploaded
def _weight_files(folder: Path) -> list[str]:
    if (folder / SAFETENSORS_FILE).is_file():
        return [SAFETENSORS_FILE]
    index_path = folder / SAFETENSORS_INDEX_FILE
    if index_path.is_file():
        shards = sorted(set(_read_json(index_path).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing or not shards:
            raise FileNotFoundError(
                f"{index_path} lists shards {missing or '(none)'} that are not in {folder}. Re-save the model with "
                "save_pretrained(folder)."
            )
        return [SAFETENSORS_INDEX_FILE, *shards]
    raise FileNotFoundError(
        f"{folder} has no safetensors weights ({SAFETENSORS_FILE}, or shards with {SAFETENSORS_INDEX_FILE}). Save "
        "the student with student.save_pretrained(folder), which writes safetensors."
    )


def prepare_upload(folder: str | Path, *, require_readme: bool = True) -> UploadPlan:
    """List the files one commit uploads from a saved student folder, sorted by their path in the repository.

    Uploaded: the safetensors weights (one file, or the index and its shards), config.json, the code files its
    auto_map runs, preprocessor_config.json, README.md, phreg_training.json and phreg_metrics.json when present,
    and previews/*.png when present. Nothing else: training state (checkpoint-*/), logs and any other files are
    listed in `skipped`.

    Raises:
        ValueError: a pickle file (.bin/.pt/.pth/.pkl/.pickle/.ckpt) sits among the files of the repository
            (top level or previews/); they can run code when loaded and are never uploaded, so remove them first.
        FileNotFoundError: no folder, no config.json, no safetensors, missing code files, or (with
            `require_readme`) no README.md.
    """
    folder = Path(folder)
    config = read_student_config(folder)
    wanted = {
        CONFIG_FILE,
        *code_files(folder, config),
        *_weight_files(folder),
        IMAGE_PROCESSOR_NAME,
        *PROCESSOR_FILES,
        TRAINING_SETTINGS_FILE,
        METRICS_FILE,
        README_FILE,
    }
    files: list[UploadFile] = []
    skipped: list[tuple[str, str]] = []
    pickles: list[str] = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if path.is_dir():
            if name == PREVIEWS_DIR:
                for preview in sorted(path.rglob("*")):
                    relative = preview.relative_to(folder).as_posix()
                    if preview.suffix.lower() in PICKLE_SUFFIXES:
                        pickles.append(relative)
                    elif preview.is_file() and preview.suffix.lower() == ".png" and preview.parent == path:
                        files.append(UploadFile(relative, preview, preview.stat().st_size))
                    elif preview.is_file():
                        skipped.append((relative, "only previews/*.png are uploaded"))
            elif name.startswith("checkpoint"):
                skipped.append((f"{name}/", "training checkpoint, never uploaded"))
            else:
                skipped.append((f"{name}/", "folder that is not part of the model (logs, caches, ...)"))
        elif path.suffix.lower() in PICKLE_SUFFIXES:
            pickles.append(name)
        elif name in wanted and path.is_file():
            files.append(UploadFile(name, path, path.stat().st_size))
        elif path.suffix == ".safetensors" or name.endswith(".safetensors.index.json"):
            skipped.append((name, "not the checkpoint transformers loads from this folder"))
        else:
            skipped.append((name, "not part of a PH-Reg model repository"))
    if pickles:
        raise ValueError(
            f"Refusing to upload from {folder}: it holds pickle files {pickles}, which can run arbitrary code when "
            "loaded. PH-Reg repositories hold safetensors only: delete or move these files (the weights are in "
            "*.safetensors), then retry."
        )
    if require_readme and not (folder / README_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {README_FILE}; render it with render_model_card first.")
    return UploadPlan(folder, sorted(files, key=lambda f: f.path_in_repo), skipped)


def _export_dinov2_with_registers(folder: Path, export_root: Path) -> list[UploadFile]:
    """Save the stock `Dinov2WithRegistersModel` export of the student in `folder` under export_root/EXPORT_SUBFOLDER."""
    from .modeling_phreg import PhregDinov2Model

    target = export_root / EXPORT_SUBFOLDER
    PhregDinov2Model.from_pretrained(folder).to_dinov2_with_registers().save_pretrained(target)
    if (folder / IMAGE_PROCESSOR_NAME).is_file():
        shutil.copy2(folder / IMAGE_PROCESSOR_NAME, target / IMAGE_PROCESSOR_NAME)
    return [
        UploadFile(f"{EXPORT_SUBFOLDER}/{path.name}", path, path.stat().st_size)
        for path in sorted(target.iterdir())
        if path.is_file()
    ]


# ----------------------------------------------------------------------------------------------------------------
# Pushing
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


def retry_command(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    license: str | None = None,
    revision: str | None = None,
    export_dinov2_with_registers: bool = False,
    keep_readme: bool = False,
) -> str:
    """The `phreg push` command line that redoes a push."""
    words = ["phreg", "push", str(folder), repo_id]
    words += ["--private"] if private else []
    words += ["--license", license] if license else []
    words += ["--revision", revision] if revision else []
    words += ["--export_dinov2_with_registers"] if export_dinov2_with_registers else []
    words += ["--keep_readme"] if keep_readme else []
    return " ".join(shlex.quote(word) for word in words)


def _network_errors() -> tuple[type[BaseException], ...]:
    # OSError covers HfHubHTTPError, LocalTokenNotFoundError and OfflineModeIsEnabled; the HTTP library's own base
    # error (httpx / httpx2, whichever huggingface_hub uses) covers connection errors and timeouts.
    http_library_errors = tuple(
        base for base in HfHubHTTPError.__mro__[1:] if base.__name__ == "HTTPError" and base is not OSError
    )
    return (OSError, *http_library_errors)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    license: str | None = None,
    base_model: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    dry_run: bool = False,
    export_dinov2_with_registers: bool = False,
    keep_readme: bool = False,
) -> PushResult:
    """Render the card into `folder/README.md` and upload the folder's model files to `repo_id` in one commit.

    Args:
        folder: a saved student (see `prepare_upload` for what is uploaded).
        repo_id: "namespace/name"; the repository is created if needed (`private` applies only then).
        token: Hub token; defaults to the saved login or HF_TOKEN.
        license, base_model: see `render_model_card`. Outside a dry run, an unknown license is also looked up in
            the base model's Hub card.
        commit_message, revision: of the commit (`revision`: a branch, created if missing).
        dry_run: render the card and return the plan; no network call at all.
        export_dinov2_with_registers: also upload the stock `Dinov2WithRegistersModel` export (DINOv2 students) to
            the subfolder `dinov2_with_registers/`, loadable with no remote code.
        keep_readme: upload the folder's existing README.md as is (e.g. after editing a dry run's card).

    Returns:
        A `PushResult` with the plan, the card and (unless `dry_run`) the `CommitInfo`. The export's files are
        written to a temporary folder that is gone when this returns (their sizes stay in the plan).

    Raises:
        FileNotFoundError / ValueError: the folder is not a pushable student (see the message for the fix);
            nothing is written.
        HubPushError: the Hub calls failed; the folder is unchanged but for README.md, and the message holds the
            `phreg push` command that retries.
    """
    folder = Path(folder)
    _check_repo_id(repo_id)
    # Refuse pickles, missing weights, ... before writing anything.
    prepare_upload(folder, require_readme=False)
    config = read_student_config(folder)
    if export_dinov2_with_registers and config["model_type"] != PhregDinov2Config.model_type:
        raise ValueError(
            f"--export_dinov2_with_registers applies to DINOv2 students only; {folder} holds a "
            f"{config['model_type']!r} student. Drop the option."
        )
    settings = _read_optional_json(folder / TRAINING_SETTINGS_FILE)
    resolved_base = _resolve_base_model(base_model, settings)

    readme_path = folder / README_FILE
    if keep_readme:
        if not readme_path.is_file():
            raise FileNotFoundError(
                f"--keep_readme: {readme_path} does not exist. Render it first with "
                f"`phreg push {shlex.quote(str(folder))} {repo_id} --dry_run`, or drop --keep_readme."
            )
        card = ModelCard.load(readme_path)
    else:
        license_info = _local_license(license, resolved_base, settings)
        if license_info is None and not dry_run:
            license_info = _hub_license(resolved_base, token)
        if license_info is None:
            raise _license_error(folder, repo_id, resolved_base, looked_up_online=not dry_run)
        card = render_model_card(
            folder,
            repo_id,
            base_model=resolved_base,
            export_subfolder=EXPORT_SUBFOLDER if export_dinov2_with_registers else None,
            **license_info,
        )
        card.save(readme_path)
        license = license_info["license"]  # the retry needs no second look-up
    retry = retry_command(
        folder,
        repo_id,
        private=private,
        license=license,
        revision=revision,
        export_dinov2_with_registers=export_dinov2_with_registers,
        keep_readme=keep_readme,
    )

    with tempfile.TemporaryDirectory(prefix="phreg-export-") as export_root:
        plan = prepare_upload(folder)
        if export_dinov2_with_registers:
            plan.files += _export_dinov2_with_registers(folder, Path(export_root))
        if dry_run:
            return PushResult(repo_id, plan, card)

        if commit_message is None:
            base_text = f" of {resolved_base}" if resolved_base else ""
            commit_message = (
                f"Upload PH-Reg student{base_text} ({config.get('num_register_tokens', 0)} registers)"
            )
        operations = [
            CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local_path))
            for f in plan.files
        ]
        api = HfApi(token=token)
        try:
            repo_url = api.create_repo(repo_id, private=private or None, exist_ok=True)
            if revision and not revision.startswith("refs/pr"):
                api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
            commit = api.create_commit(
                repo_id=repo_url.repo_id,
                operations=operations,
                commit_message=commit_message,
                revision=revision,
            )
        except _network_errors() as error:
            raise HubPushError(
                f"Could not upload {folder} to {repo_id}: {type(error).__name__}: {error}\n"
                f"Nothing is lost: {folder} is complete and unchanged (only {README_FILE}, the model card, was "
                "written there for review). Check that you are logged in (`hf auth login`, the HF_TOKEN variable, or "
                f"--token), your network, and that your token may write to {repo_id}; then retry with:\n"
                f"    {retry}"
            ) from error
    logger.info("Pushed %s to %s in one commit: %s", folder, repo_id, commit.commit_url)
    return PushResult(repo_id, plan, card, commit)


def push_student_to_hub(
    model,
    repo_id: str,
    image_processor=None,
    training_dir: str | Path | None = None,
    *,
    save_dir: str | Path | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    **push_kwargs,
) -> PushResult:
    """Save a student (safetensors, code files, image processor, the run's JSONs and previews) and push it with
    its model card in one commit: `push_to_hub` for PH-Reg students, card included.

    Args:
        model: a PH-Reg student (`PhregDinov2Model`, ..., or one loaded with trust_remote_code).
        repo_id: "namespace/name".
        image_processor: saved next to the model (its preprocessor_config.json), e.g. the base model's.
        training_dir: a training output dir whose phreg_training.json, phreg_metrics.json and previews/*.png are
            copied along, so that the card can state how the model was trained and measured.
        save_dir: where to save before uploading; by default a new temporary folder, removed after a successful
            push and kept (named in the error) when the push fails or is a dry run.
        max_shard_size: passed to `save_pretrained`; bigger checkpoints are sharded.
        push_kwargs: see `push_folder_to_hub` (private, token, license, base_model, dry_run, ...).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in STUDENT_BACKBONES:
        raise ValueError(
            f"push_student_to_hub expects a PH-Reg student, got a {type(model).__name__} ({model_type!r}). Build one "
            "with phreg_hf.student_from_base(base_model, num_register_tokens)."
        )
    own_dir = save_dir is None
    folder = Path(tempfile.mkdtemp(prefix="phreg-push-") if own_dir else save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    if image_processor is not None:
        image_processor.save_pretrained(folder)
    if training_dir is not None:
        training_dir = Path(training_dir)
        for name in (TRAINING_SETTINGS_FILE, METRICS_FILE):
            if (training_dir / name).is_file():
                shutil.copy2(training_dir / name, folder / name)
        previews = sorted((training_dir / PREVIEWS_DIR).glob("*.png"))
        for preview in previews:
            (folder / PREVIEWS_DIR).mkdir(exist_ok=True)
            shutil.copy2(preview, folder / PREVIEWS_DIR / preview.name)
    result = push_folder_to_hub(folder, repo_id, **push_kwargs)
    if own_dir and not push_kwargs.get("dry_run"):
        shutil.rmtree(folder, ignore_errors=True)
    return result


def push_training_output(
    output_dir: str | Path, hub_model_id: str, private: bool = False, token: str | None = None, **push_kwargs
) -> str | None:
    """Push a finished run's output dir (trainer's `--push_to_hub`; call once, on the main process).

    A failed upload must not throw away a finished run: every error is logged, with the `phreg push` command
    that retries, and None is returned. Returns the commit URL on success.
    """
    try:
        result = push_folder_to_hub(output_dir, hub_model_id, private=private, token=token, **push_kwargs)
    except Exception as error:  # noqa: BLE001 - the run's result is saved; report and carry on
        message = str(error)
        if not isinstance(error, HubPushError):
            retry = retry_command(output_dir, hub_model_id, private=private)
            message += f"\nThe trained model is saved in {output_dir}; push it later with:\n    {retry}"
        logger.error("Push to the Hub failed. %s", message)
        return None
    return result.commit_url


# ----------------------------------------------------------------------------------------------------------------
# `phreg push`
@dataclass
class PushArguments:
    """Options of `phreg push OUTPUT_DIR REPO_ID` (the two positionals are added to the parser separately)."""

    private: bool = field(
        default=False, metadata={"help": "Create the repository as private (if it is new)."}
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "License identifier (e.g. apache-2.0). Default: the base model's, when it is known."
        },
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Hub id of the base model. Default: the one in phreg_training.json."}
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Render OUTPUT_DIR/README.md and list the files to upload; no network at all."},
    )
    token: str | None = field(
        default=None, metadata={"help": "Hub token; by default the saved login or HF_TOKEN."}
    )
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (created if missing)."})
    commit_message: str | None = field(default=None, metadata={"help": "Message of the commit."})
    export_dinov2_with_registers: bool = field(
        default=False,
        metadata={
            "help": f"DINOv2 only: also upload a stock Dinov2WithRegistersModel to {EXPORT_SUBFOLDER}/ "
            "(loads without trust_remote_code)."
        },
    )
    keep_readme: bool = field(
        default=False,
        metadata={
            "help": "Upload OUTPUT_DIR/README.md as it is (e.g. edited after --dry_run) instead of re-rendering."
        },
    )


def _push_parser() -> argparse.ArgumentParser:
    parser = HfArgumentParser(
        PushArguments,
        prog="phreg push",
        description="Render the model card of a saved PH-Reg student and upload it to the Hub in one commit.",
    )
    parser.add_argument(
        "output_dir", help="A training --output_dir or any folder written by student.save_pretrained."
    )
    parser.add_argument("repo_id", help="Hub repository, as namespace/name.")
    return parser


def push_main(argv: Sequence[str] | None = None) -> int:
    """`phreg push OUTPUT_DIR REPO_ID [options]`. Exit codes: 0 done, 1 upload failed, 2 bad input."""
    parser = _push_parser()
    try:
        namespace = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args = PushArguments(**{f.name: getattr(namespace, f.name) for f in fields(PushArguments)})
    folder, repo_id = Path(namespace.output_dir), namespace.repo_id
    try:
        result = push_folder_to_hub(
            folder,
            repo_id,
            private=args.private,
            token=args.token,
            license=args.license,
            base_model=args.base_model,
            commit_message=args.commit_message,
            revision=args.revision,
            dry_run=args.dry_run,
            export_dinov2_with_registers=args.export_dinov2_with_registers,
            keep_readme=args.keep_readme,
        )
    except HubPushError as error:
        print(f"phreg push: error: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"phreg push: error: {error}", file=sys.stderr)
        return 2
    readme = folder / README_FILE
    if args.dry_run:
        print(f"Model card: {readme} (review it; to upload an edited card, push with --keep_readme).")
        print("Would upload " + result.plan.describe(repo_id))
        retry = retry_command(
            folder,
            repo_id,
            private=args.private,
            license=args.license,
            revision=args.revision,
            export_dinov2_with_registers=args.export_dinov2_with_registers,
        )
        print(f"Dry run: nothing was uploaded. To upload:\n    {retry}")
        return 0
    print("Uploaded " + result.plan.describe(repo_id))
    print(f"Commit: {result.commit_url}")
    if result.commit is not None and result.commit.oid:
        print(
            f'Pin it: AutoModel.from_pretrained("{repo_id}", trust_remote_code=True, revision="{result.commit.oid}")'
        )
    return 0


__all__ = [
    "EXPORT_SUBFOLDER",
    "HubPushError",
    "PushArguments",
    "PushResult",
    "UploadFile",
    "UploadPlan",
    "base_model_license",
    "code_files",
    "model_card_template_path",
    "prepare_upload",
    "push_folder_to_hub",
    "push_main",
    "push_student_to_hub",
    "push_training_output",
    "read_student_config",
    "render_model_card",
    "render_template",
    "retry_command",
]
