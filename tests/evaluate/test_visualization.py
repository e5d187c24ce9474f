"""`phreg visualize`: one PNG per image with every panel, shared scales, previews for the model card, and the
errors. Uses an untrained 4-register student of the tiny planted-artifact DINOv2 (the pictures, not the
distillation, are under test here; test_evaluation measures a distilled student)."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from trainer_helpers import tiny_planted

from phreg_hf import student_from_base
from phreg_hf.constants import PREVIEWS_DIR
from phreg_hf.data import write_sample_images
from phreg_hf.distill.trainer import build_demo_image_processor
from phreg_hf.evaluate.visualization import (
    PANELS,
    VisualizeArguments,
    denormalize,
    pca_rgb,
    render_comparison,
    require_matplotlib,
    visualize,
    visualize_main,
    write_previews,
)
from phreg_hf.teacher import DenoisingTeacher, normalized_fill_value

pytest.importorskip("matplotlib")

# figsize (10.5, 7.4) inches at the default 100 dpi
PNG_SIZE = (1050, 740)
GRID = (7, 7)  # 56 px / patch 8


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("viz")
    base_model = tiny_planted()
    base_model.save_pretrained(root / "base")
    processor = build_demo_image_processor(56)
    processor.save_pretrained(root / "base")
    student = student_from_base(base_model, 4)
    student.save_pretrained(root / "student")
    images = root / "images"
    for path in write_sample_images(images, num_images=3):
        with Image.open(path) as image:
            image.thumbnail((96, 96))
            image.save(path)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG at all")
    wrapped_base = student_from_base(base_model, 0)
    teacher = DenoisingTeacher(
        wrapped_base, fill_value=normalized_fill_value(processor.image_mean, processor.image_std), num_views=3
    )
    return SimpleNamespace(
        root=root,
        base=root / "base",
        student=root / "student",
        images=images,
        base_model=wrapped_base,
        student_model=student,
        teacher=teacher,
        processor=processor,
    )


def random_tokens(seed: int, num_patches: int = 49, channels: int = 16) -> torch.Tensor:
    return torch.randn(num_patches, channels, generator=torch.Generator().manual_seed(seed))


def test_one_png_per_readable_image(models, tmp_path, capsys):
    out = tmp_path / "viz"
    argv = ["--base", models.base, "--student", models.student, "--images", models.images, "--out", out]
    assert visualize_main([str(a) for a in argv]) == 0
    readable = sorted(p.stem for p in models.images.iterdir() if p.suffix == ".png")
    assert sorted(p.stem for p in out.glob("*.png")) == readable
    for path in out.glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == PNG_SIZE
    output = capsys.readouterr().out
    assert "Wrote 3 PNGs" in output and "1 unreadable image file skipped" in output


def test_max_images_and_dpi(models, tmp_path, capsys):
    argv = ["--base", models.base, "--student", models.student, "--images", models.images, "--out", tmp_path]
    assert visualize_main([str(a) for a in argv] + ["--max_images", "1", "--dpi", "50"]) == 0
    output = capsys.readouterr().out
    assert "Wrote 1 PNGs" in output
    with Image.open(next(tmp_path.glob("*.png"))) as image:
        assert image.size == (PNG_SIZE[0] // 2, PNG_SIZE[1] // 2)


def test_figure_has_every_panel_and_shared_norm_scale():
    image = np.random.default_rng(0).random((56, 56, 3))
    base, teacher, student = random_tokens(0), random_tokens(1), random_tokens(2)
    base[10] *= 20  # a high-norm token: sets the top of the shared scale
    figure = render_comparison(image, base, teacher, student, GRID, title="tile.png")
    panels = {ax.get_label(): ax for ax in figure.axes if ax.get_label() in PANELS}
    assert list(panels) == list(PANELS)  # every panel, in reading order
    for name, ax in panels.items():
        assert len(ax.get_images()) == 1, name
    assert len(figure.axes) == len(PANELS) + 1  # plus the norm colorbar
    base_norm, student_norm = (panels[name].get_images()[0] for name in ("base_norm", "student_norm"))
    assert base_norm.get_clim() == student_norm.get_clim()  # one colour scale for both norm maps
    # In multiples of the base model's median norm: the high-norm token sets the top of the scale.
    norms = base.norm(dim=-1)
    median = float(np.median(norms.numpy()))
    assert base_norm.get_clim()[1] == pytest.approx(base[10].norm().item() / median, rel=1e-5)
    assert "x the base median norm" in figure.get_suptitle()  # stated once for the two maps
    for name in ("base_pca", "teacher_pca", "student_pca"):
        rgb = panels[name].get_images()[0].get_array()
        assert rgb.shape == (*GRID, 3) and 0.0 <= rgb.min() and rgb.max() <= 1.0
    assert "denoised teacher" in figure.get_suptitle() and "tile.png" in figure.get_suptitle()
    assert (
        "PCA fitted on base + teacher + student"
        in render_comparison(image, base, teacher, student, GRID, pca_fit_on="all").get_suptitle()
    )


@pytest.mark.parametrize("flat", [False, True])
def test_no_two_titles_overlap(flat):
    """Every text of the figure (panel titles, figure title, colorbar label) has its own space in the PNG: the two
    norm-map titles used to carry the shared scale each and ran into each other."""
    image = np.random.default_rng(0).random((56, 56, 3))
    base, teacher, student = random_tokens(0), random_tokens(1), random_tokens(2)
    if flat:
        base = student = 8 * torch.nn.functional.normalize(base, dim=-1)
    else:
        base[10] *= 20
    figure = render_comparison(image, base, teacher, student, GRID, title="camera_tile00.png")
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    texts = {"figure title": next(t for t in figure.texts if t.get_text() == figure.get_suptitle())}
    for ax in figure.axes:
        texts[f"{ax.get_label()} title"] = ax.title
        if ax.get_label() not in PANELS:
            texts["colorbar label"] = ax.yaxis.label
    boxes = {name: text.get_window_extent(renderer) for name, text in texts.items() if text.get_text()}
    assert len(boxes) == len(PANELS) + 2
    width, height = figure.canvas.get_width_height()
    names = sorted(boxes)
    for index, first in enumerate(names):
        box = boxes[first]
        assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height, f"{first} is cut off"
        for second in names[index + 1 :]:
            assert not box.overlaps(boxes[second]), f"{first!r} overlaps {second!r}"


def test_nearly_flat_norms_are_drawn_flat_and_say_so():
    """Norms of 8 +- 1e-4 must not fill the colour range (they would read as structure), nor hide behind an
    offset on the colorbar."""
    image = np.zeros((56, 56, 3))
    directions = torch.nn.functional.normalize(random_tokens(5), dim=-1)
    wobble = 1 + 1e-5 * torch.randn(49, 1, generator=torch.Generator().manual_seed(6))
    base, student = 8 * directions * wobble, 8 * directions.flip(0) * wobble
    figure = render_comparison(image, base, random_tokens(7), student, GRID)
    panels = {ax.get_label(): ax for ax in figure.axes if ax.get_label() in PANELS}
    low, high = panels["base_norm"].get_images()[0].get_clim()
    assert high - low == pytest.approx(0.05) and low < 1.0 < high  # 5 % of the median, centred on the norms
    assert re.search(
        r"flat, all within 0\.00\d+ % of the base median 8 \(drawn on a 5 % range\)", figure.get_suptitle()
    )
    assert "(flat)" in panels["base_norm"].get_title()
    colorbar = next(ax for ax in figure.axes if ax.get_label() not in PANELS)
    figure.canvas.draw()
    assert colorbar.yaxis.get_major_formatter().get_offset() == ""  # no "+8" offset hiding the scale
    assert "base median norm (8" in colorbar.get_ylabel()


def test_pca_colours_are_shared_between_feature_sets():
    teacher = random_tokens(3)
    colours = pca_rgb(
        {"teacher": teacher, "copy": teacher.clone(), "other": random_tokens(4)}, ["teacher"], GRID
    )
    np.testing.assert_array_equal(colours["teacher"], colours["copy"])  # same features, same colours
    assert not np.allclose(colours["teacher"], colours["other"])
    # The fitted set spans the colour range (1st..99th percentile mapped to 0..1).
    assert colours["teacher"].min() == 0.0 and colours["teacher"].max() == 1.0
    again = pca_rgb({"teacher": teacher}, ["teacher"], GRID)["teacher"]
    np.testing.assert_array_equal(again, colours["teacher"])  # component signs fixed: reruns agree


def test_write_previews_for_the_model_card(models, tmp_path):
    from phreg_hf.data import ImageTransform

    transform = ImageTransform.from_image_processor(models.processor, 56, random_crop=False)
    pixel_values = torch.stack(
        [transform(Image.open(p).convert("RGB")) for p in sorted(models.images.glob("*.png"))]
    )
    paths = write_previews(
        tmp_path,
        models.base_model,
        models.student_model,
        models.teacher,
        pixel_values,
        models.processor.image_mean,
        models.processor.image_std,
        names=["a.jpg", "b/c.png", "d.png"],
        max_images=2,
    )
    assert [p.name for p in paths] == ["a.png", "b_c.png"]
    assert sorted((tmp_path / PREVIEWS_DIR).glob("*.png")) == sorted(paths)
    # The input panel shows the crop the models saw: normalization undone.
    restored = denormalize(pixel_values[:1], models.processor.image_mean, models.processor.image_std)[0]
    assert restored.shape == (56, 56, 3) and 0.0 <= restored.min() and restored.max() <= 1.0


def test_visualize_errors(models, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="--images"):
        visualize(
            VisualizeArguments(
                base=str(models.base),
                student=str(models.student),
                images=str(tmp_path / "no"),
                out=str(tmp_path),
            )
        )
    argv = [
        "--base",
        models.base,
        "--student",
        models.student,
        "--images",
        tmp_path / "no",
        "--out",
        tmp_path,
    ]
    assert visualize_main([str(a) for a in argv]) == 2
    assert "phreg visualize: error:" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pca_fit_on"):
        render_comparison(
            np.zeros((56, 56, 3)), *(random_tokens(i) for i in range(3)), GRID, pca_fit_on="base"
        )


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'phreg-hf\[viz\]'"):
        require_matplotlib()


def test_png_names_are_unique_and_safe():
    from phreg_hf.evaluate.visualization import png_names

    assert png_names(["a.jpg", "a.png", "sub dir/x?.webp"]) == ["a.png", "a_1.png", "sub_dir_x_.png"]


def test_help_lists_every_option(capsys):
    import dataclasses

    assert visualize_main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in dataclasses.fields(VisualizeArguments):
        assert f"--{option.name}" in text and option.metadata.get("help"), option.name
    assert "(default: teacher)" in text
