"""Model card and Hub push (phreg_hf.hub). The Hub cannot be reached: the network boundary, `HfApi.create_repo` /
`create_branch` / `create_commit` / `model_info`, is replaced by a recorder (`FakeHub`)."""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import re
import shutil
from pathlib import Path

import jinja2
import pytest
import torch
from conftest import IMAGE_SIZE, make_base, run_without_phreg
from hub_helpers import (
    EXPECTED_REPO_FILES,
    METRICS,
    NUM_REGISTERS,
    REPO_ID,
    TRAINING_SETTINGS,
    image_processor,
    make_student,
    save_run_folder,
    snapshot,
)
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel

import phreg_hf
from phreg_hf import cli
from phreg_hf.constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE
from phreg_hf.hub import model_card
from phreg_hf.hub import push as hub


def rendered_card(folder: Path) -> bytes:
    """What `phreg push` writes as README.md: the rendered card closed by our marker."""
    card = str(hub.render_model_card(folder, REPO_ID, license="apache-2.0"))
    return model_card.with_card_marker(card, model_card.folder_run_hash(folder)).encode()


def http_errors():
    """A connection error of the HTTP library huggingface_hub uses, and a refused upload (403)."""
    http_library = importlib.import_module(
        HfHubHTTPError.__mro__[1].__module__.split(".")[0]
    )  # httpx2 / httpx
    request = http_library.Request("POST", f"https://huggingface.co/api/models/{REPO_ID}/commit/main")
    refused = HfHubHTTPError(
        "403 Forbidden: you cannot write to this repository",
        response=http_library.Response(403, request=request),
    )
    return http_library.ConnectError("[Errno 101] Network is unreachable"), refused


def results_table(card_text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Columns and {measure: cells} of the card's results table."""
    lines = card_text.split("## Results", 1)[1].split("\n## ", 1)[0].splitlines()
    header = next(line for line in lines if line.startswith("| Measure |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")][2:]
    keys = {label.capitalize(): key for key, label in model_card.METRIC_LABELS.items()}
    rows = {}
    for line in lines:
        match = re.match(r"\| ([^|`]+?) \| (?:lower|higher|-) \|", line)
        if match:
            rows[keys[match.group(1)]] = [cell.strip() for cell in line.strip("|").split("|")][2:]
    return columns, rows


# ---------------------------------------------------------------------------------------------------------------
# Upload: one commit, the exact files, the exact bytes, loadable without phreg_hf
def test_push_is_one_commit_of_the_exact_files_and_loads_without_phreg(tmp_path, fake_hub):
    folder = tmp_path / "run"
    student = save_run_folder(folder)
    before = snapshot(folder)
    # What save_pretrained writes, written again elsewhere, to compare the uploaded bytes with.
    reference = tmp_path / "reference"
    student.save_pretrained(reference)
    image_processor().save_pretrained(reference)

    result = hub.push_folder_to_hub(folder, REPO_ID)

    assert fake_hub.calls == [
        "model_info",
        "create_repo",
        "create_commit",
    ]  # model_info: the base model's license
    assert len(fake_hub.commits) == 1
    commit = fake_hub.commits[0]
    assert commit["repo_id"] == REPO_ID and commit["revision"] is None
    assert sorted(commit["files"]) == sorted(EXPECTED_REPO_FILES)
    assert [f.path_in_repo for f in result.plan.files] == sorted(EXPECTED_REPO_FILES)
    assert result.commit_url == fake_hub_commit_url(commit)
    # Weights, config, code and processor: byte for byte what save_pretrained writes.
    for name in (
        "model.safetensors",
        "config.json",
        "configuration_phreg.py",
        "modeling_phreg.py",
        "modeling_phreg_backbone.py",
        "modeling_phreg_registers.py",
        "preprocessor_config.json",
    ):
        assert commit["files"][name] == (reference / name).read_bytes(), name
    # The run's own files, unchanged.
    for name in (TRAINING_SETTINGS_FILE, METRICS_FILE, f"{PREVIEWS_DIR}/norms.png"):
        assert hashlib.sha256(commit["files"][name]).hexdigest() == before[name], name
    # The card: what the renderer produces (license inherited from the base model's Hub card), also in the folder,
    # closed by the marker that tells our rendering from a user's card.
    card = str(hub.render_model_card(folder, REPO_ID, license="apache-2.0"))
    rendered = model_card.with_card_marker(card, model_card.folder_run_hash(folder)).encode()
    assert commit["files"]["README.md"] == rendered == (folder / "README.md").read_bytes()
    # Nothing else in the folder changed.
    assert {k: v for k, v in snapshot(folder).items() if k != "README.md"} == before
    assert not any(name.endswith((".bin", ".pkl", ".pt", ".pth", ".ckpt")) for name in commit["files"])

    # Materialize the commit as a Hub download would, and load it where phreg_hf cannot be imported.
    downloaded = tmp_path / "downloaded"
    for name, data in commit["files"].items():
        (downloaded / name).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / name).write_bytes(data)
    inputs = {"native": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE), "other": torch.randn(1, 3, 40, 72)}
    save_file(inputs, tmp_path / "inputs.safetensors")
    run_without_phreg(
        """
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel
        model = AutoModel.from_pretrained("downloaded", trust_remote_code=True, attn_implementation="eager").eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        outputs = {}
        with torch.no_grad():
            for name, x in load_file("inputs.safetensors").items():
                outputs[name] = model(x).last_hidden_state
                outputs[name + "/feature_map"] = model.get_feature_map(x).contiguous()
        save_file(outputs, "outputs.safetensors")
        """,
        cwd=str(tmp_path),
    )
    outputs = load_file(tmp_path / "outputs.safetensors")
    with torch.no_grad():
        for name, x in inputs.items():
            assert torch.equal(outputs[name], student(x).last_hidden_state), name
            assert torch.equal(outputs[name + "/feature_map"], student.get_feature_map(x)), name


def fake_hub_commit_url(commit: dict) -> str:
    oid = hashlib.sha1(repr(sorted(commit["files"])).encode()).hexdigest()
    return f"https://huggingface.co/{commit['repo_id']}/commit/{oid}"


def test_sharded_weights_upload_index_and_every_shard(tmp_path, fake_hub):
    folder = tmp_path / "run"
    save_run_folder(folder, settings=None, metrics=None, previews=False, max_shard_size="50KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()
    hub.push_folder_to_hub(folder, REPO_ID, license="mit")
    uploaded = sorted(fake_hub.commits[0]["files"])
    assert uploaded == sorted(
        [
            "README.md",
            "config.json",
            "configuration_phreg.py",
            "modeling_phreg.py",
            "modeling_phreg_backbone.py",
            "modeling_phreg_registers.py",
            "preprocessor_config.json",
            "model.safetensors.index.json",
            *shards,
        ]
    )


def test_push_student_to_hub_saves_everything_and_cleans_up(tmp_path, fake_hub):
    training_dir = tmp_path / "run"
    student = save_run_folder(training_dir)
    result = hub.push_student_to_hub(
        student, REPO_ID, image_processor=image_processor(), training_dir=training_dir
    )
    assert sorted(fake_hub.commits[0]["files"]) == sorted(EXPECTED_REPO_FILES)
    assert not result.plan.folder.exists()  # the temporary folder is gone after a successful push
    with pytest.raises(ValueError, match="expects a PH-Reg student"):
        hub.push_student_to_hub(make_base("dinov2"), REPO_ID)


def test_push_student_to_hub_failure_keeps_the_saved_folder(tmp_path, fake_hub):
    fake_hub.fail_commit = http_errors()[0]
    with pytest.raises(hub.HubPushError) as error:
        hub.push_student_to_hub(make_student(), REPO_ID, image_processor=image_processor(), license="mit")
    kept = Path(re.search(r"phreg push (\S+) " + re.escape(REPO_ID), str(error.value)).group(1))
    try:
        assert (kept / "model.safetensors").is_file() and (kept / "README.md").is_file()
    finally:
        shutil.rmtree(kept)


def test_export_dinov2_with_registers_goes_to_a_subfolder_that_loads_without_remote_code(tmp_path, fake_hub):
    folder = tmp_path / "run"
    student = save_run_folder(folder, training_state=False)
    before = snapshot(folder)
    hub.push_folder_to_hub(folder, REPO_ID, license="apache-2.0", export_dinov2_with_registers=True)
    files = fake_hub.commits[0]["files"]
    exported = sorted(name for name in files if name.startswith(hub.EXPORT_SUBFOLDER + "/"))
    assert exported == [
        f"{hub.EXPORT_SUBFOLDER}/{n}"
        for n in ("config.json", "model.safetensors", "preprocessor_config.json")
    ]
    assert {k: v for k, v in snapshot(folder).items() if k != "README.md"} == before  # exported elsewhere
    card = ModelCard.load(folder / "README.md")
    assert f'subfolder="{hub.EXPORT_SUBFOLDER}"' in card.text
    downloaded = tmp_path / "downloaded"
    for name in exported:
        (downloaded / name).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / name).write_bytes(files[name])
    stock = AutoModel.from_pretrained(downloaded, subfolder=hub.EXPORT_SUBFOLDER).eval()
    assert type(stock).__name__ == "Dinov2WithRegistersModel"
    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(
            stock(x).last_hidden_state, student(x).last_hidden_state, atol=1e-5, rtol=1e-5
        )

    vit_folder = tmp_path / "vit"
    save_run_folder(vit_folder, make_student("vit"), training_state=False)
    with pytest.raises(ValueError, match="DINOv2 students only"):
        hub.push_folder_to_hub(vit_folder, REPO_ID, license="mit", export_dinov2_with_registers=True)


# ---------------------------------------------------------------------------------------------------------------
# The card
def test_card_shows_the_previews_only_when_there_are_some(tmp_path):
    with_previews, without = tmp_path / "with", tmp_path / "without"
    save_run_folder(with_previews)
    Image.new("RGB", (8, 8)).save(with_previews / PREVIEWS_DIR / "another.png")
    save_run_folder(without, previews=False)
    text = hub.render_model_card(with_previews, REPO_ID, license="apache-2.0").text
    assert "### Previews" in text
    assert f"![{PREVIEWS_DIR}/another.png]({PREVIEWS_DIR}/another.png)" in text
    assert f"![{PREVIEWS_DIR}/norms.png]({PREVIEWS_DIR}/norms.png)" in text
    assert "Previews" not in hub.render_model_card(without, REPO_ID, license="apache-2.0").text


def test_card_metadata_and_numbers_come_from_the_folder(tmp_path):
    folder = tmp_path / "run"
    save_run_folder(folder)
    hub.render_model_card(folder, REPO_ID, license="apache-2.0").save(folder / "README.md")

    card = ModelCard.load(folder / "README.md")  # raises on invalid YAML metadata
    assert isinstance(card.data, ModelCardData)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0"
    assert data["base_model"] == TRAINING_SETTINGS["base_model"]
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["datasets"] == [TRAINING_SETTINGS["dataset"]["name"]]
    assert {"phreg", "registers", "vision", "dinov2"} <= set(data["tags"])
    assert ModelCardData(**data).to_dict() == data  # round-trips through the metadata class

    columns, rows = results_table(card.text)
    assert columns == ["Base model (before)", "Denoised teacher", "PH-Reg student (after)"]
    assert set(rows) == set(METRICS["rows"]["base"])
    for measure, cells in rows.items():
        for cell, model in zip(cells, ("base", "teacher", "student"), strict=True):
            value = METRICS["rows"][model][measure]
            assert cell == f"{value:.4g}", (measure, model)
            assert math.isclose(float(cell), value, rel_tol=5e-4), (measure, model)
    assert "| Outlier ratio | lower |" in card.text and "| Cosine to denoised teacher | higher |" in card.text
    # Every measure shown is defined under the table.
    for measure in rows:
        assert f"(`{measure}`): {model_card.METRIC_DESCRIPTIONS[measure]}" in card.text, measure

    # The run's facts, formatted from the JSON.
    text = card.text
    assert f"**{NUM_REGISTERS} register tokens**" in text
    assert f"for {TRAINING_SETTINGS['global_steps']} optimizer steps" in text
    assert "at 518 x 518 px" in text and "K = 10 views" in text
    assert f"on {TRAINING_SETTINGS['hardware']} in 47 min 23 s" in text
    assert "| Batch size | 16 (8 per device x 2 accumulation steps x 1 processes) |" in text
    assert "| Learning rate | 0.0001 to 5e-06 |" in text
    assert "| Weight decay" not in text and "weight_decay" not in text  # part of the optimizer row, not raw
    assert "`" not in "".join(
        re.findall(r"^\| ([^|]+) \|", text.split("| Setting |")[1].split("\n\n")[0], re.M)
    )
    assert "/runs/dinov2-phreg" not in text  # the raw command line stays in the JSON
    assert f"{METRICS['num_images']} held-out images" in text
    # The remote-code section lists exactly the auto_map files, with their hashes.
    for name in ("configuration_phreg.py", "modeling_phreg.py", "modeling_phreg_backbone.py"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"| `{name}` | `{digest}` |" in text
    assert f'AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True)' in text
    assert f'pipeline("image-feature-extraction", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "model.get_feature_map(pixel_values)" in text and "revision=" in text
    assert (
        "arXiv:2505.21501" in text
        and "Chen, Yinjie and Yan, Zipeng and Zhou, Chong and Dai, Bo and Luo, Andrew F." in text
    )
    assert "## Limitations" in text


VARIANTS = {
    "full": dict(),
    "no_json": dict(settings=None, metrics=None),
    "no_metrics": dict(metrics=None),
    "no_processor": dict(processor=False),
    "vit": dict(
        backbone="vit",
        settings={
            **TRAINING_SETTINGS,
            "model_type": "phreg_vit",
            "base_model": "google/vit-base-patch16-224",
        },
    ),
    "clip": dict(backbone="clip_vision_model", settings=None),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_placeholder_is_left_unrendered(tmp_path, variant):
    options = dict(VARIANTS[variant])
    backbone = options.pop("backbone", "dinov2")
    folder = tmp_path / "run"
    save_run_folder(folder, make_student(backbone), **options)
    text = str(hub.render_model_card(folder, REPO_ID, license="mit"))
    for marker in ("{{", "}}", "{%", "%}", "{#", "#}"):
        assert marker not in text, marker
    for word in (r"\bNone\b", r"\bnan\b", r"\bundefined\b", r"\bUndefined\b"):
        assert not re.search(word, text), word
    card = ModelCard(text)
    assert card.data.license == "mit"
    backbone_tag = {"dinov2": "dinov2", "vit": "vit", "clip_vision_model": "clip"}[backbone]
    assert backbone_tag in card.data.tags
    assert ("### Without remote code" in text) == (backbone == "dinov2")


def test_a_variable_the_renderer_does_not_provide_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    broken = tmp_path / "template.md"
    broken.write_text(
        hub.model_card_template_path().read_text() + "\nTrained on {{ training.gpu_count }} GPUs.\n"
    )
    monkeypatch.setattr(model_card, "model_card_template_path", lambda: broken)
    with pytest.raises(jinja2.UndefinedError, match="gpu_count"):
        hub.render_model_card(folder, REPO_ID, license="mit")
    with pytest.raises(jinja2.UndefinedError, match="not_given"):
        hub.render_template(
            _write(tmp_path / "t.md", "---\n{{ card_data }}\n---\n{{ not_given }}"), ModelCardData()
        )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_card_without_measurements_says_so_and_invents_nothing(tmp_path):
    folder = tmp_path / "run"
    save_run_folder(folder, settings=None, metrics=None, training_state=False)
    text = hub.render_model_card(folder, REPO_ID, license="mit").text
    assert "No measurements were made for this model" in text
    assert "| Measure |" not in text and "outlier_ratio" not in text
    assert "No training settings were saved with this model" in text
    assert f"The model has {NUM_REGISTERS} register" in text
    results = text.split("## Results", 1)[1].split("## Limitations", 1)[0]
    assert not re.search(r"\d\.\d", results)  # no numbers in the results section


def test_unknown_license_is_an_error_naming_license(tmp_path, fake_hub, capsys):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    with pytest.raises(ValueError, match="--license"):
        hub.render_model_card(folder, REPO_ID)
    assert cli.main(["push", str(folder), REPO_ID, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--license" in err and f"phreg push {folder} {REPO_ID} --license LICENSE" in err
    assert not (folder / "README.md").exists() and fake_hub.calls == []
    # Outside a dry run the base model's Hub card is asked once; with no license there either, same error.
    fake_hub.license = None
    with pytest.raises(ValueError, match="--license"):
        hub.push_folder_to_hub(folder, REPO_ID)
    assert fake_hub.calls == ["model_info"]


def test_license_error_names_the_training_record_only_when_there_is_one(tmp_path):
    folder = tmp_path / "bare"
    make_student().save_pretrained(folder)
    with pytest.raises(ValueError, match="--license") as error:
        hub.render_model_card(folder, REPO_ID)
    message = str(error.value)
    assert f"has no {TRAINING_SETTINGS_FILE}" in message
    assert f"not recorded in {folder / TRAINING_SETTINGS_FILE}" not in message


def test_an_untrained_student_is_called_untrained_and_warned_about(tmp_path, fake_hub, caplog):
    folder = tmp_path / "bare"
    make_student().save_pretrained(folder)  # student_from_base(...).save_pretrained: nothing trained
    with caplog.at_level(logging.WARNING, logger="phreg_hf.hub.model_card"):
        result = hub.push_folder_to_hub(folder, REPO_ID, license="mit")
    assert "nothing records that the model was trained" in caplog.text
    text = result.card.text
    assert "**Not trained, as far as this repository shows.**" in text
    assert "were fit to the training images" not in text and "added\nafter training by" not in text
    assert "this one has not been trained" in text and "its registers were not fit to any images" in text

    # A training record with no optimizer step: untrained, said plainly.
    run = tmp_path / "run"
    save_run_folder(run, settings={**TRAINING_SETTINGS, "global_steps": 0}, training_state=False)
    text = hub.render_model_card(run, REPO_ID, license="mit").text
    assert "**Untrained.**" in text and "were fit to the training images" not in text
    # A trained run gets neither notice.
    save_run_folder(tmp_path / "trained", training_state=False)
    text = hub.render_model_card(tmp_path / "trained", REPO_ID, license="mit").text
    assert "Untrained" not in text and "Not trained" not in text
    assert "were fit to the training images" in text


def test_a_demo_card_says_demo_model_not_for_use_and_shows_readable_settings(tmp_path):
    folder = tmp_path / "demo"
    settings = {
        **TRAINING_SETTINGS,
        "base_model": "synthetic planted-artifact dinov2 (random init, not pretrained)",
        "base_model_synthetic": {"description": "random-init backbone with planted artifacts", "seed": 0},
        "license": "apache-2.0",
        "fill_value": 1.0,
        "flip_prob": 0.5,
        "global_batch_size": 16,
        "optimizer": {
            "name": "AdamW",
            "betas": [0.9, 0.999],
            "max_grad_norm": 0.0,
            "schedule": "exponential decay",
        },
        "teacher_images": 10,
        "teacher_cache": {"dir": "phreg-demo/teacher_cache", "dtype": "float16", "hits": 90, "misses": 10},
        "a_future_setting": 3,
    }
    save_run_folder(folder, settings=settings, training_state=False)
    card = hub.render_model_card(folder, REPO_ID)
    text = card.text
    title, after_title = text.split(f"# {REPO_ID.split('/')[1]}\n", 1)
    assert after_title.lstrip().startswith("> **Demo model, not for use.**")
    assert "(not a Hub model id)" not in text and card.data.base_model is None
    table = text.split("| Setting | Value |", 1)[1].split("\n\n", 1)[0]
    for raw in ("fill_value", "license", "base_model_synthetic", "global_batch_size", "teacher_cache"):
        assert raw not in table, raw
    assert "`" not in "".join(re.findall(r"^\| ([^|]+) \|", table, re.M))  # labels are words, not JSON keys
    assert "phreg-demo/teacher_cache" not in text  # no local path
    assert table.count("Batch size") == 1 and "| 16 (8 per device" in table
    assert "| Fill of shifted-in pixels | 1 (raw pixel value" in table
    assert "| Teacher passes | 10 images (targets cached in float16: 90 reuses, 10 computed" in table
    assert "| A future setting | 3 |" in table  # unknown settings still show, under a readable label


def test_every_measure_has_a_label_and_a_definition():
    from phreg_hf.evaluate.metrics import METRIC_NAMES

    assert set(METRIC_NAMES) <= set(model_card.METRIC_DESCRIPTIONS) & set(model_card.METRIC_LABELS)


def test_license_is_inherited_from_settings_or_a_local_base_card(tmp_path):
    folder = tmp_path / "run"
    save_run_folder(folder, settings={**TRAINING_SETTINGS, "license": "mit"}, training_state=False)
    assert hub.render_model_card(folder, REPO_ID).data.license == "mit"
    assert hub.render_model_card(folder, REPO_ID, license="apache-2.0").data.license == "apache-2.0"

    base = tmp_path / "base"
    make_base("dinov2").save_pretrained(base)
    _write(
        base / "README.md",
        "---\nlicense: other\nlicense_name: base-license\nlicense_link: LICENSE\n---\n# base\n",
    )
    local = tmp_path / "local"
    save_run_folder(local, settings={**TRAINING_SETTINGS, "base_model": str(base)}, training_state=False)
    card = hub.render_model_card(local, REPO_ID)
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other",
        "base-license",
        "LICENSE",
    )
    assert card.data.base_model is None  # a local path is no Hub id for the metadata
    assert "(not a Hub model id)" in card.text


# ---------------------------------------------------------------------------------------------------------------
# Failures
@pytest.mark.parametrize("failure", ["connection_error", "refused_403", "no_token"])
def test_network_failure_leaves_the_folder_intact_and_names_the_retry(tmp_path, fake_hub, failure, capsys):
    folder = tmp_path / "run"
    save_run_folder(folder)
    before = snapshot(folder)
    connection_error, refused = http_errors()
    if failure == "no_token":
        fake_hub.fail_repo = LocalTokenNotFoundError("Token is required but no token found.")
    else:
        fake_hub.fail_commit = connection_error if failure == "connection_error" else refused

    with pytest.raises(hub.HubPushError) as error:
        hub.push_folder_to_hub(folder, REPO_ID, license="apache-2.0", private=True)
    message = str(error.value)
    assert f"phreg push {folder} {REPO_ID} --private --license apache-2.0" in message
    assert "complete and unchanged" in message
    assert isinstance(error.value.__cause__, (OSError, type(connection_error)))
    # Decision: README.md (the rendered card) is written before the upload and stays, for review; nothing else changes.
    after = snapshot(folder)
    assert after.pop("README.md") == hashlib.sha256(rendered_card(folder)).hexdigest()
    assert after == before
    assert fake_hub.commits == []

    # The CLI: exit code 1 and the same retry line; the trainer's hook: None and an error log.
    assert cli.main(["push", str(folder), REPO_ID, "--license", "apache-2.0"]) == 1
    assert f"phreg push {folder} {REPO_ID} --license apache-2.0" in capsys.readouterr().err
    after = snapshot(folder)
    after.pop("README.md")
    assert after == before


def test_push_training_output_logs_the_retry_and_never_raises(tmp_path, fake_hub, caplog):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    fake_hub.fail_commit = http_errors()[1]
    with caplog.at_level(logging.ERROR, logger="phreg_hf.hub"):
        assert hub.push_training_output(folder, REPO_ID, private=False) is None
    assert f"phreg push {folder} {REPO_ID}" in caplog.text
    # An error before any upload (unknown license) is logged the same way.
    caplog.clear()
    fake_hub.license = None
    with caplog.at_level(logging.ERROR, logger="phreg_hf.hub"):
        assert hub.push_training_output(folder, REPO_ID) is None
    assert "--license" in caplog.text and f"phreg push {folder} {REPO_ID}" in caplog.text
    fake_hub.fail_commit, fake_hub.license = None, "apache-2.0"
    url = hub.push_training_output(folder, REPO_ID)
    assert url is not None and url.startswith(f"https://huggingface.co/{REPO_ID}/commit/")


@pytest.mark.parametrize(
    "pickle_path", ["pytorch_model.bin", "training_args.bin", f"{PREVIEWS_DIR}/state.pkl"]
)
def test_pickle_files_are_refused(tmp_path, fake_hub, pickle_path):
    folder = tmp_path / "run"
    save_run_folder(folder)
    (folder / pickle_path).write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match=re.escape(Path(pickle_path).name)) as error:
        hub.prepare_upload(folder)
    assert "pickle" in str(error.value)
    with pytest.raises(ValueError, match="pickle"):
        hub.push_folder_to_hub(folder, REPO_ID, license="mit")
    assert fake_hub.calls == [] and not (folder / "README.md").exists()
    assert cli.main(["push", str(folder), REPO_ID, "--license", "mit", "--dry-run"]) == 2


def test_checkpoints_logs_and_stray_files_are_never_uploaded(tmp_path):
    folder = tmp_path / "run"
    save_run_folder(folder)
    (folder / "notes.txt").write_text("mine")
    (folder / "model.fp16.safetensors").write_bytes(b"x")
    (folder / "README.md").write_text("draft")
    plan = hub.prepare_upload(folder)
    assert [f.path_in_repo for f in plan.files] == sorted(EXPECTED_REPO_FILES)
    skipped = dict(plan.skipped)
    assert {"checkpoint-500/", "runs/", "train.log", "notes.txt", "model.fp16.safetensors"} <= set(skipped)


# ---------------------------------------------------------------------------------------------------------------
# `phreg push`
def test_dry_run_renders_the_card_and_lists_files_without_network(tmp_path, fake_hub, capsys):
    folder = tmp_path / "run"
    save_run_folder(folder)
    assert cli.main(["push", str(folder), REPO_ID, "--dry-run", "--license", "apache-2.0"]) == 0
    out = capsys.readouterr().out
    assert fake_hub.calls == []
    assert (folder / "README.md").read_bytes() == rendered_card(folder)
    listed = re.findall(r"^\s+\d+(?:\.\d)? (?:B|kB|MB|GB)\s+(\S+)$", out, flags=re.MULTILINE)
    assert listed == sorted(EXPECTED_REPO_FILES)
    assert "checkpoint-500/" in out and "nothing was uploaded" in out
    assert f"phreg push {folder} {REPO_ID} --license apache-2.0" in out

    # Review, edit, then push the edited card as it is.
    (folder / "README.md").write_text((folder / "README.md").read_text() + "\nReviewed by Alice.\n")
    argv = [
        "push",
        str(folder),
        REPO_ID,
        "--keep_readme",
        "--commit-message",
        "First upload",
        "--revision",
        "dev",
    ]
    assert cli.main(argv) == 0
    assert fake_hub.calls == ["create_repo", "create_branch", "create_commit"]
    commit = fake_hub.commits[0]
    assert commit["files"]["README.md"].endswith(b"Reviewed by Alice.\n")
    assert commit["commit_message"] == "First upload" and commit["revision"] == "dev"
    assert "Pin it:" in capsys.readouterr().out


def test_dry_run_works_on_a_bare_save_pretrained_folder(tmp_path, fake_hub, capsys):
    folder = tmp_path / "bare"
    make_student("clip_vision_model").save_pretrained(folder)
    assert cli.main(["push", str(folder), REPO_ID, "--dry_run", "--license", "mit"]) == 0
    assert fake_hub.calls == []
    text = (folder / "README.md").read_text()
    assert "No measurements were made" in text and "no `preprocessor_config.json`" in text


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing", "does not exist"),
        ("no_config", "has no config.json"),
        ("stock_model", "not a PH-Reg student"),
        ("no_namespace", "needs its namespace"),
        ("no_weights", "no safetensors weights"),
    ],
)
def test_cli_errors_name_the_fix(tmp_path, fake_hub, capsys, case, fragment):
    folder = tmp_path / "run"
    repo_id = REPO_ID
    if case == "no_config":
        folder.mkdir()
    elif case == "stock_model":
        make_base("dinov2").save_pretrained(folder)
    elif case == "no_namespace":
        save_run_folder(folder, training_state=False)
        repo_id = "dinov2-phreg-tiny"
    elif case == "no_weights":
        save_run_folder(folder, training_state=False)
        (folder / "model.safetensors").unlink()
    assert cli.main(["push", str(folder), repo_id, "--license", "mit"]) == 2
    assert fragment in capsys.readouterr().err
    assert fake_hub.calls == []


def test_cli_usage_errors(capsys):
    assert hub.push_main([]) == 2
    assert "output_dir" in capsys.readouterr().err
    assert hub.push_main(["--help"]) == 0
    assert "--dry_run" in capsys.readouterr().out


def test_template_ships_inside_the_package():
    # phreg_hf/model_cards links to the top-level model_cards/, so package-data puts the template in the wheel.
    packaged = Path(phreg_hf.__file__).parent / "model_cards" / model_card.TEMPLATE_NAME
    assert packaged.is_file()
    assert hub.model_card_template_path().read_bytes() == packaged.read_bytes()
    top_level = Path(phreg_hf.__file__).resolve().parent.parent / "model_cards" / model_card.TEMPLATE_NAME
    if top_level.is_file():  # a source checkout
        assert top_level.read_bytes() == packaged.read_bytes()


def test_settings_of_another_model_are_refused(tmp_path):
    folder = tmp_path / "run"
    save_run_folder(folder, settings={**TRAINING_SETTINGS, "num_register_tokens": 16}, training_state=False)
    with pytest.raises(ValueError, match="belong to another model"):
        hub.render_model_card(folder, REPO_ID, license="mit")
