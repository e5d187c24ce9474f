"""The denoised teacher: view sampling, the pixel/index geometry, scatter-average, and what averaging buys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from phreg_hf import student_from_base
from phreg_hf.metrics import position_locked_energy
from phreg_hf.synthetic import artifact_patch_indices, build_planted_artifact_model
from phreg_hf.teacher import (
    DenoisingTeacher,
    TeacherViews,
    farthest_point_sampling,
    normalized_fill_value,
    render_views,
    sample_views,
    scatter_average,
    view_source_indices,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_sample_views_follow_the_method():
    views = sample_views(
        16, (10, 10), num_views=10, shift_frac=0.15, generator=torch.Generator().manual_seed(0)
    )
    assert views.offsets.shape == (16, 10, 2) and views.flips.shape == (16, 10)
    assert (views.offsets[:, 0] == 0).all() and not views.flips[:, 0].any()
    assert views.offsets.abs().max() <= 2 and views.offsets.abs().max() == 2  # round(0.15 * 10) = 2
    assert 0.3 < views.flips[:, 1:].float().mean() < 0.7
    again = sample_views(16, (10, 10), generator=torch.Generator().manual_seed(0))
    other = sample_views(16, (10, 10), generator=torch.Generator().manual_seed(1))
    assert torch.equal(views.offsets, again.offsets) and torch.equal(views.flips, again.flips)
    assert not torch.equal(views.offsets, other.offsets)


def test_non_square_grids_get_a_shift_bound_per_axis():
    views = sample_views(32, (4, 20), num_views=6, generator=torch.Generator().manual_seed(0))
    assert views.offsets[..., 0].abs().max() <= 1 and views.offsets[..., 1].abs().max() == 3


def test_farthest_point_sampling_picks_the_farthest_points():
    candidates = torch.tensor([[[0, 1], [3, 3], [-3, -3], [1, 0], [3, -3]]])
    chosen = farthest_point_sampling(candidates, 3)
    assert chosen[0].tolist() == [[0, 0], [3, 3], [-3, -3]]
    # Spread: chosen offsets are farther apart than the same number drawn at random from the pool.
    pool = torch.randint(-3, 4, (64, 100, 2), generator=torch.Generator().manual_seed(0))
    spread = farthest_point_sampling(pool, 10).float()
    random_pick = torch.cat([torch.zeros(64, 1, 2), pool[:, :9].float()], dim=1)

    def min_pairwise(points):
        distances = torch.cdist(points, points) + torch.eye(points.shape[1]) * 1e9
        return distances.amin(dim=(1, 2)).mean()

    assert min_pairwise(spread) > 1.5 * min_pairwise(random_pick)


def index_image(grid_h, grid_w, patch_size):
    """A 3-channel image whose every patch holds its own flat index, plus a left-right ramp inside the patch."""
    index = torch.arange(grid_h * grid_w, dtype=torch.float32).reshape(grid_h, grid_w)
    image = index.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    ramp = (torch.arange(patch_size, dtype=torch.float32) / 100).repeat(grid_w)
    return torch.stack([image, image + ramp, -image])[None]


def test_rendered_pixels_show_exactly_the_indexed_patches():
    grid_h, grid_w, p = 5, 6, 4
    image = index_image(grid_h, grid_w, p)
    views = TeacherViews(
        offsets=torch.tensor([[[0, 0], [1, -2], [-2, 1], [2, 2]]]),
        flips=torch.tensor([[False, True, False, True]]),
    )
    rendered = render_views(image, views, p, fill_value=(-7.0, -7.0, -7.0))
    indices = view_source_indices(views, (grid_h, grid_w))[0]
    ramp = torch.arange(p, dtype=torch.float32) / 100
    for k in range(4):
        shown = rendered[k, 0, ::p, ::p].flatten()  # top-left pixel of every view patch
        want = torch.where(indices[k] >= 0, indices[k].float(), torch.tensor(-7.0))
        assert torch.equal(shown, want), k
        # Inside a patch, the ramp runs left-to-right, or right-to-left in a flipped view.
        patch = rendered[k, 1, :p, :p][0] - rendered[k, 0, :p, :p][0]
        if indices[k, 0] >= 0:
            expected_ramp = ramp.flip(0) if views.flips[0, k] else ramp
            torch.testing.assert_close(patch, expected_ramp)
    assert torch.equal(rendered[0], image[0])  # view 0 is the identity
    # Hand-checked: offset (1, -2), flipped; view patch (1, 0) shows original (0, w-1-0+2) = out of grid -> fill,
    # view patch (1, 3) shows original (0, 6-1-3+2) = (0, 4).
    assert indices[1, 1 * grid_w + 0] == -1 and indices[1, 1 * grid_w + 3] == 4


def test_scatter_average_known_cases():
    tokens = torch.randn(2, 1, 6, 3)
    identity = torch.arange(6).repeat(2, 1, 1)
    averaged, counts = scatter_average(tokens, identity)
    assert torch.equal(averaged, tokens[:, 0]) and (counts == 1).all()
    view_tokens = torch.tensor([[[[1.0], [2.0]], [[5.0], [9.0]]]])  # (B=1, K=2, N=2, C=1)
    sources = torch.tensor([[[0, 1], [1, -1]]])
    averaged, counts = scatter_average(view_tokens, sources)
    assert averaged.flatten().tolist() == [1.0, (2.0 + 5.0) / 2] and counts.flatten().tolist() == [1.0, 2.0]


def patchwise_dinov2(seed=0):
    """A DINOv2 whose output at a patch depends only on that patch, and equally on the patch and its mirror.

    No transformer layers, zero position embeddings, horizontally symmetric patch-embedding kernels: the final
    norm of the patch embedding. Any error in where a view token is scattered back shows as a mismatch.
    """
    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=0, num_attention_heads=2, image_size=48, patch_size=8
    )
    base = Dinov2Model(config).eval()
    with torch.no_grad():
        base.embeddings.position_embeddings.zero_()
        weight = base.embeddings.patch_embeddings.projection.weight
        weight.copy_((weight + weight.flip(-1)) / 2)
    return student_from_base(base, 0).eval()


def test_targets_equal_the_plain_output_for_a_patchwise_model():
    model = patchwise_dinov2()
    teacher = DenoisingTeacher(
        model, num_views=10, fill_value=normalized_fill_value(IMAGENET_MEAN, IMAGENET_STD)
    )
    images = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    targets, views = teacher.targets_and_views(images, generator=torch.Generator().manual_seed(0))
    assert views.flips.any() and (views.offsets != 0).any()
    plain = model.get_patch_tokens(images)
    torch.testing.assert_close(targets, plain, atol=1e-5, rtol=1e-5)

    # The same computation with the source indices off by one patch no longer matches: the test can fail.
    rendered = render_views(images, views, 8, teacher.fill_value)
    tokens = model.get_patch_tokens(rendered).unflatten(0, (3, 10))
    wrong = view_source_indices(views, (6, 6))
    wrong = torch.where(wrong >= 0, (wrong + 1) % 36, wrong)
    assert not torch.allclose(scatter_average(tokens, wrong)[0], plain, atol=1e-3)


def test_chunked_forward_passes_give_the_same_targets():
    model = student_from_base(
        build_planted_artifact_model(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=8
        ),
        0,
    )
    images = torch.randn(2, 3, 56, 56)
    views = DenoisingTeacher(model).sample_views(2, (7, 7), generator=torch.Generator().manual_seed(3))
    all_at_once = DenoisingTeacher(model)(images, views=views)
    chunked = DenoisingTeacher(model, max_views_per_forward=3)(images, views=views)
    torch.testing.assert_close(chunked, all_at_once, atol=1e-5, rtol=1e-5)


def natural_images(size, count=16):
    """Crops of the natural images that ship with scikit-image, ImageNet-normalized, `(count, 3, size, size)`."""
    from phreg_hf.data import ImageTransform, decode_image, sample_image_paths

    transform = ImageTransform(size, IMAGENET_MEAN, IMAGENET_STD, random_crop=False)
    images = [transform(decode_image(path)) for path in sample_image_paths()[:count]]
    return torch.stack(images)


def test_averaging_washes_out_planted_position_locked_artifacts():
    base = build_planted_artifact_model(image_size=112, patch_size=14)
    model = student_from_base(base, 0).eval()
    images = natural_images(112)
    teacher = DenoisingTeacher(
        model, num_views=10, fill_value=normalized_fill_value(IMAGENET_MEAN, IMAGENET_STD)
    )
    with torch.no_grad():
        raw = model.get_patch_tokens(images)
    targets = teacher(images, generator=torch.Generator().manual_seed(0))
    raw_energy, target_energy = position_locked_energy(raw), position_locked_energy(targets)
    assert target_energy < 0.5 * raw_energy, (raw_energy, target_energy)

    def cross_image_cosine(tokens, positions):
        unit = torch.nn.functional.normalize(tokens[:, positions], dim=-1)
        return torch.einsum("bpc,dpc->pbd", unit, unit).mean().item()

    planted = artifact_patch_indices(base)
    assert cross_image_cosine(raw, planted) > 0.8
    assert cross_image_cosine(targets, planted) < cross_image_cosine(raw, planted) - 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_views": 0}, "num_views must be an integer >= 1"),
        ({"shift_frac": 1.5}, r"shift_frac must be in \[0, 1\)"),
        ({"flip_prob": 2.0}, r"flip_prob must be in \[0, 1\]"),
        ({"max_views_per_forward": 0}, "max_views_per_forward must be >= 1"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenoisingTeacher(patchwise_dinov2(), **kwargs)


def test_bad_image_size_names_the_sizes_that_work():
    with pytest.raises(ValueError, match="50x48 is not a multiple of the patch size 8.*48x48"):
        DenoisingTeacher(patchwise_dinov2())(torch.randn(1, 3, 50, 48))


def test_fill_value_is_white_in_normalized_space():
    fill = normalized_fill_value(IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(np.array(fill) * IMAGENET_STD + IMAGENET_MEAN, 1.0)
