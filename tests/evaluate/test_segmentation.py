"""Open-vocabulary segmentation: prompt ensemble, sliding window, synonyms, threshold, pipeline, `phreg segment`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_base, run_without_phreg
from PIL import Image
from transformers import pipeline

from phreg_hf import PhregCLIPModel
from phreg_hf.cli import main as phreg_main
from phreg_hf.data import open_image
from phreg_hf.evaluate.segmentation import save_pretrained_with_pipeline
from phreg_hf.models.pipeline_phreg_segmentation import (
    OPENAI_IMAGENET_TEMPLATES,
    PIPELINE_TASK,
    OpenVocabularySegmenter,
    encode_queries,
    parse_labels,
    read_class_file,
)
from phreg_hf.synthetic_clip import (
    build_tiny_clip_processor,
    build_tiny_clip_tokenizer,
    save_planted_artifact_clip,
    write_synthetic_segmentation_set,
)

CLASSES = "background; red square; blue disc, blue circle"
SMALL = dict(short_side=64, crop_size=48, stride=16)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    save_planted_artifact_clip(folder, image_size=64, patch_size=8)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_segmentation_set(tmp_path_factory.mktemp("data"), num_images=2)


def segmenter(base_dir, **settings) -> OpenVocabularySegmenter:
    processor = build_tiny_clip_processor(64)
    model = PhregCLIPModel.from_base(str(base_dir), 0)
    options = {**SMALL, **settings}
    return OpenVocabularySegmenter(
        model,
        processor.tokenizer,
        processor.image_processor.image_mean,
        processor.image_processor.image_std,
        parse_labels(options.pop("labels", CLASSES)),
        **options,
    )


def test_templates_and_label_parsing(tmp_path):
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 == len(set(OPENAI_IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    assert parse_labels(CLASSES) == [["background"], ["red square"], ["blue disc", "blue circle"]]
    with pytest.raises(ValueError, match="No class names"):
        parse_labels("  ")
    with pytest.raises(ValueError, match="Class 1 .* empty name"):
        parse_labels("background;; cat")
    (tmp_path / "ok.txt").write_text("background\ndog, puppy\n")
    assert read_class_file(tmp_path / "ok.txt") == [["background"], ["dog", "puppy"]]
    (tmp_path / "bad.txt").write_text("background\n\ncat\n")
    with pytest.raises(ValueError, match="Line 2 of the class file .* is empty"):
        read_class_file(tmp_path / "bad.txt")


def test_prompt_ensemble_is_normalised_mean_of_normalised_prompts(base_dir):
    model = PhregCLIPModel.from_base(str(base_dir), 0)
    tokenizer = build_tiny_clip_tokenizer()
    queries, owners = encode_queries(model, tokenizer, [["cat"], ["dog", "puppy"]])
    assert owners.tolist() == [0, 1, 1]
    with torch.no_grad():
        tokens = tokenizer(
            [t.format("puppy") for t in OPENAI_IMAGENET_TEMPLATES], padding=True, return_tensors="pt"
        )
        prompts = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    torch.testing.assert_close(queries[2], F.normalize(prompts.mean(0), dim=0))


@pytest.mark.parametrize("rules", ["default", "reference"])
def test_sliding_window_equals_single_pass_when_the_crop_covers_the_image(base_dir, data, rules):
    image = Image.open(next(data[0].iterdir()))
    extra = {"resize": "reference", "position_interpolation": "reference"} if rules == "reference" else {}
    single = segmenter(base_dir, crop_size=None, **extra)
    covering = segmenter(base_dir, crop_size=1000, **extra)
    pixel_values, _ = single.prepare(image)
    torch.testing.assert_close(covering.logits(pixel_values), single.logits(pixel_values))
    sliding = segmenter(base_dir, **extra).logits(
        pixel_values
    )  # 48-pixel windows: a different, valid average
    assert sliding.shape == single.logits(pixel_values).shape
    assert not torch.allclose(sliding, single.logits(pixel_values))


def test_sliding_window_averages_overlapping_crops(base_dir):
    """A 64 x 80 image, crop 48, stride 16: every pixel's logits are the mean of the crops covering it."""
    seg = segmenter(base_dir, short_side=None)
    pixel_values = torch.randn(3, 64, 80)
    got = seg.logits(pixel_values)
    total, count = torch.zeros_like(got), torch.zeros(1, 64, 80)
    for y in (0, 16):
        for x in (0, 16, 32):
            total[:, y : y + 48, x : x + 48] += seg._crop_logits(
                pixel_values[None, :, y : y + 48, x : x + 48]
            )[0]
            count[:, y : y + 48, x : x + 48] += 1
    torch.testing.assert_close(got, total / count)


def test_synonyms_take_the_max_and_low_confidence_goes_to_background(base_dir):
    seg = segmenter(base_dir, logit_scale=1.0)
    assert seg.query_classes.tolist() == [0, 1, 2, 2]
    logits = torch.tensor([0.0, 1.0, 3.0, 2.0]).view(4, 1, 1).expand(4, 2, 2).clone()
    result = seg.classify(logits)
    probabilities = torch.softmax(logits[:, 0, 0], dim=0)
    assert result.class_probabilities[:, 0, 0].tolist() == pytest.approx(
        [probabilities[0].item(), probabilities[1].item(), probabilities[2].item()]
    )
    assert (result.label_map == 2).all()
    seg.prob_threshold = 0.9  # the best class has ~0.64: every pixel goes to background
    assert (seg.classify(logits).label_map == 0).all()


def test_pipeline_on_a_base_clip_and_with_remote_code_only(base_dir, data, tmp_path):
    image = Image.open(next(data[0].iterdir()))
    pipe = pipeline(
        PIPELINE_TASK, model=str(base_dir)
    )  # a stock CLIPModel folder (import phreg_hf registered it)
    outputs = pipe(image, candidate_labels=CLASSES, mode="naclip", **SMALL)
    assert {o["label"] for o in outputs} <= {"background", "red square", "blue disc"}
    masks = np.stack([np.array(o["mask"]) for o in outputs])
    assert masks.shape[1:] == (image.height, image.width) and (masks.sum(0) == 255).all()
    want = segmenter(base_dir, mode="naclip").predict(image).label_map
    first = next(o for o in outputs)
    label = ["background", "red square", "blue disc"].index(first["label"])
    assert np.array_equal(np.array(first["mask"]) == 255, (want == label).numpy())

    student = PhregCLIPModel.from_base(str(base_dir), 2)
    save_pretrained_with_pipeline(student, tmp_path / "student", build_tiny_clip_processor(64))
    image.save(tmp_path / "image.png")
    result = run_without_phreg(
        f"""
        from PIL import Image
        from transformers import pipeline
        pipe = pipeline(model="student", trust_remote_code=True)
        outputs = pipe(Image.open("image.png"), candidate_labels={CLASSES!r}, short_side=64, crop_size=48, stride=16)
        print(type(pipe).__name__, sorted(o["label"] for o in outputs), outputs[0]["mask"].size)
        """,
        cwd=str(tmp_path),
    )
    assert "PhregSegmentationPipeline" in result.stdout and "(96, 72)" in result.stdout


def test_pipeline_sees_16_bit_grey_and_exif_as_the_commands_do(base_dir, tmp_path, monkeypatch):
    ramp = (np.arange(32 * 40, dtype=np.uint32).reshape(32, 40) * 50).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")  # mode I;16, values up to 63950
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by a quarter turn
    Image.fromarray(np.zeros((32, 40, 3), dtype=np.uint8)).save(tmp_path / "portrait.png", exif=exif)
    seen = []
    predict = OpenVocabularySegmenter.predict

    def record(self, image):
        seen.append(np.asarray(image))
        return predict(self, image)

    monkeypatch.setattr(OpenVocabularySegmenter, "predict", record)
    pipe = pipeline(PIPELINE_TASK, model=str(base_dir))
    grey16 = tmp_path / "grey16.png"
    for image in (str(grey16), grey16, Image.open(grey16), str(tmp_path / "portrait.png")):
        pipe(image, candidate_labels=CLASSES, **SMALL)
    want = np.asarray(open_image(grey16))
    assert want.min() == 0 and 240 <= want.max() < 255  # rescaled from 16 bits, not clipped to white
    for got in seen[:3]:
        assert np.array_equal(got, want)
    assert seen[3].shape == (40, 32, 3)  # upright


def test_phreg_segment_cli(base_dir, data, tmp_path, capsys):
    images, _, class_file = data
    out = tmp_path / "out"
    argv = [
        "segment",
        "--model",
        str(base_dir),
        "--images",
        str(images),
        "--out",
        str(out),
        "--short_side",
        "64",
    ]
    argv += ["--crop_size", "48", "--stride", "16"]
    assert phreg_main(argv + ["--labels_file", str(class_file)]) == 0
    assert "Segmented 2 images" in capsys.readouterr().out
    for path in images.iterdir():
        labels = np.array(Image.open(out / "labels" / path.name))
        assert labels.shape == (72, 96) and labels.max() < 3
        overlay = Image.open(out / "overlays" / path.name)
        assert overlay.height == 72 and overlay.width > 96  # the legend sits beside the image
    # never overwrite without being asked; clear errors for bad input
    assert phreg_main(argv + ["--labels", CLASSES]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert phreg_main(argv + ["--labels", CLASSES, "--overwrite"]) == 0
    assert phreg_main(argv[:-4] + ["--out", str(tmp_path / "o2")]) == 2
    assert "Pass exactly one of --labels" in capsys.readouterr().err
    make_base("dinov2").save_pretrained(tmp_path / "dino")
    argv_dino = [
        "segment",
        "--model",
        str(tmp_path / "dino"),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "o3"),
    ]
    assert phreg_main(argv_dino + ["--labels", CLASSES]) == 2
    assert "full CLIP model" in capsys.readouterr().err
