"""The denoised teacher: view sampling, the pixel/index geometry, scatter-average, and what averaging buys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from phreg_hf import student_from_base
from phreg_hf.evaluate.metrics import position_locked_energy
from phreg_hf.synthetic import artifact_patch_indices, build_planted_artifact_model
from phreg_hf.teacher import (
    DenoisingTeacher,
    TeacherViews,
    farthest_point_sampling,
    max_shifts,
    normalized_fill_value,
    render_views,
    sample_views,
    scatter_average,
    stack_views,
    view_source_indices,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WHITE = normalized_fill_value(IMAGENET_MEAN, IMAGENET_STD)


# ------------------------------------------------------------------------------------------------------------
# Views


def test_sample_views_follow_the_method():
    views = sample_views(
        16, (10, 10), num_views=10, shift_frac=0.15, generator=torch.Generator().manual_seed(0)
    )
    assert views.offsets.shape == (16, 10, 2) and views.flips.shape == (16, 10)
    assert views.offsets.dtype == torch.long and views.flips.dtype == torch.bool
    assert (views.offsets[:, 0] == 0).all() and not views.flips[:, 0].any()
    assert views.offsets.abs().max() == 2  # round(0.15 * 10) = 2, and FPS reaches the bound
    assert 0.3 < views.flips[:, 1:].float().mean() < 0.7
    # Drawn per image: not every image gets the same views.
    assert not (views.offsets == views.offsets[:1]).all()
    again = sample_views(16, (10, 10), generator=torch.Generator().manual_seed(0))
    other = sample_views(16, (10, 10), generator=torch.Generator().manual_seed(1))
    assert torch.equal(views.offsets, again.offsets) and torch.equal(views.flips, again.flips)
    assert not torch.equal(views.offsets, other.offsets)


def test_non_square_grids_get_a_shift_bound_per_axis():
    assert max_shifts((4, 20), 0.15) == (1, 3) and max_shifts((37, 37), 0.15) == (6, 6)
    views = sample_views(32, (4, 20), num_views=6, generator=torch.Generator().manual_seed(0))
    assert views.offsets[..., 0].abs().max() == 1 and views.offsets[..., 1].abs().max() == 3


def test_flip_prob_and_zero_shift_edge_cases():
    views = sample_views(4, (6, 6), num_views=5, shift_frac=0.0, flip_prob=1.0)
    assert (views.offsets == 0).all()
    assert views.flips[:, 1:].all() and not views.flips[:, 0].any()


def test_farthest_point_sampling_picks_the_farthest_points():
    candidates = torch.tensor([[[0, 1], [3, 3], [-3, -3], [1, 0], [3, -3]]])
    chosen = farthest_point_sampling(candidates, 3)
    assert chosen[0].tolist() == [[0, 0], [3, 3], [-3, -3]]
    # Vectorized over the batch without mixing rows: each row alone gives the same picks.
    pool = torch.randint(-3, 4, (64, 100, 2), generator=torch.Generator().manual_seed(0))
    spread = farthest_point_sampling(pool, 10)
    assert torch.equal(spread[5:6], farthest_point_sampling(pool[5:6], 10))
    # Spread: chosen offsets are farther apart than the same number drawn at random from the pool.
    random_pick = torch.cat([torch.zeros(64, 1, 2), pool[:, :9].float()], dim=1)

    def min_pairwise(points):
        points = points.float()
        distances = torch.cdist(points, points) + torch.eye(points.shape[1]) * 1e9
        return distances.amin(dim=(1, 2)).mean()

    assert min_pairwise(spread) > 1.5 * min_pairwise(random_pick)


# ------------------------------------------------------------------------------------------------------------
# Geometry: one mapping for pixels and patch indices


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
        # Every pixel of a view patch holds the index of the original patch it shows (or the fill).
        want = torch.where(indices[k] >= 0, indices[k].float(), torch.tensor(-7.0)).reshape(grid_h, grid_w)
        want = want.repeat_interleave(p, 0).repeat_interleave(p, 1)
        assert torch.equal(rendered[k, 0], want), k
        # Inside a patch, the ramp runs left-to-right, or right-to-left in a flipped view.
        patch = rendered[k, 1, :p, :p][0] - rendered[k, 0, :p, :p][0]
        if indices[k, 0] >= 0:
            expected_ramp = ramp.flip(0) if views.flips[0, k] else ramp
            torch.testing.assert_close(patch, expected_ramp)
    assert torch.equal(rendered[0], image[0])  # view 0 is the identity
    # Hand-checked: offset (1, -2), flipped; view patch (1, 0) shows original (0, w-1-0+2) = out of grid -> fill,
    # view patch (1, 3) shows original (0, 6-1-3+2) = (0, 4); row 0 shows row -1 = fill.
    assert indices[1, 1 * grid_w + 0] == -1 and indices[1, 1 * grid_w + 3] == 4
    assert (indices[1, :grid_w] == -1).all()


def shift_then_flip(image, dy, dx, flip, fill):
    """Independent reference: shift a `(C, H, W)` image by (dy, dx) pixels with a fill, then mirror it."""
    channels, height, width = image.shape
    margin = max(abs(dy), abs(dx))
    canvas = fill.view(channels, 1, 1).expand(channels, height + 2 * margin, width + 2 * margin).clone()
    canvas[:, margin + dy : margin + dy + height, margin + dx : margin + dx + width] = image
    shifted = canvas[:, margin : margin + height, margin : margin + width]
    return shifted.flip(-1) if flip else shifted


def test_render_views_equals_shifting_pixels_then_flipping():
    p, grid_h, grid_w = 4, 3, 5
    images = torch.randn(2, 3, grid_h * p, grid_w * p, generator=torch.Generator().manual_seed(0))
    views = sample_views(2, (grid_h, grid_w), num_views=6, shift_frac=0.5, generator=torch.Generator())
    views.offsets[1, -1] = torch.tensor([0, 7])  # shifted fully out of the image: all fill
    views.flips[:, 1] = True
    fill = torch.tensor([0.5, -1.0, 2.0])
    rendered = render_views(images, views, p, fill.tolist()).unflatten(0, (2, 6))
    for b in range(2):
        for k in range(6):
            dy, dx = (views.offsets[b, k] * p).tolist()
            want = shift_then_flip(images[b], dy, dx, bool(views.flips[b, k]), fill)
            assert torch.equal(rendered[b, k], want), (b, k)
    assert torch.equal(rendered[1, -1], fill.view(3, 1, 1).expand(3, grid_h * p, grid_w * p))


# ------------------------------------------------------------------------------------------------------------
# Scatter-average


def test_scatter_average_known_cases():
    tokens = torch.randn(2, 1, 6, 3)
    identity = torch.arange(6).repeat(2, 1, 1)
    averaged, counts = scatter_average(tokens, identity)
    assert torch.equal(averaged, tokens[:, 0]) and (counts == 1).all()
    view_tokens = torch.tensor([[[[1.0], [2.0]], [[5.0], [9.0]]]])  # (B=1, K=2, N=2, C=1)
    sources = torch.tensor([[[0, 1], [1, -1]]])
    averaged, counts = scatter_average(view_tokens, sources)
    assert averaged.flatten().tolist() == [1.0, (2.0 + 5.0) / 2] and counts.flatten().tolist() == [1.0, 2.0]


def test_scatter_average_guards_unseen_positions_and_ignores_fill_tokens():
    view_tokens = torch.tensor([[[[1.0], [float("inf")], [3.0]]]], dtype=torch.bfloat16)  # (1, 1, 3, 1)
    averaged, counts = scatter_average(view_tokens, torch.tensor([[[2, -1, 0]]]))
    assert averaged.dtype == torch.float32
    assert averaged.flatten().tolist() == [3.0, 0.0, 1.0] and counts.flatten().tolist() == [1.0, 0.0, 1.0]


# ------------------------------------------------------------------------------------------------------------
# The teacher on real models


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
    teacher = DenoisingTeacher(model, num_views=10, fill_value=WHITE)
    # Non-square (6 x 10 patches, shifts up to 1 row and 2 columns): a row/column mix-up cannot hide.
    images = torch.randn(3, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    targets, views = teacher.targets_and_views(images, generator=torch.Generator().manual_seed(0))
    assert (
        views.flips.any() and (views.offsets[..., 0] != 0).any() and (views.offsets[..., 1].abs() == 2).any()
    )
    plain = model.get_patch_tokens(images)
    assert targets.shape == plain.shape == (3, 60, 32)
    torch.testing.assert_close(targets, plain, atol=1e-5, rtol=1e-5)

    # The same computation with a wrong map no longer matches: the test can fail.
    rendered = render_views(images, views, 8, teacher.fill_value)
    tokens = model.get_patch_tokens(rendered).unflatten(0, (3, 10))
    right = view_source_indices(views, (6, 10))
    torch.testing.assert_close(scatter_average(tokens, right)[0], plain, atol=1e-5, rtol=1e-5)
    off_by_one = torch.where(right >= 0, (right + 1) % 60, right)
    flips_ignored = view_source_indices(TeacherViews(views.offsets, torch.zeros_like(views.flips)), (6, 10))
    for wrong in (off_by_one, flips_ignored):
        assert not torch.allclose(scatter_average(tokens, wrong)[0], plain, atol=1e-3)


def tiny_planted_model(model_type="dinov2"):
    """Random-init DINOv2 (hidden 32, 2 layers, 56 px, patch 8) with position-locked artifacts planted (or another
    `synthetic.SYNTHETIC_MODEL_TYPES` backbone of that size)."""
    base = build_planted_artifact_model(
        model_type, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=8
    )
    return base, student_from_base(base, 0).eval()


class CountingModel(torch.nn.Module):
    """Wraps a model and records the batch size of every `get_patch_tokens` call."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.calls = model, model.config, []

    def get_patch_tokens(self, pixel_values):
        self.calls.append(pixel_values.shape[0])
        return self.inner.get_patch_tokens(pixel_values)


def test_chunked_forward_passes_give_the_same_targets():
    _, model = tiny_planted_model()
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    views = sample_views(2, (7, 7), generator=torch.Generator().manual_seed(3))
    all_at_once_model, chunked_model = CountingModel(model), CountingModel(model)
    all_at_once = DenoisingTeacher(all_at_once_model, fill_value=WHITE)(images, views=views)
    chunked = DenoisingTeacher(chunked_model, fill_value=WHITE, max_views_per_forward=3)(images, views=views)
    assert all_at_once_model.calls == [20] and chunked_model.calls == [3] * 6 + [2]
    torch.testing.assert_close(chunked, all_at_once, atol=1e-5, rtol=1e-5)


def test_recorded_views_reproduce_the_targets_and_seeds_fix_them():
    _, model = tiny_planted_model()
    teacher = DenoisingTeacher(model, fill_value=WHITE, num_views=4)
    images = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    targets, views = teacher.targets_and_views(images, generator=torch.Generator().manual_seed(5))
    assert views.offsets.shape == (3, 4, 2) and targets.dtype == torch.float32
    assert torch.equal(teacher(images, views=views), targets)
    assert torch.equal(teacher(images, generator=torch.Generator().manual_seed(5)), targets)
    # Views drawn one image at a time and stacked (as a per-image cache does) work the same way.
    per_image = stack_views([teacher.sample_views(1, (7, 7), generator=torch.Generator()) for _ in range(3)])
    assert teacher(images, views=per_image).shape == (3, 49, 32)


def test_the_wrapped_model_is_frozen():
    _, model = tiny_planted_model()
    model.train()
    teacher = DenoisingTeacher(model, fill_value=WHITE, num_views=2)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    torch.nn.Sequential(teacher).train()  # a parent switching to training mode leaves the teacher frozen
    assert not teacher.training and not model.training
    images = torch.randn(1, 3, 56, 56, requires_grad=True)
    assert not teacher(images).requires_grad


def natural_images(size, count=16):
    """Crops of the natural images that ship with scikit-image, ImageNet-normalized, `(count, 3, size, size)`."""
    from phreg_hf.data import ImageTransform, decode_image, sample_image_paths

    transform = ImageTransform(size, IMAGENET_MEAN, IMAGENET_STD, random_crop=False)
    images = [transform(decode_image(path)) for path in sample_image_paths()[:count]]
    assert len(images) == count
    return torch.stack(images)


def cross_image_cosine(tokens, positions):
    """Mean cosine similarity between the tokens of different images (and itself) at the given positions."""
    unit = F.normalize(tokens[:, positions], dim=-1)
    return torch.einsum("bpc,dpc->pbd", unit, unit).mean().item()


# SigLIP: planted in a position table without a CLS row; DINOv3: through rotary attention (no table at all).
@pytest.mark.parametrize("model_type", ["dinov2", "siglip_vision_model", "dinov3_vit"])
def test_averaging_washes_out_planted_position_locked_artifacts(model_type):
    base, model = tiny_planted_model(model_type)
    images = natural_images(56)
    with torch.no_grad():
        raw = model.get_patch_tokens(images)
    targets = DenoisingTeacher(model, fill_value=WHITE)(images, generator=torch.Generator().manual_seed(0))
    raw_energy, target_energy = position_locked_energy(raw), position_locked_energy(targets)
    assert target_energy < 0.5 * raw_energy, (raw_energy, target_energy)
    planted = artifact_patch_indices(base)
    assert cross_image_cosine(raw, planted) > 0.8
    assert cross_image_cosine(targets, planted) < 0.5
    # The artifacts sit at the recorded positions, not next to them.
    others = [index for index in range(raw.shape[1]) if index not in planted]
    assert cross_image_cosine(raw, others) < 0.5

    # Control: with no shift and no flip every view is the identity and nothing is washed out.
    still = DenoisingTeacher(model, fill_value=WHITE, shift_frac=0.0, flip_prob=0.0)(images)
    torch.testing.assert_close(still, raw, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_views": 0}, "num_views must be an integer >= 1"),
        ({"num_views": 2.5}, "num_views must be an integer >= 1"),
        ({"shift_frac": 1.5}, r"shift_frac must be in \[0, 1\)"),
        ({"shift_frac": -0.1}, r"shift_frac must be in \[0, 1\)"),
        ({"flip_prob": 2.0}, r"flip_prob must be in \[0, 1\]"),
        ({"max_views_per_forward": 0}, "max_views_per_forward must be an integer >= 1 or None"),
        ({"fill_value": float("nan")}, "fill_value must be one finite number or one per channel"),
        ({"fill_value": []}, "fill_value must be one finite number or one per channel"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenoisingTeacher(patchwise_dinov2(), **{"fill_value": WHITE, **kwargs})


def test_fill_value_is_required_and_a_model_needs_get_patch_tokens():
    with pytest.raises(TypeError, match="fill_value"):
        DenoisingTeacher(patchwise_dinov2())
    with pytest.raises(ValueError, match="student_from_base"):
        DenoisingTeacher(torch.nn.Linear(2, 2), fill_value=WHITE)


def test_bad_images_and_views_name_the_fix():
    teacher = DenoisingTeacher(patchwise_dinov2(), fill_value=WHITE, num_views=2)
    with pytest.raises(ValueError, match="50x48 is not a multiple of the patch size 8.*48x48"):
        teacher(torch.randn(1, 3, 50, 48))
    with pytest.raises(ValueError, match=r"must be \(B, C, H, W\).*pixel_values\[None\]"):
        teacher(torch.randn(3, 48, 48))
    with pytest.raises(ValueError, match="views are for 1 images but the batch has 2"):
        teacher(torch.randn(2, 3, 48, 48), views=sample_views(1, (6, 6), num_views=2))
    with pytest.raises(ValueError, match=r"offsets \(B, K, 2\) and flips \(B, K\)"):
        teacher(
            torch.randn(1, 3, 48, 48), views=TeacherViews(torch.zeros(1, 2, 2).long(), torch.zeros(2).bool())
        )
    with pytest.raises(ValueError, match="fill_value has 3 values but the images have 1 channels"):
        render_views(torch.randn(1, 1, 8, 8), sample_views(1, (1, 1), num_views=1), 8, WHITE)
    with pytest.raises(ValueError, match="grid_size must be"):
        sample_views(1, (0, 4))
    with pytest.raises(ValueError, match=r"view_tokens must be \(B, K, N, C\)"):
        scatter_average(torch.randn(1, 2, 3, 4), torch.zeros(1, 2, 4).long())


def test_fill_value_is_white_in_normalized_space():
    np.testing.assert_allclose(np.array(WHITE) * IMAGENET_STD + IMAGENET_MEAN, 1.0)
    image = torch.zeros(1, 3, 16, 16)
    views = TeacherViews(torch.tensor([[[0, 0], [0, 2]]]), torch.tensor([[False, False]]))
    rendered = render_views(image, views, 8, WHITE)
    torch.testing.assert_close(rendered[1, :, :, :8], torch.tensor(WHITE).view(3, 1, 1).expand(3, 16, 8))
