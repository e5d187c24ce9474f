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
"""Zero-shot open-vocabulary semantic segmentation with CLIP dense features (docs/method.md, section 7).

The paper's protocol, for a PH-Reg CLIP student or a base CLIP (MaskCLIP / NACLIP baselines), in one place:

- each class is encoded with the 80 OpenAI ImageNet prompt templates ("a photo of a {}." ...): every prompt
  embedding L2-normalised, averaged, L2-normalised again; a class may have synonyms ("dog, puppy"), one query each;
- the image is resized so its short side is 448 (bilinear, no antialias, as mmseg's cv2 resize) and predicted
  with a sliding window (crop 336, stride 112): per crop, dense features L2-normalised per token, cosine logits
  against the queries, reshaped to the patch grid and bilinearly upsampled to the crop; logits are averaged where
  windows overlap, then upsampled to the original image size;
- probabilities are softmax(logit_scale * logits) over all queries (logit_scale 40); a class's probability is
  the max over its synonyms; the label is the argmax, and a pixel whose top probability is below
  `prob_threshold` goes to class 0 (background).

`PhregSegmentationPipeline` wraps this as a transformers custom pipeline (task
"phreg-open-vocabulary-segmentation"), returning per-class masks like `image-segmentation`. This file imports only
numpy, PIL, torch, transformers and our remote-code files (relatively): it travels with a saved checkpoint so that
`pipeline(model=folder, trust_remote_code=True)` works where phreg_hf is not installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import Pipeline

from .clip_dense import (
    DENSE_MODES,
    POSITION_INTERPOLATIONS,
    as_phreg_clip,
    dense_features,
    position_interpolation,
)

PIPELINE_TASK = "phreg-open-vocabulary-segmentation"
DEFAULT_LOGIT_SCALE = 40.0
DEFAULT_SHORT_SIDE = 448
DEFAULT_CROP_SIZE = 336
DEFAULT_STRIDE = 112
# How the image is resized to the short side: "torch" (float bilinear, no antialias, round()), or "reference":
# mmcv's `imrescale` as the reference harness runs it (scale f = min(2048 / long side, short_side / short side),
# new size int(x * f + 0.5), bilinear on the uint8 image, the result rounded back to uint8).
RESIZE_RULES = ("torch", "reference")
REFERENCE_LONG_SIDE = 2048

# The 80 prompt templates OpenAI used for zero-shot ImageNet (CLIP's "Prompt Engineering" notebook).
OPENAI_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


# ----------------------------------------------------------------------------------------------------------------
# Class names


def parse_labels(labels: str | Sequence[str]) -> list[list[str]]:
    """Class names with synonyms: `"background; cat; dog, puppy"` (or a list of such entries, one per class)
    -> `[["background"], ["cat"], ["dog", "puppy"]]`. Synonyms are split by ", " as in the reference class files."""
    entries = labels.split(";") if isinstance(labels, str) else list(labels)
    if not entries or all(not str(entry).strip() for entry in entries):
        raise ValueError(
            "No class names given: pass at least one, e.g. --labels 'background; cat; dog, puppy' or --labels_file."
        )
    classes = []
    for index, entry in enumerate(entries):
        synonyms = [name.strip() for name in str(entry).split(", ")]
        if not all(synonyms):
            raise ValueError(
                f"Class {index} ({entry!r}) has an empty name; separate classes by ';' and synonyms by ', ', e.g. "
                "'background; cat; dog, puppy'."
            )
        classes.append(synonyms)
    first_index: dict[str, int] = {}
    for index, synonyms in enumerate(classes):
        # A class listed twice can never win (its first copy takes every tie) and reports share one key.
        # A synonym shared by two classes is allowed: the reference's COCO-Object list has "bed" in both its
        # background line and the class "bed".
        if synonyms[0] in first_index:
            raise ValueError(
                f"Class {index} ({synonyms[0]!r}) repeats class {first_index[synonyms[0]]}: every class needs its own "
                "name; remove the duplicate or rename it."
            )
        first_index[synonyms[0]] = index
    return classes


def read_class_file(path) -> list[list[str]]:
    """One class per line (line i = class index i - 1), synonyms split by ", ", UTF-8 (a byte-order mark is
    dropped); surrounding spaces of a name are dropped (CLIP's tokenizer ignores them anyway). An empty line, a
    class given twice or a file that is not UTF-8 is an error naming the file and the line."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a BOM is no part of the first class name
            lines = handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"The class file {path} is not UTF-8 (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > NEW`)."
        ) from None
    if not lines:
        raise ValueError(
            f"The class file {path} is empty; write one class per line (synonyms split by ', ')."
        )
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(
                f"Line {number} of the class file {path} is empty: every line is one class (line i = class index "
                "i - 1), so remove the empty line or give the class a name."
            )
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.split(", ")[0].strip()
        if name in first_line:
            raise ValueError(
                f"Line {number} of the class file {path} ({name!r}) repeats line {first_line[name]}: a class given "
                "twice can never win over its first copy; remove the duplicate line or rename the class."
            )
        first_line[name] = number
    return parse_labels(lines)


# ----------------------------------------------------------------------------------------------------------------
# The segmenter


def reference_rescale_size(height: int, width: int, short_side: int, long_side: int = REFERENCE_LONG_SIDE):
    """`(H', W')` of mmcv's `imrescale(img, (long_side, short_side))` (keep_ratio): the factor
    `f = min(long_side / max(H, W), short_side / min(H, W))`, each side `int(side * f + 0.5)` (round half up)."""
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def reference_resize(pixels_uint8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(3, H, W)` uint8-valued pixels -> `(3, H', W')` float32 in [0, 255], whole numbers: bilinear with half-pixel
    centres and no antialiasing (OpenCV's INTER_LINEAR, which mmcv's cv2 backend runs), rounded half up back to
    uint8 values as OpenCV's 8-bit path returns them. OpenCV computes with 11-bit fixed-point weights, so a pixel
    can differ from it by one grey level."""
    if tuple(pixels_uint8.shape[-2:]) == tuple(size):
        return pixels_uint8.float()
    resized = F.interpolate(
        pixels_uint8.float()[None], size=size, mode="bilinear", align_corners=False, antialias=False
    )[0]
    return torch.floor(resized + 0.5).clamp_(0, 255)


def check_segmenter_settings(logit_scale: float, prob_threshold: float, prefix: str = "") -> None:
    """ValueError for a softmax scale that is not a finite number > 0 or a threshold outside [0, 1] (NaN included):
    either would turn every pixel into background, or into noise, without a sign. `prefix` is "--" for a command.
    """
    if not (isinstance(logit_scale, (int, float)) and math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(
            f"{prefix}logit_scale must be a finite number > 0 (the softmax scale on cosine logits; reference: "
            f"{DEFAULT_LOGIT_SCALE:g}), got {logit_scale}."
        )
    if not (isinstance(prob_threshold, (int, float)) and 0.0 <= prob_threshold <= 1.0):
        raise ValueError(
            f"{prefix}prob_threshold must be a probability in [0, 1] (0: no threshold; VOC21 protocol: 0.1), got "
            f"{prob_threshold}."
        )


def _check_finite(values: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"The model's {what} are not finite (NaN or inf), so no class could be told from another. Its weights "
            "hold NaN or inf values (e.g. the registers), or its dtype overflows (float16: use float32); check the "
            "checkpoint, or re-save it from a good copy."
        )


@torch.no_grad()
def encode_queries(
    model,
    tokenizer,
    classes: Sequence[Sequence[str]],
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
    prompt_batch_size: int = 640,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-ensemble text embeddings of every synonym (`prompt_batch_size` prompts per text-tower pass).

    Returns:
        `(Q, projection_dim)` L2-normalised query embeddings and `(Q,)` the class index of each query.
    """
    device = next(model.parameters()).device
    max_length = model.config.text_config.max_position_embeddings
    names = [(class_index, name) for class_index, synonyms in enumerate(classes) for name in synonyms]
    prompts = [template.format(name) for _, name in names for template in templates]
    # Prompts of many synonyms go through the text tower together (a benchmark has up to 171 classes x 80
    # templates); the attention mask keeps padding out, so each prompt's embedding is what it is alone.
    embeddings = []
    for start in range(0, len(prompts), prompt_batch_size):
        tokens = tokenizer(
            prompts[start : start + prompt_batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        features = model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        _check_finite(features, "text embeddings of the class prompts")
        embeddings.append(F.normalize(features.float(), dim=-1))
    per_name = torch.cat(embeddings).view(len(names), len(templates), -1).mean(dim=1)
    queries = list(F.normalize(per_name, dim=-1))
    owners = [class_index for class_index, _ in names]
    return torch.stack(queries), torch.tensor(owners, device=device)


@dataclass
class SegmentationResult:
    """One image's prediction.

    Attributes:
        label_map: `(H, W)` int64, class index per pixel (0 where the top probability is below the threshold).
        class_probabilities: `(C, H, W)` float32, per class the max over its synonyms of the query softmax.
    """

    label_map: torch.Tensor
    class_probabilities: torch.Tensor


class OpenVocabularySegmenter:
    """Zero-shot semantic segmentation with a CLIP's text-aligned dense features (see the module docstring).

    Args:
        model: a `PhregCLIPModel` (student or 0-register base), a stock `CLIPModel`, or a test-time-registers
            model of a full CLIP (`PhregTestTimeRegistersModel`; its extra token is left out of the dense output).
        tokenizer: the model's CLIP tokenizer.
        image_mean, image_std: the image processor's normalization (3 values each).
        classes: class names with synonyms, e.g. `parse_labels("background; cat; dog, puppy")`.
        mode: "maskclip" (the value path: a student's distilled dense output, MaskCLIP for a base) or "naclip".
        logit_scale: softmax temperature on cosine logits (reference: 40).
        prob_threshold: pixels whose top class probability is below it go to class 0 (reference: 0.0; VOC21 0.1).
        short_side: resize so the short side has this many pixels first (None: keep the size).
        resize: "torch" or "reference" (mmcv's `imrescale`, long side capped at 2048; see `RESIZE_RULES`).
        position_interpolation: "transformers" or "reference" (`clip_dense.reference_position_embeddings`).
        crop_size, stride: sliding window in pixels (None crop: one pass over the whole image).
        batch_size: crops per forward pass.
    """

    def __init__(
        self,
        model,
        tokenizer,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        classes: Sequence[Sequence[str]],
        *,
        mode: str = "maskclip",
        templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
        logit_scale: float = DEFAULT_LOGIT_SCALE,
        prob_threshold: float = 0.0,
        short_side: int | None = DEFAULT_SHORT_SIDE,
        crop_size: int | None = DEFAULT_CROP_SIZE,
        stride: int = DEFAULT_STRIDE,
        batch_size: int = 8,
        resize: str = "torch",
        position_interpolation: str = "transformers",
    ):
        if mode not in DENSE_MODES:
            raise ValueError(f"mode must be one of {DENSE_MODES}, got {mode!r}.")
        if resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {RESIZE_RULES}, got {resize!r}.")
        if position_interpolation not in POSITION_INTERPOLATIONS:
            raise ValueError(
                f"position_interpolation must be one of {POSITION_INTERPOLATIONS}, got {position_interpolation!r}."
            )
        if not classes:
            raise ValueError("No class names given: pass at least one, e.g. 'background; cat; dog, puppy'.")
        for name, value in (("short_side", short_side), ("crop_size", crop_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}.")
        if stride < 1 or batch_size < 1:
            raise ValueError(f"stride ({stride}) and batch_size ({batch_size}) must be >= 1.")
        check_segmenter_settings(logit_scale, prob_threshold)
        self.model = as_phreg_clip(model).eval()
        self.classes = [list(synonyms) for synonyms in classes]
        self.mode = mode
        self.resize, self.position_interpolation = resize, position_interpolation
        self.logit_scale = float(logit_scale)
        self.prob_threshold = float(prob_threshold)
        self.short_side, self.crop_size, self.stride, self.batch_size = (
            short_side,
            crop_size,
            stride,
            batch_size,
        )
        self.patch_size = self.model.vision_model.patch_size
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.mean = torch.tensor(list(image_mean), dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(list(image_std), dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.queries, self.query_classes = encode_queries(self.model, tokenizer, self.classes, templates)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------------------------------------------------
    def prepare(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """PIL image / `(H, W, 3)` uint8 array -> `(3, H', W')` normalized float32 (short side resized), and the
        original `(H, W)`."""
        if isinstance(image, Image.Image):
            image = image.convert("RGB")
        array = np.array(image)  # a writable copy for torch
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"Expected an RGB image (H, W, 3), got an array of shape {array.shape}.")
        pixels = torch.from_numpy(array).to(self.device).permute(2, 0, 1)
        height, width = pixels.shape[-2:]
        if self.resize == "reference" and self.short_side is not None:
            size = reference_rescale_size(height, width, self.short_side)
            return (reference_resize(pixels, size) / 255.0 - self.mean) / self.std, (height, width)
        pixels = pixels.float() / 255.0
        if self.short_side is not None and min(height, width) != self.short_side:
            scale = self.short_side / min(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False)[0]
        return (pixels - self.mean) / self.std, (height, width)

    def _crop_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """`(n, 3, h, w)` crops -> `(n, Q, h, w)` cosine logits (crops padded to a multiple of the patch size)."""
        height, width = crops.shape[-2:]
        p = self.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        padded = F.pad(crops, (0, pad_w, 0, pad_h)) if pad_h or pad_w else crops
        grid = (padded.shape[-2] // p, padded.shape[-1] // p)
        with position_interpolation(self.model, self.position_interpolation):
            features = dense_features(self.model, padded.to(self.dtype), self.mode).float()  # (n, h*w, P)
        _check_finite(features, f"dense features ({self.mode})")
        logits = F.normalize(features, dim=-1) @ self.queries.T  # (n, h*w, Q)
        logits = logits.transpose(1, 2).unflatten(2, grid)  # (n, Q, gh, gw)
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

    @torch.no_grad()
    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits: `(3, H, W)` normalized image -> `(Q, H, W)`, averaged where windows overlap."""
        _, height, width = pixel_values.shape
        if self.crop_size is None:
            return self._crop_logits(pixel_values[None])[0]
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)
        rows = max(height - crop_h + self.stride - 1, 0) // self.stride + 1
        cols = max(width - crop_w + self.stride - 1, 0) // self.stride + 1
        boxes = []
        for row in range(rows):
            for col in range(cols):
                y2, x2 = min(row * self.stride + crop_h, height), min(col * self.stride + crop_w, width)
                boxes.append((y2 - crop_h, x2 - crop_w, y2, x2))
        total = pixel_values.new_zeros(len(self.queries), height, width)
        counts = pixel_values.new_zeros(1, height, width)
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            crops = torch.stack([pixel_values[:, y1:y2, x1:x2] for y1, x1, y2, x2 in chunk])
            for (y1, x1, y2, x2), crop_logits in zip(chunk, self._crop_logits(crops), strict=True):
                total[:, y1:y2, x1:x2] += crop_logits
                counts[:, y1:y2, x1:x2] += 1
        return total / counts

    def classify(self, logits: torch.Tensor) -> SegmentationResult:
        """`(Q, H, W)` logits -> label map and class probabilities (softmax, synonym max, threshold)."""
        _check_finite(logits, "cosine logits")
        probabilities = torch.softmax(self.logit_scale * logits, dim=0)
        index = self.query_classes.view(-1, 1, 1).expand_as(probabilities)
        class_probabilities = probabilities.new_zeros(self.num_classes, *probabilities.shape[1:])
        class_probabilities = class_probabilities.scatter_reduce(0, index, probabilities, reduce="amax")
        top, label_map = class_probabilities.max(dim=0)
        label_map[top < self.prob_threshold] = 0
        return SegmentationResult(label_map=label_map.cpu(), class_probabilities=class_probabilities.cpu())

    @torch.no_grad()
    def predict(self, image) -> SegmentationResult:
        """Segment one PIL image (or `(H, W, 3)` uint8 array) at its original size."""
        pixel_values, original_size = self.prepare(image)
        logits = self.logits(pixel_values)
        if logits.shape[-2:] != original_size:
            logits = F.interpolate(logits[None], size=original_size, mode="bilinear", align_corners=False)[0]
        return self.classify(logits)


# ----------------------------------------------------------------------------------------------------------------
# The transformers pipeline


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as RGB; transparent pixels are composited on white, 16-bit grey is rescaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def upright_rgb(image: Image.Image) -> Image.Image:
    """`to_rgb` of the image turned upright by its EXIF orientation (as `datasets` and transformers' `load_image`
    turn it): how every phreg command and the pipeline see an image."""
    return to_rgb(ImageOps.exif_transpose(image))


def load_rgb_image(image) -> Image.Image:
    """A pipeline input as an upright RGB PIL image, converted as every phreg command converts images (`upright_rgb`).

    A PIL image or a path is opened here: transformers' `load_image` converts with `Image.convert("RGB")`, which
    clips 16-bit grey (a depth map, a scan) to white instead of rescaling it. A URL or a base64 string is fetched
    and decoded by `load_image`, as every transformers pipeline does.
    """
    from transformers.image_utils import load_image

    if isinstance(image, os.PathLike) or (isinstance(image, str) and os.path.isfile(image)):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        return load_image(image)
    return upright_rgb(image)


class PhregSegmentationPipeline(Pipeline):
    """Open-vocabulary semantic segmentation: `pipe(image, candidate_labels="background; cat; dog, puppy")`.

    Returns, like `image-segmentation` (subtask semantic), one dict per class present in the prediction:
    `{"score": None, "label": first synonym, "mask": PIL "L" image (255 inside)}`. Options (call or constructor):
    `candidate_labels` (required; a string with ';' / ', ' or a list), `mode` ("maskclip" / "naclip"),
    `prob_threshold`, `logit_scale`, `short_side`, `crop_size`, `stride`, `resize`, `position_interpolation`.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(self, **kwargs):
        names = (
            "candidate_labels",
            "mode",
            "prob_threshold",
            "logit_scale",
            "short_side",
            "crop_size",
            "stride",
            "resize",
            "position_interpolation",
        )
        unknown = set(kwargs) - set(names)
        if unknown:
            raise ValueError(f"Unknown options {sorted(unknown)}; this pipeline takes {list(names)}.")
        return {}, {}, dict(kwargs)

    def preprocess(self, image):
        return {"image": load_rgb_image(image)}

    def _forward(self, model_inputs):
        return model_inputs

    def _segmenter(self, options: dict) -> OpenVocabularySegmenter:
        if options.get("candidate_labels") is None:
            raise ValueError(
                "Pass candidate_labels, e.g. pipe(image, candidate_labels='background; cat; dog, puppy')."
            )
        classes = parse_labels(options["candidate_labels"])
        settings = {k: v for k, v in options.items() if k != "candidate_labels"}
        key = (repr(classes), repr(sorted(settings.items())))
        cached = getattr(self, "_cached_segmenter", None)
        if cached is None or cached[0] != key:
            segmenter = OpenVocabularySegmenter(
                self.model,
                self.tokenizer,
                self.image_processor.image_mean,
                self.image_processor.image_std,
                classes,
                **settings,
            )
            self._cached_segmenter = (key, segmenter)
        return self._cached_segmenter[1]

    def postprocess(self, model_outputs, **options):
        segmenter = self._segmenter(options)
        result = segmenter.predict(model_outputs["image"])
        annotations = []
        for class_index in result.label_map.unique().tolist():
            mask = (result.label_map == class_index).numpy().astype(np.uint8) * 255
            annotations.append(
                {
                    "score": None,
                    "label": segmenter.classes[class_index][0],
                    "mask": Image.fromarray(mask, "L"),
                }
            )
        return annotations


__all__ = [
    "OPENAI_IMAGENET_TEMPLATES",
    "PIPELINE_TASK",
    "RESIZE_RULES",
    "OpenVocabularySegmenter",
    "PhregSegmentationPipeline",
    "SegmentationResult",
    "check_segmenter_settings",
    "encode_queries",
    "load_rgb_image",
    "parse_labels",
    "read_class_file",
    "reference_rescale_size",
    "reference_resize",
    "to_rgb",
    "upright_rgb",
]
