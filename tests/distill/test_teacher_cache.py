"""The teacher-target cache: storage, multi-process shards, fingerprints (unit level, no trainer)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_base, write_small_sample_images
from trainer_helpers import make_args, tiny_planted

from phreg_hf.data import FLOAT_PIPELINE
from phreg_hf.distill.teacher_cache import (
    FINGERPRINT_FILE,
    TeacherTargetCache,
    build_fingerprint,
    hash_model,
)
from phreg_hf.distill.trainer import DistillTrainer
from phreg_hf.seeding import crop_seed_for, view_seed_for


def fingerprint(**overrides) -> dict:
    settings = dict(
        teacher_hash="abc",
        resolution=56,
        num_views=4,
        shift_frac=0.15,
        flip_prob=0.5,
        fill_value=[2.2, 2.4, 2.6],
        seed=0,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        dataset_identity={"source": "/images", "num_images": 8},
        storage_dtype="float16",
    )
    settings.update(overrides)
    return build_fingerprint(**settings)


def test_put_flush_get_roundtrip(tmp_path):
    cache = TeacherTargetCache(tmp_path, fingerprint())
    targets = torch.randn(3, 49, 32)
    cache.put([5, 7, 9], targets, crop_seeds=[1, 2, 3])
    assert 7 in cache and 8 not in cache and len(cache) == 3
    # Pending entries are readable before the flush, with the storage precision.
    torch.testing.assert_close(cache.get([9, 5]), targets[[2, 0]].half().float())
    shard = cache.flush()
    assert shard.exists() and shard.name.startswith("targets-rank0-")
    assert not list(tmp_path.glob(".*tmp")), "temporary files must be renamed away"
    reopened = TeacherTargetCache(tmp_path, fingerprint())
    assert len(reopened) == 3
    torch.testing.assert_close(reopened.get([7]), targets[[1]].half().float())
    with pytest.raises(KeyError, match=r"\[8\]"):
        reopened.get([8])


def test_a_cache_of_other_crops_is_refused(tmp_path):
    TeacherTargetCache(tmp_path, fingerprint(crop_pipeline=FLOAT_PIPELINE))  # targets of float32 crops
    with pytest.raises(
        ValueError, match=r"different settings(.|\n)*crop_pipeline: cached 'float32.*now 'uint8"
    ):
        TeacherTargetCache(tmp_path, fingerprint())  # the trainer's uint8 crops


def test_float32_storage_is_exact(tmp_path):
    cache = TeacherTargetCache(tmp_path, fingerprint(storage_dtype="float32"), storage_dtype="float32")
    targets = torch.randn(2, 4, 8)
    cache.put([0, 1], targets, crop_seeds=[0, 0])
    cache.flush()
    assert torch.equal(
        TeacherTargetCache(tmp_path, fingerprint(storage_dtype="float32")).get([0, 1]), targets
    )


def test_processes_write_their_own_shards_and_read_all(tmp_path):
    rank0 = TeacherTargetCache(tmp_path, fingerprint(), process_index=0)
    rank1 = TeacherTargetCache(tmp_path, fingerprint(), process_index=1)
    rank0.put([0, 1], torch.ones(2, 4, 8), crop_seeds=[0, 1])
    rank1.put([2, 3], 2 * torch.ones(2, 4, 8), crop_seeds=[2, 3])
    path0, path1 = rank0.flush(), rank1.flush()
    assert path0 != path1 and "rank0" in path0.name and "rank1" in path1.name
    # A second flush of the same rank never overwrites the first shard (resumes, restarts).
    rank0.put([4], torch.zeros(1, 4, 8), crop_seeds=[4])
    assert rank0.flush() not in (path0, path1)
    # Each sees the other's targets (get() rescans the folder on a miss).
    assert torch.equal(rank0.get([2, 3]), 2 * torch.ones(2, 4, 8))
    assert torch.equal(rank1.get([0, 1, 4]), torch.cat([torch.ones(2, 4, 8), torch.zeros(1, 4, 8)]))


def test_get_or_compute_runs_the_teacher_only_for_missing_images(tmp_path):
    cache = TeacherTargetCache(tmp_path, fingerprint())
    calls = []

    def compute(pixel_values, indices):
        calls.append(list(indices))
        return (
            pixel_values.mean(dim=(2, 3))[:, None, :].expand(-1, 4, -1) + torch.tensor(indices)[:, None, None]
        )

    pixel_values = torch.randn(3, 3, 8, 8)
    first, computed = cache.get_or_compute([10, 11, 12], pixel_values, compute, crop_seeds=[0, 0, 0])
    assert computed == 3 and calls == [[10, 11, 12]]
    second, computed = cache.get_or_compute(
        [12, 13, 10], pixel_values[[2, 0, 0]], compute, crop_seeds=[0, 0, 0]
    )
    assert computed == 1 and calls[-1] == [13]
    torch.testing.assert_close(second[0], first[2])
    torch.testing.assert_close(second[2], first[0])
    assert (cache.hits, cache.misses) == (2, 4)
    with pytest.raises(ValueError, match="crop seed"):
        cache.get_or_compute([10], pixel_values[:1], compute, crop_seeds=[99])


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(num_views=10), "num_views"),
        (dict(resolution=112), "resolution"),
        (dict(teacher_hash="def"), "teacher"),
        (dict(seed=1), "seed"),
        (dict(dataset_identity={"source": "/other", "num_images": 8}), "dataset"),
    ],
)
def test_a_changed_setting_invalidates_the_cache_with_a_clear_message(tmp_path, change, key):
    TeacherTargetCache(tmp_path, fingerprint())
    with pytest.raises(ValueError, match=rf"(?s){key}: cached .* now .*Delete that directory"):
        TeacherTargetCache(tmp_path, fingerprint(**change))


def test_shards_without_a_fingerprint_are_refused(tmp_path):
    cache = TeacherTargetCache(tmp_path, fingerprint())
    cache.put([0], torch.zeros(1, 4, 8), crop_seeds=[0])
    cache.flush()
    (tmp_path / FINGERPRINT_FILE).unlink()
    with pytest.raises(ValueError, match="no fingerprint.json"):
        TeacherTargetCache(tmp_path, fingerprint())


def test_fingerprint_is_json_and_stored(tmp_path):
    TeacherTargetCache(tmp_path, fingerprint())
    assert json.loads((tmp_path / FINGERPRINT_FILE).read_text()) == fingerprint()


def test_seeds_depend_only_on_seed_and_index():
    assert crop_seed_for(0, 3) == crop_seed_for(0, 3)
    assert len({crop_seed_for(0, i) for i in range(100)}) == 100
    assert crop_seed_for(0, 3) != crop_seed_for(1, 3) != view_seed_for(0, 3)
    assert view_seed_for(0, 3, epoch=0) != view_seed_for(0, 3, epoch=1)


def test_model_hash_sees_weights_and_config():
    model = make_base("dinov2")
    reference = hash_model(model)
    assert hash_model(make_base("dinov2")) == reference
    with torch.no_grad():
        model.embeddings.position_embeddings[0, 0, 0] += 1e-3
    assert hash_model(model) != reference
    other = make_base("dinov2")
    other.config.layer_norm_eps = 1e-5
    assert hash_model(other) != reference


# ---------------------------------------------------------------------------------------------------------------
# In the trainer
@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    return write_small_sample_images(tmp_path_factory.mktemp("cache-images"))


def _cached_run(output_dir, train_dir, cache_dir, base=None, **overrides):
    settings = dict(teacher_cache=str(cache_dir), per_device_train_batch_size=4, max_steps=9)
    settings.update(overrides)
    trainer = DistillTrainer(make_args(output_dir, train_dir, **settings), base_model=base or tiny_planted())
    calls = []
    original = trainer.teacher.forward

    def counting_forward(pixel_values, *args, **kwargs):
        calls.append((trainer.state.epoch, pixel_values.shape[0]))
        return original(pixel_values, *args, **kwargs)

    trainer.teacher.forward = counting_forward
    return trainer, calls


def test_later_epochs_and_later_runs_do_not_call_the_teacher(tmp_path, sample_images):
    train = sample_images[0]
    num_images = len(list(train.iterdir()))
    trainer, calls = _cached_run(tmp_path / "a", train, tmp_path / "cache")
    trainer.train()
    assert trainer.num_epochs >= 3
    # Epoch 0 computes every target once; later epochs only run the student (the final measures, which run
    # the teacher on held-out images, happen after training and are not counted here: epoch stays the last).
    training_calls = [c for c in calls if c[0] == 0]
    assert sum(n for _, n in training_calls) == num_images
    assert {epoch for epoch, _ in calls} <= {0, trainer.num_epochs - 1}
    assert trainer.teacher_cache.misses == num_images
    assert trainer.teacher_cache.hits == trainer.state.images_seen - num_images

    # A new run on the same cache: the teacher never runs for training.
    again, calls = _cached_run(tmp_path / "b", train, tmp_path / "cache", max_steps=3)
    evaluation_calls = len(calls)
    again.train()
    assert again.teacher_cache.misses == 0 and again.teacher_cache.hits == again.state.images_seen
    assert again.state.teacher_images == 0

    # The cached target of an image is the teacher's target of the very crop the student now sees.
    batch = next(iter(again.train_dataloader))
    cached = again.teacher_cache.get(batch["index"].tolist())
    assert batch["pixel_values"].dtype == torch.uint8  # normalized by the step loop, on the device
    pixels = again.normalize_pixels(batch["pixel_values"])
    fresh = again.compute_targets(pixels, batch["index"].tolist(), epoch=None)
    torch.testing.assert_close(cached, fresh, rtol=2e-3, atol=2e-3)
    assert evaluation_calls == 0


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(num_views=6), "num_views"),
        (dict(resolution=64), "resolution"),
        (dict(seed=1), "seed"),
        ("other teacher", "teacher"),
    ],
)
def test_changed_teacher_k_or_resolution_invalidate_the_cache(tmp_path, sample_images, change, key):
    trainer, _ = _cached_run(tmp_path / "a", sample_images[0], tmp_path / "cache", max_steps=1)
    trainer.train()
    base, overrides = (tiny_planted(seed=1), {}) if change == "other teacher" else (None, change)
    with pytest.raises(ValueError, match=rf"(?s){key}: cached .*Delete that directory .* --teacher_cache"):
        DistillTrainer(
            make_args(tmp_path / "b", sample_images[0], teacher_cache=str(tmp_path / "cache"), **overrides),
            base_model=base or tiny_planted(),
        )


def test_a_non_finite_target_is_used_once_and_never_stored(tmp_path):
    cache = TeacherTargetCache(tmp_path / "cache", {"k": 1})
    pixels = torch.zeros(2, 3, 4, 4)

    def compute(pv, idx):
        targets = torch.ones(len(idx), 9, 8)
        targets[0, 0, 0] = float("nan")  # the first computed image is broken
        return targets

    targets, computed = cache.get_or_compute([0, 1], pixels, compute, crop_seeds=[7, 8])
    assert computed == 2 and torch.isnan(targets[0]).any() and torch.isfinite(targets[1]).all()
    assert 0 not in cache and 1 in cache  # the NaN target is recomputed next time, not replayed every epoch
    cache.flush()
    reopened = TeacherTargetCache(tmp_path / "cache", {"k": 1})
    assert 0 not in reopened and torch.equal(reopened.get([1])[0], torch.ones(9, 8))


# ---------------------------------------------------------------------------------------------------------------
# Format 3: xxh3_64 row checksums; older caches refused
def test_rows_are_checksummed_with_xxh3_and_a_flipped_byte_names_the_shard(tmp_path):
    import pickle

    import xxhash

    from phreg_hf.distill.teacher_cache import row_checksum
    from phreg_hf.seeding import MASK_63

    row = torch.randn(49, 32).half()
    assert row_checksum(row) == xxhash.xxh3_64_intdigest(row.view(torch.uint8).numpy().tobytes()) & MASK_63
    cache = TeacherTargetCache(tmp_path, fingerprint())
    targets = torch.randn(3, 49, 32)
    cache.put([0, 1, 2], targets, crop_seeds=[1, 2, 3])
    shard = cache.flush()
    raw = bytearray(shard.read_bytes())
    raw[len(raw) - 49 * 32 * 2 - 1000] ^= 0x01  # one bit in the middle of the second target row
    shard.write_bytes(bytes(raw))
    reopened = TeacherTargetCache(tmp_path, fingerprint())
    torch.testing.assert_close(reopened.get([0, 2]), targets[[0, 2]].half().float())  # the others still read
    with pytest.raises(ValueError, match=rf"shard {shard} is corrupt .*image 1 does not match its checksum"):
        reopened.get([1])
    # A worker's copy of the reader (pickled, reopened lazily) refuses it the same way.
    reader = pickle.loads(pickle.dumps(reopened.reader))
    assert reader.crop_seed(1) == 2
    with pytest.raises(ValueError, match=rf"shard {shard} is corrupt"):
        reader.read(1)


def test_an_older_cache_format_is_refused_with_the_fix(tmp_path):
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    old.mkdir()
    stored = {**fingerprint(), "format_version": 2}
    (old / FINGERPRINT_FILE).write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=rf"{old} was written in cache format 2 .*Delete {old}.*rebuilds"):
        TeacherTargetCache(old, fingerprint())
    # A format-2 shard in a folder whose fingerprint says 3 is refused too, never read.
    new = tmp_path / "new"
    cache = TeacherTargetCache(new, fingerprint())
    cache.put([0], torch.randn(1, 49, 32), crop_seeds=[1])
    shard = cache.flush()
    save_file(load_file(shard), str(shard), metadata={"format_version": "2"})
    with pytest.raises(ValueError, match=rf"cache format 2 \({shard.name}\).*--teacher_cache {new}"):
        TeacherTargetCache(new, fingerprint())
