"""Feeding the step loop (issue 17): DataLoader workers (default count, same results whatever their number),
cached targets read in the workers, all-unreadable batches in a worker, and one host sync per optimizer step."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from trainer_helpers import Crash, make_args, run, student_state, tiny_planted

import phreg_hf
from phreg_hf.distill.trainer import DistillTrainer, list_checkpoints
from phreg_hf.distill.training_data import resolve_num_workers


def test_default_workers_follow_the_cpus_per_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_num_workers(None, "cuda") == 15  # 16 CPUs per process, one left to the training process
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_num_workers(None, "cuda") == 16  # at most 16
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_num_workers(None, "cuda") == 0  # one CPU: load in the training process
    assert resolve_num_workers(0, "cuda") == 0 and resolve_num_workers(3, "cuda") == 3  # given: kept


def test_training_on_the_cpu_loads_in_the_training_process_unless_told(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_num_workers(None, "cuda") == 15
    assert resolve_num_workers(None, "cpu") == 0  # the model's threads already use every core
    assert resolve_num_workers(2, "cpu") == 2  # given: kept


def test_the_trainer_on_the_cpu_defaults_to_no_workers(tmp_path, sample_images, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    trainer = DistillTrainer(make_args(tmp_path / "out", sample_images[0]), base_model=tiny_planted())
    assert trainer.accelerator.device.type == "cpu" and trainer.train_dataloader.num_workers == 0


def _recording(trainer: DistillTrainer) -> list[dict]:
    """Record what every micro-step receives (indices, pixels, which rows came with a cached target)."""
    seen, original = [], trainer._micro_step

    def micro_step(batch):
        seen.append(
            {
                "epoch": trainer.state.epoch,
                "indices": list(batch["indices"]),
                "pixel_values": batch["pixel_values"].clone(),
                "has_target": list(batch.get("has_target", [])),
            }
        )
        return original(batch)

    trainer._micro_step = micro_step
    return seen


@pytest.mark.parametrize("teacher_cache", [False, True])
def test_0_and_2_workers_give_the_same_batches_and_weights(tmp_path, sample_images, teacher_cache):
    settings = dict(max_steps=6, per_device_train_batch_size=4)  # 10 images, 3 steps an epoch: 2 epochs
    runs = {}
    for workers in (0, 2):
        extra = {"teacher_cache": str(tmp_path / f"cache{workers}")} if teacher_cache else {}
        args = make_args(
            tmp_path / f"w{workers}", sample_images[0], dataloader_num_workers=workers, **settings, **extra
        )
        trainer = DistillTrainer(args, base_model=tiny_planted())
        assert trainer.train_dataloader.num_workers == workers
        if workers:
            assert (
                trainer.train_dataloader.persistent_workers and trainer.train_dataloader.prefetch_factor == 4
            )
        seen = _recording(trainer)
        trainer.train()
        runs[workers] = (seen, student_state(trainer))
    (seen0, weights0), (seen2, weights2) = runs[0], runs[2]
    assert [s["indices"] for s in seen0] == [s["indices"] for s in seen2]
    assert [s["has_target"] for s in seen0] == [s["has_target"] for s in seen2]
    for a, b in zip(seen0, seen2, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    if teacher_cache:
        # After the first epoch every target came with its batch, read and verified by the DataLoader.
        assert all(s["has_target"] and all(s["has_target"]) for s in seen2 if s["epoch"] >= 1)
        assert not any(s["has_target"] for s in seen2 if s["epoch"] == 0)
    else:
        # New crops every epoch (the epoch reaches the persistent workers).
        crops = {
            (s["epoch"], index): s["pixel_values"][row]
            for s in seen2
            for row, index in enumerate(s["indices"])
        }
        index = next(i for (epoch, i) in crops if epoch == 0 and (1, i) in crops)
        assert not torch.equal(crops[0, index], crops[1, index])
    for name in weights0:
        torch.testing.assert_close(weights2[name], weights0[name], rtol=0, atol=0, msg=name)


def test_a_resumed_run_with_workers_equals_an_uninterrupted_one(tmp_path, sample_images):
    settings = dict(
        max_steps=7,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        checkpointing_steps=3,
        teacher_cache=str(tmp_path / "cache"),
    )
    uninterrupted, _ = run(tmp_path / "a", sample_images[0], dataloader_num_workers=0, **settings)
    crashed = DistillTrainer(
        make_args(tmp_path / "b", sample_images[0], dataloader_num_workers=2, **settings),
        base_model=tiny_planted(),
    )
    original = crashed._micro_step

    def crash_at_step_5(batch):
        if crashed.state.global_step == 5:
            raise Crash()
        return original(batch)

    crashed._micro_step = crash_at_step_5
    with pytest.raises(Crash):
        crashed.train()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint-3"]
    resumed, result = run(
        tmp_path / "b",
        sample_images[0],
        dataloader_num_workers=2,
        resume_from_checkpoint="latest",
        **settings,
    )
    assert result["settings"]["global_steps"] == 7
    expected, actual = student_state(uninterrupted), student_state(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_batch_all_unreadable_in_a_worker_is_skipped_and_counted_once_per_file(
    tmp_path, sample_images, caplog
):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, photo in enumerate(sorted(sample_images[0].iterdir())[:3]):
        Image.open(photo).convert("RGB").save(folder / f"ok{i}.png")
    (folder / "bad0.png").write_bytes(b"not a PNG")
    (folder / "bad1.jpg").write_bytes(b"\xff\xd8\xff not a JPEG either")
    # One image a batch: each unreadable file is a batch with no image at all, met in a worker, every epoch.
    _, result = run(
        tmp_path / "out", folder, per_device_train_batch_size=1, max_steps=10, dataloader_num_workers=2
    )
    settings = result["settings"]
    assert settings["global_steps"] == 10 and settings["skipped_steps"] == 0
    assert settings["skipped_images"] == 2
    assert sorted(Path(r.split(":")[0]).name for r in settings["unreadable_images"]) == [
        "bad0.png",
        "bad1.jpg",
    ]
    warnings = [r.getMessage() for r in caplog.records if "Skipping unreadable image" in r.getMessage()]
    assert len(warnings) == 2
    assert settings["images_seen"] == 3 * 2  # two epochs of the 3 readable images


# ---------------------------------------------------------------------------------------------------------------
# One host sync per optimizer step
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
PACKAGE = str(Path(phreg_hf.__file__).parent)


def _count_host_reads(monkeypatch) -> list[str]:
    """Patch the Tensor methods that read a value back to the host; record the calls made from phreg_hf's code,
    except `data.py`'s: the image pipeline reads CPU tensors (crop boxes), in the DataLoader's workers."""
    calls = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, __original=original, __name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE) and Path(caller).name != "data.py":
                calls.append(f"{__name} at {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize("warm_cache", [False, True])
def test_at_most_one_host_sync_per_optimizer_step(tmp_path, sample_images, monkeypatch, warm_cache):
    settings = dict(
        max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2, dataloader_num_workers=0
    )
    if warm_cache:
        settings["teacher_cache"] = str(tmp_path / "cache")
        # One epoch first: every image cached.
        run(tmp_path / "fill", sample_images[0], **{**settings, "max_steps": 3})
    trainer = DistillTrainer(
        make_args(tmp_path / "out", sample_images[0], **settings), base_model=tiny_planted()
    )
    if warm_cache:
        trainer.distill_dataset.target_reader.refresh()  # the shards' index is read once, not per step
    original = trainer._run_steps
    calls = []

    def counted(progress):
        with monkeypatch.context() as patch:
            recorded = _count_host_reads(patch)
            original(progress)
        calls.extend(recorded)

    trainer._run_steps = counted
    result = trainer.train()
    assert result["settings"]["global_steps"] == 4
    assert len(calls) == 4, "\n".join(calls)  # the window's totals, once per optimizer step
    assert all(call.startswith("tolist at step_loop.py") for call in calls), calls
    if warm_cache:
        assert result["settings"]["teacher_images"] == 0


def test_batches_cross_as_uint8_and_are_normalized_on_the_device(tmp_path, sample_images):
    trainer = DistillTrainer(
        make_args(tmp_path / "out", sample_images[0], max_steps=1, per_device_train_batch_size=2),
        base_model=tiny_planted(),
    )
    seen, inputs, original = _recording(trainer), [], trainer.student_patch_tokens

    def student_patch_tokens(pixel_values):
        inputs.append(pixel_values.detach().clone())
        return original(pixel_values)

    trainer.student_patch_tokens = student_patch_tokens
    trainer.train()
    crops = seen[0]["pixel_values"]
    assert crops.dtype == torch.uint8 and crops.shape[1:] == (3, trainer.resolution, trainer.resolution)
    mean = torch.tensor(trainer.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(trainer.image_processor.image_std).view(1, 3, 1, 1)
    torch.testing.assert_close(inputs[0], (crops.float() / 255 - mean) / std)  # the processor's normalization
