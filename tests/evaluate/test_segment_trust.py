"""`phreg segment` on the inputs a careless or adversarial user gives: no lost label map, no silent wrong map, no
traceback (issue 18, items 2, 3, 4, 7, 8, 10, 11, 12)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from phreg_hf import PhregCLIPModel
from phreg_hf.cli import main as phreg_main
from phreg_hf.data import open_image
from phreg_hf.evaluate.segment_outputs import LOCK_FILE
from phreg_hf.evaluate.segmentation import label_image
from phreg_hf.models import pipeline_phreg_segmentation as pipeline_module
from phreg_hf.models.pipeline_phreg_segmentation import OpenVocabularySegmenter, parse_labels
from phreg_hf.synthetic_clip import build_tiny_clip_processor

CLASSES = "background; red square"
SMALL = ["--short_side", "32", "--crop_size", "32", "--stride", "16"]


def write_images(folder: Path, names: list[str], size=(40, 32), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
    return folder


def segment(model: Path, images: Path, out: Path, *extra: str) -> int:
    argv = ["segment", "--model", str(model), "--images", str(images), "--out", str(out), *SMALL]
    return phreg_main(argv + (["--labels", CLASSES] if "--labels_file" not in extra else []) + list(extra))


@pytest.fixture(scope="module")
def clip_student(tiny_clip_folders) -> Path:
    return tiny_clip_folders[1]


def copy_with_weights(source: Path, target: Path, edit) -> Path:
    """A copy of a model folder whose state dict went through `edit(state) -> state`."""
    shutil.copytree(source, target)
    state = load_file(target / "model.safetensors")
    save_file(edit(state), target / "model.safetensors", metadata={"format": "pt"})
    return target


# ------------------------------------------------------------------------------------------------------------------
# Item 2: two images, one label map
def test_images_that_would_share_a_label_map_are_refused_naming_both(clip_student, tmp_path, capsys):
    images = write_images(tmp_path / "images", ["x.png"])
    Image.open(images / "x.png").save(images / "x.jpg")
    assert segment(clip_student, images, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "x.jpg and x.png" in err and "labels/x.png" in err
    assert not (tmp_path / "out" / "labels").exists()


# ------------------------------------------------------------------------------------------------------------------
# Item 3: two runs into one --out at once
def test_a_second_run_into_the_same_out_is_refused_while_the_first_runs(
    clip_student, tmp_path, capsys, monkeypatch
):
    first_images = write_images(tmp_path / "first", ["a.png", "b.png"])
    second_images = write_images(tmp_path / "second", ["c.png"], seed=1)
    out = tmp_path / "out"
    predict, second_run = OpenVocabularySegmenter.predict, {}

    def predict_and_start_another_run(self, image):
        if not second_run:  # the second run starts while the first is segmenting its first image
            second_run["code"] = -1
            second_run["code"] = segment(clip_student, second_images, out, "--overwrite")
            second_run["err"] = capsys.readouterr().err
        return predict(self, image)

    monkeypatch.setattr(OpenVocabularySegmenter, "predict", predict_and_start_another_run)
    assert segment(clip_student, first_images, out) == 0
    assert second_run["code"] == 2
    assert f"--out {out} is being written by another `phreg segment` run" in second_run["err"]
    record = json.loads((out / "classes.json").read_text())
    assert [entry["image"] for entry in record["outputs"]] == ["a.png", "b.png"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png", "b.png"]
    assert not (out / LOCK_FILE).exists()  # released when the run ended


def test_a_lock_left_by_a_killed_run_is_named_with_the_fix(clip_student, tmp_path, capsys):
    images = write_images(tmp_path / "images", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (out / LOCK_FILE).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    assert segment(clip_student, images, out) == 2
    assert f"is no longer running: remove {out / LOCK_FILE}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# Item 4: the decoder of every command (EXIF orientation, 16-bit grey)
def test_segment_sees_images_as_the_trainer_decodes_them(clip_student, tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    ramp = (np.arange(32 * 40, dtype=np.uint32).reshape(32, 40) * 50).astype(np.uint16)
    Image.fromarray(ramp).save(images / "grey16.png")  # mode I;16, values up to 63950
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by a quarter turn
    Image.fromarray(np.zeros((32, 40, 3), dtype=np.uint8)).save(images / "portrait.png", exif=exif)
    seen = {}
    predict = OpenVocabularySegmenter.predict

    def record(self, image):
        seen[image.size] = np.asarray(image)
        return predict(self, image)

    monkeypatch.setattr(OpenVocabularySegmenter, "predict", record)
    out = tmp_path / "out"
    assert segment(clip_student, images, out) == 0
    grey = seen[(40, 32)]
    assert np.array_equal(grey, np.asarray(open_image(images / "grey16.png")))
    assert grey.min() == 0 and 240 <= grey.max() < 255  # rescaled from 16 bits, not clipped to white
    assert (32, 40) in seen  # upright, as the pipeline and the trainer see it
    assert np.array(Image.open(out / "labels" / "portrait.png")).shape == (40, 32)


# ------------------------------------------------------------------------------------------------------------------
# Item 7: --out inside --images; --overwrite with fewer images and other classes
def test_out_equal_to_or_inside_images_is_refused(clip_student, tmp_path, capsys):
    images = write_images(tmp_path / "images", ["a.png"])
    for out in (images, images / "segmented"):
        assert segment(clip_student, images, out) == 2
        assert "segmented as images by the next run" in capsys.readouterr().err
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]


def test_overwrite_replaces_the_earlier_set_and_keeps_the_users_files(clip_student, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(clip_student, write_images(tmp_path / "two", ["a.png", "b.png"]), out) == 0
    (out / "notes.txt").write_text("mine")
    (out / "labels" / "mine.txt").write_text("mine too")
    one = write_images(tmp_path / "one", ["a.png"], seed=3)
    assert segment(clip_student, one, out, "--labels", "background; blue disc; tree") == 2
    assert "--overwrite" in capsys.readouterr().err  # nothing replaced without being asked
    argv = ["--labels", "background; blue disc; tree", "--overwrite"]
    assert segment(clip_student, one, out, *argv) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png", "mine.txt"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.png"]
    assert (out / "notes.txt").read_text() == "mine"
    record = json.loads((out / "classes.json").read_text())
    assert record["classes"] == [["background"], ["blue disc"], ["tree"]]
    assert record["outputs"] == [{"image": "a.png", "label_map": "labels/a.png", "overlay": "overlays/a.png"}]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging folder, no lock left


def test_a_failed_run_leaves_the_earlier_outputs_untouched_and_names_the_image(
    clip_student, tmp_path, capsys
):
    out = tmp_path / "out"
    images = write_images(tmp_path / "images", ["a.png", "b.png"])
    assert segment(clip_student, images, out) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    write_images(tmp_path / "images", ["a.png"], seed=5)  # new content for a.png, then a truncated b.png
    data = (images / "b.png").read_bytes()
    (images / "b.png").write_bytes(data[: len(data) // 2])
    assert segment(clip_student, images, out, "--overwrite") == 2
    assert f"{images / 'b.png'} cannot be read" in capsys.readouterr().err  # item 12: the file is named
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


# ------------------------------------------------------------------------------------------------------------------
# Item 8: non-finite numbers
def test_settings_that_cannot_give_a_label_map_are_refused(clip_student, tmp_path, capsys):
    images = write_images(tmp_path / "images", ["a.png"])
    for option, value, message in (
        ("--logit_scale", "nan", "--logit_scale must be a finite number > 0"),
        ("--logit_scale", "inf", "--logit_scale must be a finite number > 0"),
        ("--prob_threshold", "1.5", "--prob_threshold must be a probability in [0, 1]"),
        ("--prob_threshold", "-0.1", "--prob_threshold must be a probability in [0, 1]"),
    ):
        assert segment(clip_student, images, tmp_path / "out", option, value) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_with_a_nan_weight_is_refused_naming_the_weight(clip_student, tmp_path, capsys):
    def poison(state):
        state["vision_model.register_tokens"][0, 0, 0] = float("nan")
        return state

    broken = copy_with_weights(clip_student, tmp_path / "broken", poison)
    images = write_images(tmp_path / "images", ["a.png"])
    assert segment(broken, images, tmp_path / "out") == 2
    assert "the weight vision_model.register_tokens holds NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused after the claim: no label map, no empty folder


def test_the_segmenter_refuses_non_finite_features_and_settings(tiny_clip_folders):
    """What pipeline users get (no command checks their model): an error, not an all-background map."""
    processor = build_tiny_clip_processor(64)
    model = PhregCLIPModel.from_pretrained(tiny_clip_folders[1])
    settings = dict(short_side=32, crop_size=32, stride=16)
    mean, std = processor.image_processor.image_mean, processor.image_processor.image_std
    segmenter = OpenVocabularySegmenter(
        model, processor.tokenizer, mean, std, parse_labels(CLASSES), **settings
    )
    with torch.no_grad():
        model.vision_model.register_tokens.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"dense features \(maskclip\) are not finite"):
        segmenter.predict(np.zeros((32, 40, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="logit_scale must be a finite number"):
        OpenVocabularySegmenter(model, processor.tokenizer, mean, std, [["a"]], logit_scale=float("nan"))
    with pytest.raises(ValueError, match=r"prob_threshold must be a probability in \[0, 1\]"):
        OpenVocabularySegmenter(model, processor.tokenizer, mean, std, [["a"]], prob_threshold=2.0)


# ------------------------------------------------------------------------------------------------------------------
# Item 10: more than 256 classes
def test_label_maps_of_more_than_256_classes_are_16_bit():
    picture = label_image(np.array([[0, 299], [256, 1]]))
    assert picture.mode == "I;16" and np.array(picture).tolist() == [[0, 299], [256, 1]]
    assert label_image(np.zeros((2, 2), dtype=np.int64), num_classes=300).mode == "I;16"  # one depth per run
    assert label_image(np.zeros((2, 2), dtype=np.int64), num_classes=256).mode == "L"


def test_segment_with_300_classes_writes_16_bit_maps(clip_student, tmp_path, monkeypatch):
    def random_queries(model, tokenizer, classes, templates):
        """Text encoding is not what this test is about (300 x 80 prompts take a minute on a busy CPU)."""
        generator = torch.Generator().manual_seed(0)
        queries = torch.randn(len(classes), model.config.projection_dim, generator=generator)
        return torch.nn.functional.normalize(queries, dim=-1), torch.arange(len(classes))

    monkeypatch.setattr(pipeline_module, "encode_queries", random_queries)
    class_file = tmp_path / "classes.txt"
    class_file.write_text("".join(f"class {i}\n" for i in range(300)))
    images = write_images(tmp_path / "images", ["a.png", "b.png"])
    out = tmp_path / "out"
    assert segment(clip_student, images, out, "--labels_file", str(class_file)) == 0
    for name in ("a.png", "b.png"):
        label_map = Image.open(out / "labels" / name)
        assert label_map.mode == "I;16" and np.array(label_map).max() < 300


# ------------------------------------------------------------------------------------------------------------------
# Items 11, 12: clear errors instead of tracebacks and misleading messages
def test_a_truncated_weight_file_is_named(clip_student, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(clip_student, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) - 100])
    images = write_images(tmp_path / "images", ["a.png"])
    assert segment(broken, images, tmp_path / "out") == 2
    assert f"{broken / 'model.safetensors'}" in capsys.readouterr().err


def test_device_cuda_without_cuda_is_refused(clip_student, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images = write_images(tmp_path / "images", ["a.png"])
    assert segment(clip_student, images, tmp_path / "out", "--device", "cuda") == 2
    assert "--device cuda asks for a GPU" in capsys.readouterr().err
    assert segment(clip_student, images, tmp_path / "out", "--device", "gpu") == 2
    assert "--device 'gpu' is not a device torch knows" in capsys.readouterr().err


def test_a_missing_absolute_model_path_is_a_missing_folder_not_a_bad_repo_id(tmp_path, capsys):
    images = write_images(tmp_path / "images", ["a.png"])
    assert segment(tmp_path / "no" / "such" / "model", images, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"--model {tmp_path / 'no' / 'such' / 'model'} does not exist" in err and "Repo id" not in err


def test_a_clip_config_without_vision_config_is_named(tiny_clip_folders, tmp_path, capsys):
    images = write_images(tmp_path / "images", ["a.png"])
    for name, folder in zip(("base", "student"), tiny_clip_folders, strict=True):
        broken = tmp_path / name
        shutil.copytree(folder, broken)
        config = json.loads((broken / "config.json").read_text())
        del config["vision_config"]
        (broken / "config.json").write_text(json.dumps(config))
        assert segment(broken, images, tmp_path / "out") == 2
        assert "config without vision_config" in capsys.readouterr().err
