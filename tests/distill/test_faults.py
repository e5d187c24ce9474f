"""Faults a careless or hostile world throws at a run and a push: one test per item of issue 11.

Lost data (1-2), untrusted input doing harm (3-4), silent wrong results (5-11), failing late or without a
name (12-15). Each test reproduces the original failure and would fail without its fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_base
from hub_helpers import REPO_ID, image_processor, save_run_folder, snapshot
from PIL import Image
from trainer_helpers import Crash, make_args, run, tiny_planted

import phreg_hf
from phreg_hf import cli, data
from phreg_hf.constants import METRICS_FILE, PREVIEWS_DIR
from phreg_hf.distill import checkpointing
from phreg_hf.distill.teacher_cache import FINGERPRINT_FILE, TeacherTargetCache
from phreg_hf.distill.trainer import DistillArguments, DistillTrainer, list_checkpoints
from phreg_hf.file_checks import file_sha256
from phreg_hf.hub import push as hub


def crash_at(trainer: DistillTrainer, step: int) -> None:
    """Make `trainer.train()` raise `Crash` when it reaches optimizer step `step` (a kill at that moment)."""
    original = trainer._micro_step

    def micro_step(batch):
        if trainer.state.global_step == step:
            raise Crash()
        return original(batch)

    trainer._micro_step = micro_step


def checkpointed_run(tmp_path: Path, train_dir: Path, kill_at: int = 3, **settings) -> Path:
    """A run killed at step `kill_at` with checkpoints every 2 steps before; returns its output dir."""
    out = tmp_path / "out"
    settings = {"max_steps": 4, "checkpointing_steps": 2, **settings}
    trainer = DistillTrainer(make_args(out, train_dir, **settings), base_model=tiny_planted())
    crash_at(trainer, kill_at)
    with pytest.raises(Crash):
        trainer.train()
    assert list_checkpoints(out)[-1].name == f"checkpoint-{(kill_at // 2) * 2}"
    return out


class WritesAMarker:
    """A pickle payload that, if ever unpickled, creates a file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


# ---------------------------------------------------------------------------------------------------------------
# 1. Resume bypassed the overwrite guard
def test_1_resume_latest_never_replaces_a_finished_run(tmp_path, sample_images):
    out = tmp_path / "out"
    run(out, sample_images[0], max_steps=1)  # no checkpoint (checkpointing_steps=0), a finished model
    before = snapshot(out)
    with pytest.raises(
        ValueError, match="holds no checkpoint to resume but a finished run .*--overwrite_output_dir"
    ):
        DistillTrainer(
            make_args(out, sample_images[0], resume_from_checkpoint="latest"), base_model=tiny_planted(seed=1)
        )
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------------------------
# 2. A dry run replaced a hand-written README.md
def test_2_push_never_replaces_a_users_readme(tmp_path, fake_hub, capsys):
    folder = tmp_path / "run"
    save_run_folder(folder)
    readme = folder / "README.md"
    readme.write_text("# My own card\n\nWritten by hand.\n")

    assert cli.main(["push", str(folder), REPO_ID, "--dry_run", "--license", "apache-2.0"]) == 0
    assert readme.read_text() == "# My own card\n\nWritten by hand.\n"
    rendered = folder / hub.RENDERED_CARD_FILE
    assert "PH-Reg" in rendered.read_text()
    assert "is your own and was kept" in capsys.readouterr().out

    # A real push neither replaces nor silently uploads it: it asks.
    assert cli.main(["push", str(folder), REPO_ID, "--license", "apache-2.0"]) == 2
    assert "written or edited by hand" in capsys.readouterr().err
    assert fake_hub.commits == [] and readme.read_text().startswith("# My own card")
    # --keep_readme uploads the user's card as it is (and the comparison copy stays local).
    assert cli.main(["push", str(folder), REPO_ID, "--keep_readme"]) == 0
    uploaded = fake_hub.commits[-1]["files"]
    assert uploaded["README.md"] == readme.read_bytes() and hub.RENDERED_CARD_FILE not in uploaded


def test_2_a_card_rendered_for_an_earlier_run_is_not_uploaded_as_current(tmp_path, fake_hub, capsys):
    folder = tmp_path / "run"
    save_run_folder(folder)
    assert cli.main(["push", str(folder), REPO_ID, "--dry_run", "--license", "apache-2.0"]) == 0
    assert hub.readme_status(folder) == "rendered"
    # A new run lands in the folder: new measurements.
    metrics = json.loads((folder / METRICS_FILE).read_text())
    metrics["rows"]["student"]["outlier_ratio"] = 0.5
    (folder / METRICS_FILE).write_text(json.dumps(metrics))
    assert hub.readme_status(folder) == "stale"
    assert cli.main(["push", str(folder), REPO_ID, "--keep_readme"]) == 2
    assert "describes other files" in capsys.readouterr().err
    assert fake_hub.commits == []
    # Without --keep_readme our own unedited rendering is simply re-rendered.
    assert cli.main(["push", str(folder), REPO_ID, "--license", "apache-2.0"]) == 0
    assert "0.5" in fake_hub.commits[-1]["files"]["README.md"].decode()


# ---------------------------------------------------------------------------------------------------------------
# 3. Push followed symlinks out of the folder
@pytest.mark.parametrize("link", ["preview_file", "processor_config", "previews_folder"])
def test_3_push_refuses_symlinks_out_of_the_folder(tmp_path, fake_hub, link):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd.png").write_text("root:x:0:0")
    if link == "preview_file":
        (folder / PREVIEWS_DIR / "x.png").symlink_to(secret / "passwd.png")
        name = "x.png"
    elif link == "processor_config":
        (folder / "preprocessor_config.json").unlink()
        (folder / "preprocessor_config.json").symlink_to(secret / "passwd.png")
        name = "preprocessor_config.json"
    else:
        shutil.rmtree(folder / PREVIEWS_DIR)
        (folder / PREVIEWS_DIR).symlink_to(secret)
        name = PREVIEWS_DIR
    with pytest.raises(ValueError, match=rf"Refusing to upload .*{name}: it is a symbolic link"):
        hub.push_folder_to_hub(folder, REPO_ID, license="apache-2.0")
    assert fake_hub.commits == []


def test_3_push_refuses_preview_names_that_break_the_card(tmp_path, fake_hub):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    shutil.copy(folder / PREVIEWS_DIR / "norms.png", folder / PREVIEWS_DIR / "a\n![x](http:evil).png")
    with pytest.raises(ValueError, match="break the card's markdown"):
        hub.push_folder_to_hub(folder, REPO_ID, license="apache-2.0")
    assert fake_hub.commits == []


# ---------------------------------------------------------------------------------------------------------------
# 4. Resume unpickled crafted files
def _rewrite_manifest(checkpoint: Path) -> None:
    """What an attacker who also forges the manifest would do: list every file with its real hash."""
    manifest = json.loads((checkpoint / checkpointing.MANIFEST_FILE).read_text())
    manifest["files"] = {
        p.relative_to(checkpoint).as_posix(): file_sha256(p)
        for p in checkpoint.rglob("*")
        if p.is_file() and p.name != checkpointing.MANIFEST_FILE
    }
    (checkpoint / checkpointing.MANIFEST_FILE).write_text(json.dumps(manifest))


def test_4_resume_never_runs_code_from_a_checkpoint(tmp_path, sample_images):
    out = checkpointed_run(tmp_path, sample_images[0])
    checkpoint = out / "checkpoint-2"
    marker = tmp_path / "pwned"
    with open(checkpoint / "custom_checkpoint_0.pkl", "wb") as handle:
        pickle.dump(WritesAMarker(marker), handle)
    resume = make_args(
        out, sample_images[0], max_steps=4, checkpointing_steps=2, resume_from_checkpoint="latest"
    )

    # A file the save did not write is refused before anything is loaded.
    with pytest.raises(
        ValueError, match=r"not written by this checkpoint's save: \['custom_checkpoint_0.pkl'\]"
    ):
        DistillTrainer(resume, base_model=tiny_planted()).train()
    assert not marker.exists()

    # Even with a forged manifest it is never unpickled: our counters are JSON (nothing is registered for
    # Accelerate's pickled custom checkpoints, so it refuses the folder), and Accelerate loads its own files
    # with weights_only=True.
    _rewrite_manifest(checkpoint)
    with pytest.raises(ValueError, match="Could not load the checkpoint .*custom checkpoints"):
        DistillTrainer(resume, base_model=tiny_planted()).train()
    assert not marker.exists()

    # A crafted optimizer file is refused by the weights-only loader, named, and never run.
    (checkpoint / "custom_checkpoint_0.pkl").unlink()
    torch.save({"state": WritesAMarker(marker)}, checkpoint / "optimizer.bin")
    _rewrite_manifest(checkpoint)
    with pytest.raises(ValueError, match="Could not load the checkpoint .*checkpoint-2"):
        DistillTrainer(resume, base_model=tiny_planted()).train()
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# 5. Resume checked nothing
@pytest.mark.parametrize(
    "change, message",
    [
        ({"base": "other_teacher"}, "teacher: checkpoint"),
        ({"resolution": 64}, "resolution: checkpoint 56, now 64"),
    ],
)
def test_5_resume_refuses_a_checkpoint_of_another_run(tmp_path, sample_images, change, message):
    out = checkpointed_run(tmp_path, sample_images[0])
    base = tiny_planted(seed=1) if change.pop("base", None) else tiny_planted()
    args = make_args(
        out, sample_images[0], max_steps=4, checkpointing_steps=2, resume_from_checkpoint="latest", **change
    )
    with pytest.raises(ValueError, match=f"belongs to a run with other settings(.|\n)*{message}"):
        DistillTrainer(args, base_model=base).train()
    assert not (out / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# 6. Stale files mixed with a new run
def test_6_a_new_run_replaces_the_old_outputs_as_one_set(tmp_path, sample_images):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    run(out, sample_images[0], max_steps=1, num_preview_images=2, eval_images=str(sample_images[1]))
    assert len(list((out / PREVIEWS_DIR).glob("*.png"))) == 2
    (out / "notes.txt").write_text("mine")
    # Overwritten by a run without previews: the old pictures must not stay (the card would show them).
    run(out, sample_images[0], max_steps=1, overwrite_output_dir=True)
    assert not (out / PREVIEWS_DIR).exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_6_a_run_that_fails_while_saving_leaves_the_old_outputs_whole(tmp_path, sample_images):
    out = tmp_path / "out"
    run(out, sample_images[0], max_steps=1)
    before = snapshot(out)
    trainer = DistillTrainer(
        make_args(out, sample_images[0], max_steps=1, overwrite_output_dir=True),
        base_model=tiny_planted(seed=3),
    )

    def failing_evaluate(preview_dir=None):
        raise Crash()  # after the new weights were written (into the staging folder)

    trainer.evaluate = failing_evaluate
    with pytest.raises(Crash):
        trainer.train()
    assert snapshot(out) == before  # old weights with their own JSONs, no half-new set, no leftovers


# ---------------------------------------------------------------------------------------------------------------
# 7. Stale or corrupt teacher cache
def _bmp(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (64, 64), colour).save(path, format="BMP")  # uncompressed: same size for any colour


def test_7_a_replaced_image_of_the_same_size_invalidates_the_cache(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        _bmp(images / f"{i}.bmp", (40 * i, 100, 200))
    cache = tmp_path / "cache"
    DistillTrainer(make_args(tmp_path / "a", images, teacher_cache=str(cache)), base_model=tiny_planted())
    size = (images / "0.bmp").stat().st_size
    _bmp(images / "0.bmp", (255, 0, 0))
    assert (images / "0.bmp").stat().st_size == size
    with pytest.raises(ValueError, match="built with different settings(.|\n)*content_sha256"):
        DistillTrainer(make_args(tmp_path / "b", images, teacher_cache=str(cache)), base_model=tiny_planted())


def _cache_with_one_shard(folder: Path) -> Path:
    cache = TeacherTargetCache(folder, {"k": 1})
    cache.put([0, 1], torch.randn(2, 9, 8), crop_seeds=[5, 6])
    return cache.flush()


def test_7_overwritten_shard_bytes_are_refused_not_used(tmp_path):
    shard = _cache_with_one_shard(tmp_path / "cache")
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF  # a byte of the last target row
    shard.write_bytes(bytes(raw))
    cache = TeacherTargetCache(tmp_path / "cache", {"k": 1})
    with pytest.raises(ValueError, match=rf"shard {shard} is corrupt .*checksum(.|\n)*Delete"):
        cache.get([1])


@pytest.mark.parametrize("damage", ["shard_header", "fingerprint"])
def test_7_a_corrupt_cache_file_is_named(tmp_path, damage):
    shard = _cache_with_one_shard(tmp_path / "cache")
    path = shard if damage == "shard_header" else tmp_path / "cache" / FINGERPRINT_FILE
    path.write_bytes(b"\x00garbage" + path.read_bytes()[8:])
    with pytest.raises(ValueError, match=rf"{path.name}.*corrupt(.|\n)*Delete {tmp_path / 'cache'}"):
        TeacherTargetCache(tmp_path / "cache", {"k": 1})


# ---------------------------------------------------------------------------------------------------------------
# 8. A truncated model.safetensors was uploaded
def test_8_push_refuses_a_truncated_weight_file(tmp_path, fake_hub):
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(
        ValueError, match="model.safetensors holds .* bytes but its header describes .*truncated"
    ):
        hub.push_folder_to_hub(folder, REPO_ID, license="apache-2.0", dry_run=True)
    assert fake_hub.calls == []


# ---------------------------------------------------------------------------------------------------------------
# 9. `phreg eval` with a base of the same shape but other weights
def test_9_eval_refuses_a_base_the_student_was_not_distilled_from(tmp_path, sample_images):
    from phreg_hf.evaluate.artifacts import prepare_evaluation

    student = phreg_hf.student_from_base(make_base("dinov2", seed=0), 4)
    student.save_pretrained(tmp_path / "student")
    make_base("dinov2", seed=0).save_pretrained(tmp_path / "right_base")
    make_base("dinov2", seed=1).save_pretrained(tmp_path / "other_base")
    for folder in ("student", "right_base", "other_base"):
        image_processor().save_pretrained(tmp_path / folder)
    prepare_evaluation(
        str(tmp_path / "right_base"), str(tmp_path / "student"), str(sample_images[1]), max_images=2
    )
    with pytest.raises(ValueError, match="was not distilled from --base .*frozen differ"):
        prepare_evaluation(str(tmp_path / "other_base"), str(tmp_path / "student"), str(sample_images[1]))


# ---------------------------------------------------------------------------------------------------------------
# 10. EXIF orientation was ignored
def test_10_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "portrait.jpg"
    image.save(path, exif=exif, quality=95)
    upright = data.open_image(path)
    assert upright.size == (20, 40)
    red, green, blue = upright.getpixel((10, 2))  # the stripe is now at the top
    assert red > 200 and blue < 60
    assert data.decode_image({"bytes": path.read_bytes(), "path": None}).size == (20, 40)


# ---------------------------------------------------------------------------------------------------------------
# 12. Unusable images were found only after training
def test_12_a_folder_of_only_unreadable_images_fails_before_the_first_step(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"not an image")
    (images / "b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(ValueError, match=r"None of the 2 training images .* can be read(.|\n)*a.png"):
        DistillTrainer(make_args(tmp_path / "out", images), base_model=tiny_planted())
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_12_unusable_eval_images_fail_before_the_first_step(tmp_path, sample_images):
    broken = tmp_path / "heldout"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not an image")
    trainer_started = []
    with pytest.raises(ValueError, match="--eval_images .*could be read"):
        trainer = DistillTrainer(
            make_args(tmp_path / "out", sample_images[0], eval_images=str(broken)), base_model=tiny_planted()
        )
        trainer_started.append(trainer)
    assert not trainer_started


# ---------------------------------------------------------------------------------------------------------------
# 13. Errors that named no file
def test_13_a_decompression_bomb_is_skipped_and_named(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4
    )  # over twice the limit: an error, not a warning
    dataset = data.DistillImageDataset([{"image": str(path)}], data.ImageTransform(56))
    item = dataset[0]
    assert "bomb.png: DecompressionBombError" in item["unreadable"]


def test_13_a_non_utf8_file_name_is_named(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "good.png")
    with open(os.path.join(os.fsencode(images), b"caf\xe9.png"), "wb") as handle:
        handle.write((images / "good.png").read_bytes())
    with pytest.raises(ValueError, match=r"caf\\xe9.png.* is not valid UTF-8(.|\n)*Rename"):
        data.load_image_dataset(train_dir=images)


def test_13_a_truncated_model_safetensors_is_named_on_load(tmp_path, sample_images):
    from phreg_hf.evaluate.artifacts import prepare_evaluation

    phreg_hf.student_from_base(make_base("dinov2"), 4).save_pretrained(tmp_path / "student")
    make_base("dinov2").save_pretrained(tmp_path / "base")
    image_processor().save_pretrained(tmp_path / "base")
    weights = tmp_path / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(ValueError, match=rf"{weights} holds .* truncated"):
        prepare_evaluation(str(tmp_path / "base"), str(tmp_path / "student"), str(sample_images[1]))


def test_13_a_missing_local_teacher_or_a_file_as_output_dir_is_named(tmp_path, sample_images):
    with pytest.raises(FileNotFoundError, match="--teacher ./no/such/model: folder not found"):
        DistillArguments(teacher="./no/such/model", train_dir=str(sample_images[0]), output_dir=str(tmp_path))
    a_file = tmp_path / "out"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="--output_dir .*out is a file"):
        DistillTrainer(make_args(a_file, sample_images[0]), base_model=tiny_planted())


# ---------------------------------------------------------------------------------------------------------------
# 14. A half-deleted checkpoint was picked as `latest`; leftovers were never cleaned
def test_14_an_incomplete_checkpoint_is_never_latest_and_leftovers_are_cleaned(
    tmp_path, sample_images, monkeypatch
):
    out = checkpointed_run(tmp_path, sample_images[0])
    # A save interrupted before its manifest, and a removal interrupted halfway (rmtree killed).
    half = out / "checkpoint-4"
    shutil.copytree(out / "checkpoint-2", half)
    (half / checkpointing.MANIFEST_FILE).unlink()
    monkeypatch.setattr(checkpointing.shutil, "rmtree", lambda *a, **k: None)
    checkpointing.remove_tree(out / "checkpoint-2")
    monkeypatch.undo()
    assert list_checkpoints(out) == []  # neither the half-saved nor the half-removed one
    (out / ".tmp-save-0123").mkdir()
    (out / "checkpoint-6.tmp").mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".targets-rank0-abc.safetensors.tmp").write_bytes(b"partial")
    DistillTrainer(
        make_args(out, sample_images[0], resume_from_checkpoint="latest", teacher_cache=str(cache)),
        base_model=tiny_planted(),
    )
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert hidden == [] and not list(cache.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------------------
# 15. After a resume the settings reported 0/0 cache hits/misses
def test_15_a_resumed_run_reports_the_same_counts_as_an_uninterrupted_one(tmp_path, sample_images):
    settings = dict(max_steps=8, per_device_train_batch_size=4)  # 3 steps an epoch: hits before and after
    _, uninterrupted = run(
        tmp_path / "a", sample_images[0], teacher_cache=str(tmp_path / "cache_a"), **settings
    )
    cache = str(tmp_path / "cache_b")
    out = checkpointed_run(tmp_path, sample_images[0], kill_at=5, teacher_cache=cache, **settings)
    _, resumed = run(
        out,
        sample_images[0],
        teacher_cache=str(tmp_path / "cache_b"),
        resume_from_checkpoint="latest",
        checkpointing_steps=2,
        **settings,
    )
    expected, actual = uninterrupted["settings"], resumed["settings"]
    for key in ("global_steps", "images_seen", "teacher_images", "skipped_images", "epochs"):
        assert actual[key] == expected[key], key
    assert (actual["teacher_cache"]["hits"], actual["teacher_cache"]["misses"]) == (
        expected["teacher_cache"]["hits"],
        expected["teacher_cache"]["misses"],
    )
    assert expected["teacher_cache"]["misses"] > 0 and expected["teacher_cache"]["hits"] > 0


def test_checkpoint_manifest_lists_every_file_with_its_hash(tmp_path, sample_images):
    out = checkpointed_run(tmp_path, sample_images[0])
    manifest = json.loads((out / "checkpoint-2" / checkpointing.MANIFEST_FILE).read_text())
    assert manifest["state"]["global_step"] == 2
    assert not any(name.startswith("custom_checkpoint") for name in manifest["files"])
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / "checkpoint-2" / name).read_bytes()).hexdigest() == digest
