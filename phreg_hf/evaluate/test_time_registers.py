# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Finding register neurons for test-time registers (Jiang et al. 2025, arXiv 2506.08010).

The search follows `find_register_neurons` in `shared/algorithms.py` of `nickjiang2378/test-time-registers`: for
each image, the outlier tokens are those whose norm at the output of block `detect_outliers_layer` exceeds
`norm_threshold`; each MLP neuron of every block is scored by its mean absolute activation at those tokens; the
scores are averaged over the images that have outliers, ranked over all (layer, neuron) pairs, and the `top_k`
best in blocks up to `highest_layer` are kept (`register_neurons.ipynb`, `filter_layers` then `[:top_k]`).
One deviation: outliers are looked for among the image patches only (the repository's norm map also covers the
class token, which is never an artifact the method moves).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ..models.configuration_phreg_ttr import TTR_BASE_MODEL_TYPES, PhregTestTimeRegistersConfig, mlp_width
from ..models.modeling_phreg_ttr import mlp_output_projection, num_prefix_tokens, transformer_blocks

# Defaults of `find_register_neurons` in shared/algorithms.py (register_norm_threshold=30, detect_outliers_layer=-1)
# and of configs/openclip_base.yaml (top_k=10). The published DINOv2-L setting (configs/dinov2_large.yaml) is
# detect_outliers_layer=-2, register_norm_threshold=150, highest_layer=17, top_k=50.
DEFAULT_NORM_THRESHOLD = 30.0
DEFAULT_DETECT_OUTLIERS_LAYER = -1
DEFAULT_TOP_K = 10
# register_neurons.ipynb runs the search on 100 images (processed_image_cnt=100); fewer is refused.
DEFAULT_MIN_IMAGES = 100
# The published search runs on about 1000 images (the paper); more than that adds little and costs a pass each.
DEFAULT_MAX_IMAGES = 1000
PUBLISHED_SETTINGS = {
    "facebook/dinov2-large": dict(detect_outliers_layer=-2, norm_threshold=150.0, highest_layer=17, top_k=50),
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K": dict(
        detect_outliers_layer=-1, norm_threshold=30.0, highest_layer=5, top_k=10
    ),
}


@torch.no_grad()
def find_register_neurons(
    model: torch.nn.Module,
    images: Iterable[torch.Tensor],
    norm_threshold: float = DEFAULT_NORM_THRESHOLD,
    detect_outliers_layer: int = DEFAULT_DETECT_OUTLIERS_LAYER,
    top_k: int = DEFAULT_TOP_K,
    highest_layer: int | None = None,
    min_images: int = DEFAULT_MIN_IMAGES,
    progress: bool = False,
) -> tuple[dict[int, list[int]], dict]:
    """Find register neurons of a stock model.

    Args:
        model: a transformers DINOv2 / DINOv2-with-registers / ViT / CLIP vision / full CLIP model.
        images: batches of normalized pixel values, each `(B, 3, H, W)`.
        norm_threshold: a patch whose norm at block `detect_outliers_layer` exceeds it is an outlier.
        top_k: how many (layer, neuron) pairs to keep; highest_layer: the last block they may come from (None:
            all blocks).
        min_images: refuse fewer images than this.

    Returns:
        (`{layer: [neuron, ...]}`, settings and scores for the record).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in TTR_BASE_MODEL_TYPES:
        raise ValueError(
            f"find_register_neurons supports base model types {list(TTR_BASE_MODEL_TYPES)}, got {model_type!r} "
            f"({type(model).__name__})."
        )
    blocks = transformer_blocks(model)
    vision_config = getattr(model.config, "vision_config", None) or model.config
    num_layers, num_neurons = len(blocks), mlp_width(vision_config)
    if not -num_layers <= detect_outliers_layer < num_layers:
        raise ValueError(
            f"detect_outliers_layer={detect_outliers_layer} is outside this model's {num_layers} blocks."
        )
    if highest_layer is not None and not 0 <= highest_layer < num_layers:
        raise ValueError(f"highest_layer={highest_layer} is outside this model's blocks 0..{num_layers - 1}.")
    start = num_prefix_tokens(model)
    activations: dict[int, torch.Tensor] = {}
    block_outputs: dict[int, torch.Tensor] = {}
    handles = []
    for layer, block in enumerate(blocks):
        handles.append(
            mlp_output_projection(block).register_forward_pre_hook(
                lambda module, inputs, layer=layer: activations.__setitem__(layer, inputs[0].detach())
            )
        )
        handles.append(
            block.register_forward_hook(
                lambda module, inputs, output, layer=layer: block_outputs.__setitem__(
                    layer, (output[0] if isinstance(output, tuple) else output).detach()
                )
            )
        )
    tower = model.vision_model if model_type == "clip" else model
    score_sum = torch.zeros(num_layers, num_neurons, dtype=torch.float64)
    seen = with_outliers = 0
    try:
        iterator = images
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(images, desc="register neurons", unit="batch")
        for pixel_values in iterator:
            tower(pixel_values=pixel_values)
            norms = block_outputs[detect_outliers_layer % num_layers][:, start:].norm(dim=-1)  # (B, h*w)
            for b in range(pixel_values.shape[0]):
                seen += 1
                outliers = (norms[b] > norm_threshold).nonzero().squeeze(1) + start
                if outliers.numel() == 0:
                    continue
                with_outliers += 1
                for layer in range(num_layers):
                    score_sum[layer] += activations[layer][b, outliers].abs().mean(dim=0).double().cpu()
    finally:
        for handle in handles:
            handle.remove()
    if seen < min_images:
        raise ValueError(
            f"find_register_neurons got {seen} images, fewer than min_images={min_images} (the published search "
            "uses 100 to 1000). Pass more images, or lower min_images."
        )
    if with_outliers == 0:
        raise ValueError(
            f"No patch of the {seen} images has a norm above norm_threshold={norm_threshold} at block "
            f"{detect_outliers_layer}: lower the threshold (it depends on the model's scale) or use more images."
        )
    scores = score_sum / with_outliers
    last = num_layers - 1 if highest_layer is None else highest_layer
    ranked = scores[: last + 1].flatten().argsort(descending=True)[:top_k]
    neurons: dict[int, list[int]] = {}
    for flat in ranked.tolist():
        neurons.setdefault(flat // num_neurons, []).append(flat % num_neurons)
    settings = dict(
        method="test-time registers (Jiang et al. 2025, arXiv 2506.08010)",
        norm_threshold=float(norm_threshold),
        detect_outliers_layer=int(detect_outliers_layer),
        top_k=int(top_k),
        highest_layer=highest_layer,
        num_images=seen,
        num_images_with_outliers=with_outliers,
    )
    return dict(sorted(neurons.items())), settings


def load_test_time_registers(
    folder: str | os.PathLike, base_model: torch.nn.Module, base: str
) -> torch.nn.Module:
    """The test-time-registers model saved in `folder` (float32, eval mode), or an error naming the folder: it
    is missing, is another kind of model, or was not made from `base_model` (its weights differ).

    Args:
        folder: a `phreg test-time-registers --out` folder (or `save_pretrained` of the model).
        base_model: the base the comparison runs on (a stock model or a 0-register student of it).
        base: how the user named the base (for messages).
    """
    from ..file_checks import check_local_weights
    from ..models.modeling_phreg_ttr import PhregTestTimeRegistersModel, vision_tower

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"--test_time_registers {folder} has no config.json; pass the --out folder of `phreg test-time-registers`."
        )
    model_type = saved_model_type(folder)
    if model_type != PhregTestTimeRegistersConfig.model_type:
        raise ValueError(
            f"--test_time_registers {folder} holds a '{model_type}' model, not a test-time-registers model; make one "
            f"with `phreg test-time-registers --base {base} --images DIR --out DIR`."
        )
    check_local_weights(folder)
    model = PhregTestTimeRegistersModel.from_pretrained(folder).float().eval()

    def stripped(state: dict) -> dict:
        return {key.removeprefix("vision_model."): value for key, value in state.items()}

    tower, reference = stripped(vision_tower(model.model).state_dict()), stripped(base_model.state_dict())
    differing = [
        key
        for key, value in tower.items()
        if key not in reference
        or reference[key].shape != value.shape
        or not torch.equal(reference[key].cpu(), value)
    ]
    if differing:
        raise ValueError(
            f"--test_time_registers {folder} was not made from --base {base}: {len(differing)} of its weights differ "
            f"(e.g. {differing[0]}). Make it from this base: `phreg test-time-registers --base {base} ...`."
        )
    return model


def saved_model_type(folder: str | os.PathLike) -> str | None:
    """The `model_type` of `folder/config.json`, or None when there is no such file or it is not a JSON object."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def build_test_time_registers(
    base: str,
    images: str | os.PathLike,
    *,
    processor=None,
    base_revision: str | None = None,
    device: str | torch.device | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    min_images: int = DEFAULT_MIN_IMAGES,
    norm_threshold: float = DEFAULT_NORM_THRESHOLD,
    detect_outliers_layer: int = DEFAULT_DETECT_OUTLIERS_LAYER,
    top_k: int = DEFAULT_TOP_K,
    highest_layer: int | None = None,
    resolution: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
):
    """The test-time-registers model of `base` (a Hub id or folder), its register neurons found on the folder
    `images`, built in memory (float32, eval mode, on CPU): what `phreg test-time-registers` saves.

    A fresh copy of the base is loaded, as `from_base` hooks the modules of the model it wraps.

    Args:
        processor: the image processor the images go through (default: the base's own).
        max_images: use at most this many readable images (sorted order); 0 for all.
        resolution: side of the center crop (default: the processor's crop size, else the model's image size).
        min_images, norm_threshold, detect_outliers_layer, top_k, highest_layer: see `find_register_neurons`.

    Returns:
        `(model, neurons, settings)`: the settings of the search (as recorded in the model's config) plus
        `num_skipped`, the unreadable files left out.
    """
    from transformers import AutoImageProcessor, AutoModel

    from ..data import ImageTransform, load_images
    from ..models.modeling_phreg_ttr import PhregTestTimeRegistersModel
    from .model_checks import check_finite_weights, check_resolution, default_resolution, resolve_device

    for name, value in (("batch_size", batch_size), ("top_k", top_k), ("min_images", min_images)):
        if value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}.")
    stock = AutoModel.from_pretrained(base, revision=base_revision).float().eval()
    model_type = getattr(stock.config, "model_type", None)
    if model_type not in TTR_BASE_MODEL_TYPES:
        raise ValueError(
            f"--base {base} is a '{model_type}' model; test-time registers support {list(TTR_BASE_MODEL_TYPES)}."
        )
    check_finite_weights(stock, "--base", base)
    if processor is None:
        processor = AutoImageProcessor.from_pretrained(base, revision=base_revision)
    vision_config = getattr(stock.config, "vision_config", None) or stock.config
    resolution = resolution or default_resolution(processor, vision_config)
    check_resolution(resolution, vision_config.patch_size)
    transform = ImageTransform.from_image_processor(processor, resolution, random_crop=False)
    loaded = load_images(images, transform, max_images or None)
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    stock.to(device)
    batches = (batch.to(device) for batch in loaded.pixel_values.split(batch_size))
    neurons, settings = find_register_neurons(
        stock,
        batches,
        norm_threshold=norm_threshold,
        detect_outliers_layer=detect_outliers_layer,
        top_k=top_k,
        highest_layer=highest_layer,
        min_images=min_images,
        progress=progress,
    )
    settings = {**settings, "base": base, "images": str(images), "resolution": resolution}
    model = PhregTestTimeRegistersModel.from_base(stock.cpu(), neurons, search_settings=settings).eval()
    return model, neurons, {**settings, "num_skipped": loaded.num_skipped}


def format_register_neurons(neurons: dict[int, list[int]]) -> list[str]:
    """One line per block: `  block  3: 12, 40`."""
    return [f"  block {layer:>2}: {', '.join(str(i) for i in ids)}" for layer, ids in neurons.items()]


__all__ = [
    "DEFAULT_DETECT_OUTLIERS_LAYER",
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_MIN_IMAGES",
    "DEFAULT_NORM_THRESHOLD",
    "DEFAULT_TOP_K",
    "PUBLISHED_SETTINGS",
    "build_test_time_registers",
    "find_register_neurons",
    "format_register_neurons",
    "load_test_time_registers",
    "saved_model_type",
]
