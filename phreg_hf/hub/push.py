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
import logging
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

from ..arg_parsing import make_parser
from ..constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE
from ..file_checks import check_inside_folder, check_markdown_safe_name, check_safetensors_file
from .dense_reports import dense_report_paths
from .model_card import (
    _check_repo_id,
    _human_size,
    card_is_generated_unedited,
    folder_run_hash,
    model_card_template_path,
    read_card_marker,
    render_model_card,
    render_template,
    with_card_marker,
)
from .student_folder import (
    CONFIG_FILE,
    DINOV2_MODEL_TYPES,
    README_FILE,
    STUDENT_BACKBONES,
    _hub_license,
    _license_error,
    _local_license,
    _read_json,
    _read_optional_json,
    _resolve_base_model,
    base_model_license,
    code_files,
    read_student_config,
)

logger = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
# Where a dry run puts the rendered card when README.md is the user's own (never replaced).
RENDERED_CARD_FILE = "README.phreg.md"
# Subfolder of the repository that holds the stock `Dinov2WithRegistersModel` export (--export_dinov2_with_registers).
EXPORT_SUBFOLDER = "dinov2_with_registers"
# Pickle-based formats can run code when loaded: never uploaded, and their presence stops a push.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Same default as transformers' `PreTrainedModel.push_to_hub` / `save_pretrained`.
DEFAULT_MAX_SHARD_SIZE = "50GB"
# A CLIP student's processor and tokenizer (its text tower and segmentation pipeline need them).
PROCESSOR_FILES = (
    PROCESSOR_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)


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
    card_path: Path | None = (
        None  # where the card was written (README.md, or README.phreg.md beside a user's own)
    )

    @property
    def commit_url(self) -> str | None:
        return None if self.commit is None else self.commit.commit_url


# ----------------------------------------------------------------------------------------------------------------
# What gets uploaded
def _weight_files(folder: Path) -> list[str]:
    if (folder / SAFETENSORS_FILE).is_file():
        return [SAFETENSORS_FILE]
    index_path = folder / SAFETENSORS_INDEX_FILE
    if index_path.is_file():
        shards = sorted(set(_read_json(index_path).get("weight_map", {}).values()))
        escaping = [shard for shard in shards if Path(shard).name != shard]
        if escaping:
            raise ValueError(
                f"{index_path} names weight files outside {folder}: {escaping}. Re-save the model with "
                "save_pretrained(folder)."
            )
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
            Also: a file to upload is a symbolic link or lies outside `folder` (nothing outside the folder the
            user named is uploaded), a preview's name would break the card's markdown, or a weight file is
            truncated or corrupt (each checked before anything is uploaded).
        FileNotFoundError: no folder, no config.json, no safetensors, missing code files, or (with
            `require_readme`) no README.md.
    """
    folder = Path(folder)
    config = read_student_config(folder)
    weight_files = _weight_files(folder)
    wanted = {
        CONFIG_FILE,
        *code_files(folder, config),
        *weight_files,
        IMAGE_PROCESSOR_NAME,
        *PROCESSOR_FILES,
        TRAINING_SETTINGS_FILE,
        METRICS_FILE,
        README_FILE,
        *(path.name for path in dense_report_paths(folder)),
    }
    files: list[UploadFile] = []
    skipped: list[tuple[str, str]] = []
    pickles: list[str] = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name == PREVIEWS_DIR:
            if path.is_symlink():
                check_inside_folder(path, folder)  # refuses the link, naming it
            for preview in sorted(path.rglob("*")):
                relative = preview.relative_to(folder).as_posix()
                if preview.suffix.lower() in PICKLE_SUFFIXES:
                    pickles.append(relative)
                elif preview.suffix.lower() == ".png" and preview.parent == path:
                    check_inside_folder(preview, folder)
                    check_markdown_safe_name(relative)
                    files.append(UploadFile(relative, preview, preview.stat().st_size))
                elif preview.is_file() or preview.is_symlink():
                    skipped.append((relative, "only previews/*.png are uploaded"))
        elif path.is_dir() and not path.is_symlink():
            if name.startswith("checkpoint"):
                skipped.append((f"{name}/", "training checkpoint, never uploaded"))
            else:
                skipped.append((f"{name}/", "folder that is not part of the model (logs, caches, ...)"))
        elif path.suffix.lower() in PICKLE_SUFFIXES:
            pickles.append(name)
        elif name in wanted:
            check_inside_folder(path, folder)
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
    for name in weight_files:
        if name.endswith(".safetensors"):
            check_safetensors_file(folder / name)
    if require_readme and not (folder / README_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {README_FILE}; render it with render_model_card first.")
    return UploadPlan(folder, sorted(files, key=lambda f: f.path_in_repo), skipped)


def _export_dinov2_with_registers(folder: Path, export_root: Path) -> list[UploadFile]:
    """Save the stock `Dinov2WithRegistersModel` export of the student in `folder` under export_root/EXPORT_SUBFOLDER."""
    from transformers import AutoModel

    target = export_root / EXPORT_SUBFOLDER
    # AutoModel maps the student's model_type (registered by `import phreg_hf`) to its class.
    AutoModel.from_pretrained(folder).to_dinov2_with_registers().save_pretrained(target)
    if (folder / IMAGE_PROCESSOR_NAME).is_file():
        shutil.copy2(folder / IMAGE_PROCESSOR_NAME, target / IMAGE_PROCESSOR_NAME)
    return [
        UploadFile(f"{EXPORT_SUBFOLDER}/{path.name}", path, path.stat().st_size)
        for path in sorted(target.iterdir())
        if path.is_file()
    ]


# ----------------------------------------------------------------------------------------------------------------
# Pushing
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


def readme_status(folder: str | Path) -> str:
    """What `folder/README.md` is, for deciding whether a push may write or upload it.

    - "absent": no README.md;
    - "rendered": a card phreg-hf rendered and nobody edited since: re-rendering it loses nothing;
    - "stale": a card (ours, edited or not, or the user's) older than the model files it sits with: the run's
      files changed after it was written, so it describes another model;
    - "user": a card written or edited by hand, current.
    """
    path = Path(folder) / README_FILE
    if not path.is_file():
        return "absent"
    marker = read_card_marker(path)
    if marker is not None:
        run_hash, edited = marker
        if run_hash != folder_run_hash(folder):
            return "stale"
        return "user" if edited else "rendered"
    run_files = [Path(folder) / name for name in (CONFIG_FILE, TRAINING_SETTINGS_FILE, SAFETENSORS_FILE)]
    newest_run_file = max((p.stat().st_mtime for p in run_files if p.is_file()), default=0.0)
    return "stale" if path.stat().st_mtime < newest_run_file else "user"


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
        keep_readme: upload the folder's existing README.md as is (e.g. after editing a dry run's card); refused
            when that card is older than the model files (see `readme_status`).

    README.md: the rendered card is written there when there is none or when it holds an earlier, unedited
    rendering; a README.md written or edited by hand is never replaced: a dry run writes the new card beside it
    (`README.phreg.md`), and a real push stops and asks for `--keep_readme` or for the file to be moved.

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
    if export_dinov2_with_registers and config["model_type"] not in DINOV2_MODEL_TYPES:
        raise ValueError(
            f"--export_dinov2_with_registers applies to DINOv2 students only; {folder} holds a "
            f"{config['model_type']!r} student. Drop the option."
        )
    settings = _read_optional_json(folder / TRAINING_SETTINGS_FILE)
    resolved_base = _resolve_base_model(base_model, settings)

    readme_path = folder / README_FILE
    readme = readme_status(folder)
    if keep_readme:
        if readme == "absent":
            raise FileNotFoundError(
                f"--keep_readme: {readme_path} does not exist. Render it first with "
                f"`phreg push {shlex.quote(str(folder))} {repo_id} --dry_run`, or drop --keep_readme."
            )
        if readme == "stale":
            raise ValueError(
                f"--keep_readme: {readme_path} describes other files than the ones in {folder} now (it was "
                "rendered, or last edited, before the model, config or run JSONs were written), so uploading it "
                "would publish a card for another model. Re-render it with "
                f"`phreg push {shlex.quote(str(folder))} {repo_id} --dry_run` (your file is kept; the new card "
                f"goes to {RENDERED_CARD_FILE} beside it if you edited it), review, then push."
            )
        card = ModelCard.load(readme_path)
        card_path = readme_path
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
        card_text = with_card_marker(str(card), folder_run_hash(folder))
        if readme == "absent" or card_is_generated_unedited(readme_path):
            readme_path.write_text(card_text, encoding="utf-8")
            card_path = readme_path
        elif dry_run:
            # Never replace a card the user wrote or edited: the new one goes beside it, for comparison.
            card_path = folder / RENDERED_CARD_FILE
            card_path.write_text(card_text, encoding="utf-8")
        else:
            raise ValueError(
                f"{readme_path} was written or edited by hand, and phreg push never replaces a user's file. "
                f"Upload it as it is with --keep_readme, or move it away to upload the rendered card (a --dry_run "
                f"writes that card to {folder / RENDERED_CARD_FILE} for comparison)."
            )
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
            return PushResult(repo_id, plan, card, card_path=card_path)

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
    return PushResult(repo_id, plan, card, commit, card_path=card_path)


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
    parser = make_parser(
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
        if result.card_path is not None and result.card_path != readme:
            print(
                f"Model card: {result.card_path} ({readme} is your own and was kept; compare them, then push with "
                "--keep_readme to upload yours, or move yours away to upload the rendered one)."
            )
        else:
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
