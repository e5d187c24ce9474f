"""The distillation trainer: arguments, end to end on planted artifacts, resume, data errors, frozen parts, NaN.

Every run uses a tiny synthetic backbone (random init, artifacts planted by `synthetic.py`) and a handful of
small natural images from scikit-image, so each training run takes seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FakeHub, make_base
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from trainer_helpers import TINY_PLANTED, Crash, make_args, run, student_state, tiny_planted
from transformers import AutoImageProcessor, AutoModel, HfArgumentParser

from phreg_hf import TRAINABLE_PARTS, student_from_base
from phreg_hf.constants import METRICS_FILE, PREVIEWS_DIR, TRAINING_SETTINGS_FILE
from phreg_hf.distill.trainer import (
    DistillArguments,
    DistillTrainer,
    ExponentialDecaySchedule,
    build_demo_image_processor,
    distillation_loss,
    list_checkpoints,
)

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_every_option():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "distill.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for option in dataclasses.fields(DistillArguments):
        assert f"--{option.name}" in result.stdout, option.name
        assert option.metadata.get("help"), f"{option.name} has no help string"
    for flag in ("--no_train_registers", "--no_train_last_block"):
        assert flag in result.stdout
    assert "(default: 16)" in result.stdout  # defaults are shown
    help_text = " ".join(result.stdout.split())
    # Each --no_X switch says what it does (not X's own help), and a default is stated once.
    assert (
        "--no-train-registers Turn off --train_registers (on by default: train the register tokens)."
        in help_text
    )
    assert "Train the register tokens. (default: True) --no_train_registers" in help_text
    assert "(default: None)" not in help_text.split("--resolution RESOLUTION")[1].split("--dataloader")[0]
    assert "demo's synthetic model trains at its own image_size" in help_text
    # The settings per backbone, each with where it comes from; DINOv3's switch for a part it lacks.
    assert "DINOv2, with or without registers: 518; 8; 1e-4 -> 5e-6 (PH-Reg reference code)" in help_text
    assert "DINOv3 ViT: 512" in help_text and "SigLIP and SigLIP 2 (fixed resolution)" in help_text
    assert help_text.count("our choice") >= 4
    assert "--no_train_position_embeddings" in help_text and "DINOv3 has none" in help_text
    assert "Without --teacher (the offline demo on a synthetic model) these defaults change" in help_text


def test_reference_defaults():
    (args,) = HfArgumentParser(DistillArguments).parse_args_into_dataclasses(
        ["--teacher", "facebook/dinov2-base", "--train_dir", str(REPO), "--output_dir", "out"]
    )
    assert (args.num_register_tokens, args.num_views, args.shift_frac) == (16, 10, 0.15)
    args.resolve_defaults(clip_dense=False)  # the trainer does this once it knows the model
    assert (args.learning_rate, args.final_learning_rate, args.weight_decay) == (1e-4, 5e-6, 1e-2)
    assert (args.per_device_train_batch_size, args.mse_scale, args.mixed_precision) == (8, 1.0, "auto")
    assert args.enabled_parts() == list(TRAINABLE_PARTS)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset_name="user/images"), "either --train_dir .* or --dataset_name .*, not both"),
        (dict(train_dir=None, teacher="facebook/dinov2-base"), "pass --train_dir FOLDER or --dataset_name"),
        (dict(num_views=0), "--num_views must be >= 1"),
        (dict(shift_frac=0.6), r"--shift_frac must be in \[0, 0.5\)"),
        (dict(train_dir=None, dataset_name="user/images", streaming=True, max_steps=-1), "pass --max_steps"),
        (dict(final_learning_rate=1e-2), "final rate <= the initial one"),
        (
            dict(
                train_registers=False,
                train_position_embeddings=False,
                train_patch_embeddings=False,
                train_last_block=False,
            ),
            "nothing would train",
        ),
        (
            dict(
                num_register_tokens=0,
                train_position_embeddings=False,
                train_patch_embeddings=False,
                train_last_block=False,
            ),
            "nothing would train",
        ),
        (dict(per_device_train_batch_size=0), "per_device_train_batch_size must be >= 1"),
        (dict(output_dir=None, teacher="facebook/dinov2-base"), "Pass --output_dir"),
    ],
)
def test_invalid_arguments_name_the_fix(tmp_path, sample_images, overrides, message):
    train_dir = overrides.pop("train_dir", sample_images[0])
    output_dir = overrides.pop("output_dir", tmp_path)
    with pytest.raises(ValueError, match=message):
        make_args(output_dir, train_dir, **overrides)


def test_missing_train_dir_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        make_args(tmp_path, tmp_path / "nowhere")


def test_resolution_not_a_multiple_of_the_patch_size_names_valid_sizes(tmp_path, sample_images):
    with pytest.raises(ValueError, match="multiple of the patch size 8 .* --resolution 56 or 64"):
        DistillTrainer(make_args(tmp_path, sample_images[0], resolution=60), base_model=tiny_planted())


def test_a_used_output_dir_needs_resume_or_overwrite(tmp_path, sample_images):
    run(tmp_path, sample_images[0], max_steps=1)
    with pytest.raises(ValueError, match="--resume_from_checkpoint latest .* --overwrite_output_dir"):
        DistillTrainer(make_args(tmp_path, sample_images[0]), base_model=tiny_planted())


# ---------------------------------------------------------------------------------------------------------------
# Loss and schedule
def test_loss_is_one_minus_cosine_plus_scaled_mse():
    targets = torch.randn(2, 9, 16)
    loss, cosine, mse = distillation_loss(targets.clone(), targets, mse_scale=1.0)
    torch.testing.assert_close((loss, cosine, mse), (torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0.0)))
    student = torch.randn(2, 9, 16)
    loss, cosine, mse = distillation_loss(student, targets, mse_scale=0.5)
    expected_cosine = torch.nn.functional.cosine_similarity(student, targets, dim=-1).mean()
    torch.testing.assert_close(loss, 1 - expected_cosine + 0.5 * ((student - targets) ** 2).mean())


def test_learning_rate_decays_per_epoch_from_initial_to_final():
    schedule = ExponentialDecaySchedule(1e-4, 5e-6, total_steps=40, steps_per_epoch=10)
    assert schedule.per_epoch and schedule.num_epochs == 4
    factors = [schedule(step) for step in range(40)]
    assert factors[0] == factors[9] == 1.0  # constant within an epoch, the given rate first
    assert factors[10] == pytest.approx((5e-6 / 1e-4) ** (1 / 3))
    assert factors[39] == pytest.approx(5e-6 / 1e-4)  # the last epoch trains at the final rate
    # One epoch (or an unknown epoch length): the same curve per step, still ending at the final rate.
    schedule = ExponentialDecaySchedule(1e-4, 5e-6, total_steps=5, steps_per_epoch=100)
    assert not schedule.per_epoch
    assert [round(schedule(s), 6) for s in (0, 4)] == [1.0, round(5e-6 / 1e-4, 6)]


# ---------------------------------------------------------------------------------------------------------------
# End to end
@pytest.mark.slow
def test_planted_artifacts_are_distilled_away_on_held_out_images(tmp_path, sample_images):
    train, heldout = sample_images
    trainer, result = run(
        tmp_path / "out",
        train,
        num_views=10,
        max_steps=240,
        learning_rate=1e-2,
        final_learning_rate=1e-3,
        teacher_cache=str(tmp_path / "cache"),
        eval_images=str(heldout),
        report_to="tensorboard",
        logging_steps=20,
    )
    rows = result["metrics"]["rows"]
    base, teacher, student = rows["base"], rows["teacher"], rows["student"]
    # The raw model shows the planted artifacts; the denoised teacher and the student far less.
    assert base["position_locked_energy"] > 3 * student["position_locked_energy"], rows
    assert base["outlier_ratio"] > 3 * max(student["outlier_ratio"], 1e-3), rows
    assert student["teacher_agreement"] > base["teacher_agreement"], rows
    assert teacher["position_locked_energy"] < base["position_locked_energy"]
    assert "held-out" in result["metrics"]["images"]

    out = tmp_path / "out"
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        METRICS_FILE,
        TRAINING_SETTINGS_FILE,
    ):
        assert (out / name).exists(), name
    assert not list(out.glob(".tmp*")) and not list(out.glob(".*.tmp"))
    assert list((out / "runs").rglob("events.out.tfevents*")), "tensorboard logs"
    settings = json.loads((out / TRAINING_SETTINGS_FILE).read_text())
    assert settings["global_steps"] == 240 and settings["num_processes"] == 1
    assert settings["num_views"] == 10 and settings["trainable_parts"] == list(TRAINABLE_PARTS)
    assert settings["dataset"]["num_images"] == len(list(train.iterdir()))
    assert settings["skipped_images"] == 0 and settings["skipped_steps"] == 0
    assert settings["base_model_synthetic"]["artifact_positions"]
    for key in ("hardware", "train_runtime_s", "versions", "args", "mixed_precision", "epochs"):
        assert key in settings

    # The saved student reloads (with phreg_hf installed) and computes what the trained one did.
    reloaded = AutoModel.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.crop_size["height"] == trainer.resolution
    pixel_values = processor(images=Image.open(next(heldout.iterdir())), return_tensors="pt")["pixel_values"]
    student_model = trainer.accelerator.unwrap_model(trainer.student).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.get_patch_tokens(pixel_values), student_model.get_patch_tokens(pixel_values)
        )


def test_local_teacher_folder(tmp_path, sample_images):
    """--teacher with a local folder: loads the stock model and its own image processor."""
    base = make_base("vit")
    base.save_pretrained(tmp_path / "base")
    processor = build_demo_image_processor(56)
    processor.image_mean = [0.5, 0.5, 0.5]
    processor.save_pretrained(tmp_path / "base")
    args = make_args(tmp_path / "out", sample_images[0], teacher=str(tmp_path / "base"), max_steps=2)
    trainer = DistillTrainer(args)
    assert trainer.resolution == 56 and trainer.image_mean == [0.5, 0.5, 0.5]
    result = trainer.train()
    assert result["settings"]["base_model"] == str(tmp_path / "base")
    assert result["settings"]["model_type"] == "phreg_vit" and result["settings"]["base_model_type"] == "vit"
    assert "not held out" in result["metrics"]["images"]


def test_full_clip_checkpoint_as_teacher_trains_its_vision_tower(tmp_path, sample_images):
    """--teacher with a whole CLIP checkpoint and --clip_dense_mode tokens: only CLIPVisionModel is loaded."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    vision = dict(TINY_PLANTED, intermediate_size=64)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text)).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(
        tmp_path / "clip"
    )
    args = make_args(
        tmp_path / "out",
        sample_images[0],
        teacher=str(tmp_path / "clip"),
        max_steps=2,
        resolution=56,
        clip_dense_mode="tokens",
    )
    result = DistillTrainer(args).train()
    assert result["settings"]["model_type"] == "phreg_clip_vision_model"
    reloaded = AutoModel.from_pretrained(tmp_path / "out")
    assert type(reloaded).__name__ == "PhregCLIPVisionModel"
    assert not any("text" in name for name in load_file(tmp_path / "out" / "model.safetensors"))


def test_streamed_dataset_with_a_teacher_cache(tmp_path, sample_images):
    """--dataset_name (the real `datasets.load_dataset`, on a local parquet dataset) --streaming --teacher_cache."""
    import datasets

    paths = sorted(sample_images[0].iterdir())
    table = datasets.Dataset.from_dict({"photo": [str(p) for p in paths]}).cast_column(
        "photo", datasets.Image()
    )
    (tmp_path / "hub_like").mkdir()
    table.to_parquet(str(tmp_path / "hub_like" / "train.parquet"))
    settings = dict(
        dataset_name=str(tmp_path / "hub_like"),
        image_column="photo",
        streaming=True,
        teacher_cache=str(tmp_path / "cache"),
        per_device_train_batch_size=5,
        max_steps=4,  # two passes over the 10 images
    )
    trainer, result = run(tmp_path / "out", None, **settings)
    settings_json = result["settings"]
    assert settings_json["global_steps"] == 4 and settings_json["images_seen"] == 20
    assert settings_json["dataset"]["streaming"] and settings_json["dataset"]["num_images"] is None
    # The second pass read the targets back: the teacher ran once per image.
    assert settings_json["teacher_images"] == len(paths)
    assert (trainer.teacher_cache.hits, trainer.teacher_cache.misses) == (len(paths), len(paths))


# ---------------------------------------------------------------------------------------------------------------
# Resume
@pytest.mark.parametrize("teacher_cache", [False, True])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, sample_images, teacher_cache):
    settings = dict(
        max_steps=7,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,  # 4 images a step: several epochs, resumed mid-epoch
        checkpointing_steps=3,
        logging_steps=2,
    )
    if teacher_cache:
        settings["teacher_cache"] = str(tmp_path / "cache")
    uninterrupted, _ = run(tmp_path / "a", sample_images[0], **settings)
    expected = student_state(uninterrupted)

    crashed = DistillTrainer(
        make_args(tmp_path / "b", sample_images[0], **settings), base_model=tiny_planted()
    )
    original_step = crashed._micro_step
    calls = []

    def crash_at_step_5(batch):
        calls.append(1)
        if crashed.state.global_step == 5:
            raise Crash()
        return original_step(batch)

    crashed._micro_step = crash_at_step_5
    with pytest.raises(Crash):
        crashed.train()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint-3"]
    assert not (tmp_path / "b" / "model.safetensors").exists()

    resumed, result = run(tmp_path / "b", sample_images[0], resume_from_checkpoint="latest", **settings)
    assert result["settings"]["global_steps"] == 7
    actual = student_state(resumed)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(
        not torch.equal(expected[k], v) for k, v in student_from_base(tiny_planted(), 4).state_dict().items()
    )


def test_gradient_accumulation_matches_one_big_batch(tmp_path, sample_images):
    """Per-image seeds (crop, views) and a seeded order: 2 x 2 accumulated images = one batch of 4."""
    big, _ = run(tmp_path / "big", sample_images[0], per_device_train_batch_size=4, max_steps=2)
    accumulated, _ = run(
        tmp_path / "acc",
        sample_images[0],
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=2,
    )
    expected, actual = student_state(big), student_state(accumulated)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Data problems
def test_corrupt_and_unusual_images_are_converted_or_skipped_and_counted(tmp_path, sample_images, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    photos = sorted(sample_images[0].iterdir())[:4]
    rgb = [Image.open(p).convert("RGB") for p in photos]
    rgb[0].convert("L").save(folder / "grey.png")
    rgb[1].convert("RGBA").save(folder / "rgba.png")
    rgb[2].convert("P").save(folder / "palette.png")
    rgb[3].convert("CMYK").save(folder / "cmyk.jpg")
    (folder / "not_an_image.png").write_bytes(b"this is not a PNG file")
    truncated = folder / "truncated.jpg"
    rgb[0].save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    _, result = run(tmp_path / "out", folder, per_device_train_batch_size=3, max_steps=4)
    settings = result["settings"]
    assert settings["global_steps"] == 4 and settings["skipped_steps"] == 0
    epochs = 2  # 6 files, 3 a step, 4 steps
    # Each unreadable file is counted, named and warned about once, however many epochs met it.
    assert settings["skipped_images"] == 2
    assert [Path(r.split(":")[0]).name for r in settings["unreadable_images"]] == [
        "not_an_image.png",
        "truncated.jpg",
    ]
    warnings = [r.getMessage() for r in caplog.records if "Skipping unreadable image" in r.getMessage()]
    assert len(warnings) == 2
    assert settings["images_seen"] == 4 * epochs


# ---------------------------------------------------------------------------------------------------------------
# What trains
def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.mark.parametrize(
    "backbone, disabled",
    [
        ("dinov2", None),
        ("vit", None),
        ("clip_vision_model", None),
        ("dinov2", "last_block"),
        ("dinov2", "position_embeddings"),
    ],
)
def test_only_the_chosen_parts_change(tmp_path, sample_images, backbone, disabled):
    base = tiny_planted(backbone)
    overrides = {f"train_{disabled}": False} if disabled else {}
    trainer = DistillTrainer(
        make_args(tmp_path, sample_images[0], max_steps=2, **overrides),
        base_model=base,
    )
    student = trainer.accelerator.unwrap_model(trainer.student)
    groups = student.trainable_parameter_groups()
    names = {id(p): n for n, p in student.named_parameters()}
    chosen = {names[id(p)] for part in trainer.args.enabled_parts() for p in groups[part]}
    assert {n for n, p in student.named_parameters() if p.requires_grad} == chosen
    optimized = {names[id(p)] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == chosen
    assert not any(p.requires_grad for p in trainer.teacher_model.parameters())
    teacher_before = {k: v.clone() for k, v in trainer.teacher_model.state_dict().items()}

    before = student_state(trainer)
    trainer.train()
    after = load_file(tmp_path / "model.safetensors")
    assert after.keys() == before.keys()
    changed = _changed(before, after)
    assert changed == chosen, (
        f"changed but frozen: {changed - chosen}; trainable but unchanged: {chosen - changed}"
    )
    if disabled:
        assert not changed & {names[id(p)] for p in groups[disabled]}
    assert not _changed(teacher_before, trainer.teacher_model.state_dict())


# ---------------------------------------------------------------------------------------------------------------
# NaN / inf
def test_a_nan_step_is_skipped_and_counted(tmp_path, sample_images):
    trainer = DistillTrainer(make_args(tmp_path, sample_images[0], max_steps=4), base_model=tiny_planted())
    original = trainer.compute_targets
    calls = []

    def nan_on_second_batch(pixel_values, indices, epoch):
        calls.append(1)
        targets = original(pixel_values, indices, epoch)
        return torch.full_like(targets, float("nan")) if len(calls) == 2 else targets

    trainer.compute_targets = nan_on_second_batch
    optimizer_steps = []
    original_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: optimizer_steps.append(1) or original_step(*a, **k)
    result = trainer.train()
    assert result["settings"]["skipped_steps"] == 1 and result["settings"]["global_steps"] == 4
    assert result["settings"]["optimizer_steps"] == 3 and len(optimizer_steps) == 3
    assert all(torch.isfinite(v).all() for v in student_state(trainer).values())


def test_persistent_nan_stops_with_a_clear_error(tmp_path, sample_images):
    trainer = DistillTrainer(
        make_args(tmp_path, sample_images[0], max_steps=20, max_bad_steps=3, checkpointing_steps=1),
        base_model=tiny_planted(),
    )
    original = trainer.compute_targets

    def nan_from_step_2(pixel_values, indices, epoch):
        targets = original(pixel_values, indices, epoch)
        return targets * float("nan") if trainer.state.global_step >= 2 else targets

    trainer.compute_targets = nan_from_step_2
    with pytest.raises(
        RuntimeError, match="3 consecutive steps had NaN/inf .* --learning_rate.*checkpoint-4"
    ):
        trainer.train()
    assert trainer.state.global_step == 4 and trainer.state.skipped_steps == 3


# ---------------------------------------------------------------------------------------------------------------
# --push_to_hub (the Hub is replaced by a recorder of its calls, `FakeHub`)
def test_push_to_hub_needs_a_valid_repo_id_and_a_token_before_training(tmp_path, sample_images, monkeypatch):
    train = sample_images[0]
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        make_args(tmp_path / "out", train, push_to_hub=True)
    with pytest.raises(ValueError, match="not a valid Hub repository id"):
        make_args(tmp_path / "out", train, push_to_hub=True, hub_model_id="alice/bad name")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    args = make_args(tmp_path / "out", train, push_to_hub=True, hub_model_id="alice/tiny-phreg")
    with pytest.raises(ValueError, match="no Hugging Face token found.*hf auth login"):
        DistillTrainer(args, base_model=tiny_planted())
    assert not (tmp_path / "out").exists(), "the token is checked before anything is trained or written"


def test_push_to_hub_uploads_the_finished_run_in_one_commit(tmp_path, sample_images, monkeypatch):
    fake_hub = FakeHub(monkeypatch)
    out = tmp_path / "out"
    _, result = run(
        out,
        sample_images[0],
        push_to_hub=True,
        hub_model_id="alice/tiny-phreg",
        hub_token="hf_test",
        checkpointing_steps=2,
        num_preview_images=2,
    )
    assert fake_hub.calls == ["create_repo", "create_commit"]
    assert result["hub_commit_url"].startswith("https://huggingface.co/alice/tiny-phreg/commit/")
    files = fake_hub.commits[0]["files"]
    assert set(files) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_phreg.py",
        "modeling_phreg.py",
        "modeling_phreg_backbone.py",
        "modeling_phreg_registers.py",
        METRICS_FILE,
        TRAINING_SETTINGS_FILE,
        f"{PREVIEWS_DIR}/train_00000.png",  # no --eval_images: the first training images, named by index
        f"{PREVIEWS_DIR}/train_00001.png",
    }, "the model, its code, processor, card, run JSONs and previews; no checkpoints, logs or cache"
    for name, content in files.items():
        assert content == (out / name).read_bytes(), name
    assert list_checkpoints(out), "checkpoints stay local"
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0"  # the synthetic model is made by this library
    # The synthetic base is named as such, never passed off as a Hub model.
    assert card.data.base_model is None and "**Demo model, not for use.**" in card.text
    settings = json.loads((out / TRAINING_SETTINGS_FILE).read_text())
    assert f"for {settings['global_steps']} optimizer steps" in card.text
    assert f"![{PREVIEWS_DIR}/train_00000.png]({PREVIEWS_DIR}/train_00000.png)" in card.text


def test_the_log_names_what_exists_and_says_synthetic_once(tmp_path, sample_images, caplog):
    """The log names the previews where they end up (not the staging folder, gone by then), and a synthetic base
    whose name already says "not pretrained" is not called so twice."""
    pytest.importorskip("matplotlib")
    caplog.set_level("INFO")
    out = tmp_path / "out"
    run(out, sample_images[0], max_steps=1, num_preview_images=1, num_eval_images=2)
    messages = [record.getMessage() for record in caplog.records]
    assert not [message for message in messages if ".staging-" in message], messages
    (base_line,) = [message for message in messages if "Base model =" in message]
    assert base_line.count("not pretrained") == 1, base_line
    saved = [message for message in messages if "Saved the student" in message]
    assert saved and f"1 preview pictures ({out / PREVIEWS_DIR})" in saved[0], saved


def test_a_failed_push_keeps_the_run_and_names_the_retry(tmp_path, sample_images, monkeypatch, caplog):
    fake_hub = FakeHub(monkeypatch)
    fake_hub.fail_commit = OSError("[Errno 101] Network is unreachable")
    out = tmp_path / "out"
    _, result = run(
        out, sample_images[0], push_to_hub=True, hub_model_id="alice/tiny-phreg", hub_token="hf_x"
    )
    assert result["hub_commit_url"] is None
    assert (
        "phreg push" in caplog.text
        and "alice/tiny-phreg" in caplog.text
        and "Network is unreachable" in caplog.text
    )
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        METRICS_FILE,
        TRAINING_SETTINGS_FILE,
    ):
        assert (out / name).is_file(), name
    reloaded = AutoModel.from_pretrained(out)
    assert reloaded.config.num_register_tokens == 4
