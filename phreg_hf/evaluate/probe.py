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
"""`phreg probe`: linear probes for segmentation and depth on frozen base and student features, side by side.

    phreg probe --task segmentation --base facebook/dinov2-base --student ./dinov2-base-phreg \\
        --dataset_name ORG/VOC --split train --eval_split validation --out probe.json
    phreg probe --task depth --base B --student S --images DIR --depths DIR --out probe.json

The protocol of the paper's Table 2 (docs/method.md, section 9): the backbone is frozen and gives its
last-layer patch tokens (CLS and registers dropped: `get_feature_map`); a linear head (BatchNorm + 1x1 conv)
reads them; its output is upsampled bilinearly to the crop; AdamW (lr 1e-3, weight decay 1e-4) with poly decay
trains it on augmented crops (random resize 0.5-2.0, flip, photometric jitter, crop 518); the test image is
predicted with a sliding window (crop 518, stride 341, logits averaged where windows overlap). Segmentation is
scored by mIoU from one confusion matrix over the evaluation set (label 255 ignored); depth by RMSE, AbsRel
and delta1 per image, averaged over images.

Depth head: DINOv2's linear depth probe. The 1x1 conv predicts `depth_bins` scores per patch; depth is the
bin centres (uniform in [min_depth, max_depth]) weighted by relu(score) + 0.1, normalized; it is trained with
the scale-invariant log loss (SigLoss, variance focus 0.85). DINOv2 adds a gradient loss; we do not.

Every model gets the same head initialisation, the same crops in the same order (seeded per crop, see
`probe_data.ProbeTrainStream`) and the same number of steps, so rows differ only by their features.

`--test_time_registers DIR` (a `phreg test-time-registers` model of the base) or `--ttr_images DIR` (one built on
the fly, `ttr_rows`) adds the training-free baseline as the row test_time_registers.

Frozen features are cached when the augmentation allows it (`--feature_cache auto`: no random augmentation,
so every crop of a pair is the same); `--feature_cache on` caches `--cached_copies` augmented crops per pair
and trains on those, which is what makes a CPU run on small data take minutes. The paper's defaults augment
every step (no cache): a GPU job.

Accelerate: bf16 autocast on GPUs that support it (`--mixed_precision`), any number of processes
(`accelerate launch -m phreg_hf.cli probe ...`); with several processes each one trains on its own share of
the crops (gradients averaged, BatchNorm synchronised on GPUs) and evaluates its share of the images (sums reduced).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import probe_data
from .probe_arguments import PAPER_CROP_SIZE, PAPER_STRIDE, ProbeArguments
from .probe_data import IGNORE_INDEX, Augmentation, ProbeData, prepare_data
from .probe_report import (
    build_report,
    finite_report,
    format_probe_table,
    write_report,
)
from .ttr_rows import ttr_report


# ----------------------------------------------------------------------------------------------------------------
# Heads, losses and metrics
class LinearProbeHead(nn.Module):
    """BatchNorm + 1x1 conv on a frozen feature map: `(B, C, h, w)` -> `(B, out_channels, h, w)`.

    The conv starts at N(0, 0.01^2) weights and zero bias, as mmsegmentation's heads (and DINOv2's linear probes).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(features))


def bins_to_depth(scores: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """DINOv2's "linear" bin normalisation: `(B, n_bins, h, w)` scores -> `(B, 1, h, w)` depth in
    [min_depth, max_depth] (bin centres weighted by relu(score) + 0.1, normalized)."""
    weights = F.relu(scores.float()) + 0.1
    weights = weights / weights.sum(dim=1, keepdim=True)
    centres = torch.linspace(min_depth, max_depth, scores.shape[1], device=scores.device)
    return torch.einsum("bnhw,n->bhw", weights, centres)[:, None]


def sig_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.; DINOv2's SigLoss, variance focus 0.85) over valid pixels.

    Args:
        prediction, target: `(B, H, W)` depths; valid: `(B, H, W)` bool.
    """
    if not valid.any():
        return prediction.sum() * 0.0  # a batch of padding only: no signal, but keep the graph
    g = torch.log(prediction[valid] + 1e-3) - torch.log(target[valid] + 1e-3)
    return torch.sqrt(g.var(unbiased=False) + 0.15 * g.mean() ** 2 + 1e-12)


def confusion_matrix(
    prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """`(num_classes, num_classes)` int64 counts, rows = true class, columns = predicted class.

    Args:
        prediction, target: integer class maps of one shape; target pixels equal to `ignore_index` are skipped.
    """
    keep = target != ignore_index
    target, prediction = target[keep].long(), prediction[keep].long()
    if target.numel() and int(target.max()) >= num_classes:
        raise ValueError(
            f"A label holds class {int(target.max())} but there are {num_classes} classes; pass --num_classes "
            f"{int(target.max()) + 1} or more (or mark unlabelled pixels with the ignore value)."
        )
    return torch.bincount(target * num_classes + prediction, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def segmentation_scores(confusion: torch.Tensor) -> dict:
    """mIoU (mean over classes present in the labels or the predictions), per-class IoU (None where a class is
    in neither), pixel accuracy and the number of scored pixels, from a `(K, K)` confusion matrix."""
    confusion = confusion.double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    # NaN where union == 0: a class neither labelled nor predicted is left out of the mean (mmsegmentation's rule).
    iou = intersection / union
    present = union > 0
    return {
        "mIoU": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(intersection.sum() / confusion.sum().clamp(min=1)),
        "scored_pixels": int(confusion.sum()),
        "per_class_iou": [
            float(v) if ok else None for v, ok in zip(iou.tolist(), present.tolist(), strict=True)
        ],
    }


def depth_image_errors(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`[rmse, abs_rel, delta1]` of one image over its valid pixels. prediction, target, valid: `(H, W)`."""
    p, g = prediction[valid].double(), target[valid].double()
    rmse = torch.sqrt(((p - g) ** 2).mean())
    abs_rel = ((p - g).abs() / g).mean()
    delta1 = (torch.maximum(p / g, g / p) < 1.25).double().mean()
    return torch.stack([rmse, abs_rel, delta1])


# ----------------------------------------------------------------------------------------------------------------
# Features
FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


def feature_extractor(model: nn.Module, seed: int = 0) -> FeatureExtractor:
    """`(B, 3, H, W)` -> `(B, C, H/p, W/p)` frozen features of a PH-Reg model (`get_feature_map`: last-layer
    final-normed patch tokens, CLS and registers dropped) or of a `DenoisingTeacher` (views seeded by `seed`)."""
    from ..teacher import DenoisingTeacher

    if isinstance(model, DenoisingTeacher):
        generator = torch.Generator().manual_seed(seed)

        def teacher_features(pixel_values: torch.Tensor) -> torch.Tensor:
            height, width = model.grid_size(pixel_values)
            tokens = model(pixel_values, generator=generator)  # (B, h*w, C)
            return tokens.transpose(1, 2).unflatten(2, (height, width))

        return teacher_features
    if not callable(getattr(model, "get_feature_map", None)):
        raise ValueError(
            f"{type(model).__name__} has no get_feature_map(); wrap a stock model with student_from_base(model, 0)."
        )
    return model.get_feature_map


def _feature_dim(model: nn.Module) -> int:
    config = model.model.config if hasattr(model, "model") and not hasattr(model, "config") else model.config
    # A test-time-registers model's own config holds its base's (vision) config.
    return int(getattr(config, "base_vision_config", config).hidden_size)


def _patch_size(model: nn.Module) -> int:
    return int(model.patch_size)


# ----------------------------------------------------------------------------------------------------------------
# The probe
class LinearProbe:
    """Train and score linear heads on frozen features, one model after another, same data and seed.

    Args:
        args: the options (protocol, optimisation, caching).
        data: from `prepare_data`.
        patch_size: of the probed backbones (crop and windows must be multiples of it).
        accelerator: an `accelerate.Accelerator` (default: a new one, bf16 on capable GPUs).
    """

    def __init__(self, args: ProbeArguments, data: ProbeData, patch_size: int, accelerator=None):
        self.args, self.data, self.patch_size = args, data, patch_size
        self.accelerator = accelerator or make_accelerator(args.mixed_precision)
        self.crop_size = resolve_crop_size(args.crop_size, patch_size)
        self.stride = args.stride or max(1, round(self.crop_size * PAPER_STRIDE / PAPER_CROP_SIZE))
        short_side = self.crop_size if args.short_side is None else (args.short_side or None)
        self.short_side = short_side
        self.augmentation = Augmentation(
            self.crop_size, short_side, args.min_scale, args.max_scale, args.hflip, args.photometric
        )
        self.use_cache = args.feature_cache == "on" or (
            args.feature_cache == "auto" and not self.augmentation.is_random
        )
        self.out_channels = data.num_classes if args.task == "segmentation" else args.depth_bins
        self.show_progress = True

    @property
    def progress(self) -> bool:
        return self.show_progress and self.accelerator.is_local_main_process

    # -- training -------------------------------------------------------------------------------------------
    def _train_stream(self, num_samples: int) -> probe_data.ProbeTrainStream:
        return probe_data.ProbeTrainStream(
            self.data.train,
            self.data.labels,
            self.augmentation,
            self.data.image_mean,
            self.data.image_std,
            num_samples,
            self.args.seed,
        )

    @torch.no_grad()
    def _features(self, extract: FeatureExtractor, pixel_values: torch.Tensor) -> torch.Tensor:
        with self.accelerator.autocast():
            return extract(pixel_values.to(self.accelerator.device)).float()

    def _cached_batches(
        self, extract: FeatureExtractor, name: str
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Features of this process's share of the fixed crops, computed once; then seeded random batches."""
        accelerator, args = self.accelerator, self.args
        copies = args.cached_copies if self.augmentation.is_random else 1
        stream = self._train_stream(len(self.data.train) * copies)
        mine = list(range(accelerator.process_index, len(stream), accelerator.num_processes))
        features, labels = [], []
        for start in tqdm(
            range(0, len(mine), args.eval_batch_size),
            desc=f"{name}: caching features",
            unit="batch",
            disable=not self.progress,
        ):
            items = [stream[i] for i in mine[start : start + args.eval_batch_size]]
            features.append(self._features(extract, torch.stack([it["pixel_values"] for it in items])).cpu())
            labels.append(torch.stack([it["labels"] for it in items]))
        features, labels = torch.cat(features), torch.cat(labels)
        generator = torch.Generator().manual_seed(
            probe_data.sample_seed(args.seed, accelerator.process_index)
        )
        while True:
            for batch in torch.randperm(len(features), generator=generator).split(
                args.per_device_train_batch_size
            ):
                yield features[batch], labels[batch]

    def _streamed_batches(self, extract: FeatureExtractor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Fresh augmented crops every step, the backbone run on each batch."""
        args = self.args
        total = args.max_steps * args.per_device_train_batch_size * self.accelerator.num_processes
        loader = torch.utils.data.DataLoader(
            self._train_stream(total),
            batch_size=args.per_device_train_batch_size,
            shuffle=False,  # the stream itself is a seeded shuffle
            num_workers=args.dataloader_num_workers,
        )
        for batch in self.accelerator.prepare_data_loader(loader):
            yield self._features(extract, batch["pixel_values"]), batch["labels"]

    def _loss(self, head_output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Head output `(B, out, h, w)` upsampled to the labels `(B, S, S)`; CE or SigLoss."""
        size = labels.shape[-2:]
        if self.args.task == "segmentation":
            logits = F.interpolate(head_output.float(), size=size, mode="bilinear", align_corners=False)
            return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX)
        depth = bins_to_depth(head_output, self.args.min_depth, self.args.max_depth)
        depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)[:, 0]
        labels = labels.float()
        return sig_loss(depth, labels, self.data.labels.valid(labels))

    def train_head(self, extract: FeatureExtractor, feature_dim: int, name: str = "model") -> nn.Module:
        """Train one linear head on `extract`'s frozen features; returns it (unwrapped, eval mode)."""
        args, accelerator = self.args, self.accelerator
        from accelerate.utils import set_seed

        set_seed(args.seed)  # the same head initialisation for every model
        head = LinearProbeHead(feature_dim, self.out_channels)
        if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
            # mmsegmentation's SyncBN; torch implements it for GPUs only, so CPU processes keep local statistics.
            head = nn.SyncBatchNorm.convert_sync_batchnorm(head)
        optimizer = torch.optim.AdamW(
            head.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, poly_schedule(args.max_steps, args.poly_power, args.warmup_steps)
        )
        head, optimizer = accelerator.prepare(head, optimizer)
        batches = self._cached_batches(extract, name) if self.use_cache else self._streamed_batches(extract)
        head.train()
        bar = tqdm(
            range(args.max_steps), desc=f"{name}: training head", unit="step", disable=not self.progress
        )
        running = None
        for _, (features, labels) in zip(bar, batches, strict=False):  # batches never end
            features, labels = features.to(accelerator.device), labels.to(accelerator.device)
            with accelerator.autocast():
                loss = self._loss(head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            running = value if running is None else 0.9 * running + 0.1 * value
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
        bar.close()
        return accelerator.unwrap_model(head).eval()

    # -- evaluation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, extract: FeatureExtractor, head: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Sliding-window prediction of one image: `(3, H, W)` normalized -> `(K, H, W)` logits (segmentation)
        or `(1, H, W)` depth, averaged where windows overlap."""
        crop, stride = self.crop_size, self.stride
        _, height, width = pixel_values.shape
        padded = F.pad(pixel_values, (0, max(crop - width, 0), 0, max(crop - height, 0)))
        padded_h, padded_w = padded.shape[-2:]
        tops = _window_starts(padded_h, crop, stride)
        lefts = _window_starts(padded_w, crop, stride)
        windows = [(top, left) for top in tops for left in lefts]
        channels = self.out_channels if self.args.task == "segmentation" else 1
        total = torch.zeros(channels, padded_h, padded_w, device=self.accelerator.device)
        count = torch.zeros(1, padded_h, padded_w, device=self.accelerator.device)
        for start in range(0, len(windows), self.args.eval_batch_size):
            chunk = windows[start : start + self.args.eval_batch_size]
            batch = torch.stack([padded[:, top : top + crop, left : left + crop] for top, left in chunk])
            features = self._features(extract, batch)
            with self.accelerator.autocast():
                output = head(features).float()
            if self.args.task == "depth":
                output = bins_to_depth(output, self.args.min_depth, self.args.max_depth)
            output = F.interpolate(output, size=(crop, crop), mode="bilinear", align_corners=False)
            for (top, left), window_output in zip(chunk, output, strict=True):
                total[:, top : top + crop, left : left + crop] += window_output
                count[:, top : top + crop, left : left + crop] += 1
        return (total / count)[:, :height, :width]

    @torch.no_grad()
    def evaluate_head(self, extract: FeatureExtractor, head: nn.Module, name: str = "model") -> dict:
        """Score a head on the evaluation pairs (this process's share; sums reduced over processes)."""
        accelerator, data, task = self.accelerator, self.data, self.args.task
        head = head.to(accelerator.device).eval()
        mine = range(accelerator.process_index, len(data.eval), accelerator.num_processes)
        if task == "segmentation":
            totals = torch.zeros(
                data.num_classes, data.num_classes, dtype=torch.long, device=accelerator.device
            )
        else:
            totals = torch.zeros(
                4, dtype=torch.float64, device=accelerator.device
            )  # rmse, abs_rel, delta1, n
        for index in tqdm(mine, desc=f"{name}: scoring", unit="image", disable=not self.progress):
            pixel_values, label = probe_data.load_eval_pair(
                data.eval, index, data.labels, self.short_side, data.image_mean, data.image_std
            )
            output = self.predict(extract, head, pixel_values)
            if tuple(output.shape[-2:]) != tuple(label.shape):  # scored at the label's stored size
                output = F.interpolate(
                    output[None], size=tuple(label.shape), mode="bilinear", align_corners=False
                )[0]
            label = label.to(accelerator.device)
            if task == "segmentation":
                totals += confusion_matrix(output.argmax(0), label, data.num_classes)
            else:
                valid = data.labels.scored(label, f"the depth map of {data.eval.names[index]}")
                totals[:3] += depth_image_errors(output[0], label.float(), valid).to(totals)
                totals[3] += 1
        totals = accelerator.reduce(totals, reduction="sum").cpu()
        if task == "segmentation":
            return segmentation_scores(totals)
        rmse, abs_rel, delta1 = (totals[:3] / totals[3]).tolist()
        return {"rmse": rmse, "abs_rel": abs_rel, "delta1": delta1}

    def run(self, models: dict[str, nn.Module]) -> dict[str, dict]:
        """`{name: metrics}` for each model (PH-Reg model or `DenoisingTeacher`), probed in turn."""
        rows = {}
        for name, model in models.items():
            start = time.perf_counter()
            model.eval().to(self.accelerator.device)
            extract = feature_extractor(model, self.args.seed)
            head = self.train_head(extract, _feature_dim(model), name)
            rows[name] = self.evaluate_head(extract, head, name)
            rows[name]["runtime_s"] = round(time.perf_counter() - start, 2)
        return rows


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """mmsegmentation's window grid: starts every `stride`, the last one flush with the end."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return sorted({min(i * stride, length - crop) for i in range(count)})


def poly_schedule(max_steps: int, power: float, warmup_steps: int = 0) -> Callable[[int], float]:
    """lr factor: linear warm-up over `warmup_steps`, then (1 - step / max_steps) ** power down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - step / max_steps) ** power

    return factor


def resolve_crop_size(crop_size: int | None, patch_size: int) -> int:
    """`crop_size`, checked to be a multiple of the patch size; default the paper's 518 rounded to one."""
    if crop_size is None:
        return max(2, round(PAPER_CROP_SIZE / patch_size)) * patch_size
    if crop_size % patch_size or crop_size < 2 * patch_size:
        lower = max(2, crop_size // patch_size) * patch_size
        raise ValueError(
            f"--crop_size {crop_size} must be a multiple of the patch size {patch_size} (at least {2 * patch_size}); "
            f"pass --crop_size {lower} or {lower + patch_size}."
        )
    return crop_size


def make_accelerator(mixed_precision: str = "auto"):
    """An `accelerate.Accelerator` for probing: "auto" precision is bf16 on GPUs that support it, else fp32."""
    from accelerate import Accelerator

    from ..launch import multi_process_cpu_run

    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # cpu=True on CPU-only torchrun so that Accelerate forms a gloo group (see the trainer's helper).
    return Accelerator(cpu=multi_process_cpu_run(), mixed_precision=mixed_precision)


# ----------------------------------------------------------------------------------------------------------------
# Command line
def load_models(args: ProbeArguments) -> tuple[dict[str, nn.Module], tuple, tuple]:
    """Base (as a 0-register PH-Reg model), optionally its denoised teacher, the student, and with
    `--test_time_registers` / `--ttr_images` the test-time-registers model (`ttr_rows.load_ttr_model`); plus the
    image mean / std (the student's processor, else the base's)."""
    from accelerate import PartialState
    from transformers import AutoModel

    from ..data import IMAGENET_MEAN, IMAGENET_STD
    from ..file_checks import check_local_weights
    from ..models.modeling_phreg import student_from_base
    from ..teacher import DenoisingTeacher, normalized_fill_value
    from .artifacts import (
        _check_same_architecture,
        check_base_matches_student,
        check_finite_weights,
        check_model_source,
        load_image_processor,
    )
    from .ttr_rows import load_ttr_model

    if not args.base or not args.student:
        raise ValueError(
            "Pass both --base (the stock model) and --student (the PH-Reg student) to compare them."
        )
    check_model_source(args.student, "--student")
    check_model_source(args.base, "--base")
    check_base_matches_student(args.base, args.student, args.base_revision)
    check_local_weights(args.student)  # a truncated model.safetensors is named, not a raw safetensors error
    check_local_weights(args.base)
    student = AutoModel.from_pretrained(args.student).float().eval()
    base = student_from_base(args.base, 0, revision=args.base_revision).float().eval()
    _check_same_architecture(base, student, args.base)
    check_finite_weights(student, "--student", args.student)
    check_finite_weights(base, "--base", args.base)
    processor = load_image_processor(args.student, args.base, args.base_revision)
    mean = tuple(getattr(processor, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(processor, "image_std", None) or IMAGENET_STD)
    models: dict[str, nn.Module] = {"base": base}
    if args.include_teacher:
        models["teacher"] = DenoisingTeacher(
            base, fill_value=normalized_fill_value(mean, std), num_views=args.num_views
        )
    models["student"] = student
    state = PartialState()  # each process searches on its own device (the same images: the same neurons)
    ttr = load_ttr_model(
        args, base, processor=processor, device=state.device, announce=state.is_local_main_process
    )
    if ttr is not None:
        models["test_time_registers"] = ttr
    return models, mean, std


def probe(args: ProbeArguments) -> dict:
    """`phreg probe` without printing: load, train and score each model's head, write `args.out`."""
    from ..file_checks import check_output_file

    start = time.perf_counter()
    if args.out and Path(args.out).exists() and Path(args.out).suffix.lower() != ".json":
        raise ValueError(f"--out {args.out} exists and is not a .json file; pass another path.")
    if args.out:  # before any training: an existing report, or a file of a model folder, is refused now
        check_output_file(args.out, "--out", args.overwrite)
    accelerator = make_accelerator(args.mixed_precision)
    models, mean, std = load_models(args)
    data = prepare_data(args, mean, std, progress=accelerator.is_local_main_process)
    probe_runner = LinearProbe(args, data, _patch_size(models["student"]), accelerator)
    rows = probe_runner.run(models)
    report = build_report(
        args,
        probe_runner,
        rows,
        base_model=args.base,
        student=args.student,
        **ttr_report(args, models.get("test_time_registers")),
        runtime_s=round(time.perf_counter() - start, 2),
    )
    if args.out and probe_runner.accelerator.is_main_process:
        write_report(args.out, report, overwrite=args.overwrite)
    return report


def probe_main(argv: Sequence[str] | None = None) -> int:
    """`phreg probe --task segmentation|depth --base B --student S (data options) [--out report.json]`.
    Exit codes: 0 done, 2 bad input."""
    from ..arg_parsing import run_cli

    code, args, report = run_cli(
        ProbeArguments,
        argv,
        "phreg probe",
        "Linear-probe segmentation / depth on frozen base and student features (the paper's protocol); "
        "optionally the denoised teacher and the test-time-registers baseline beside them.",
        probe,
    )
    if code is not None:
        return code
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:  # one table, however many processes
        print(format_probe_table(report))
        non_finite = finite_report(report)[1]
        if non_finite:
            print(f"Not finite (NaN or inf; null in the report, '-' above): {', '.join(non_finite)}")
        if args.out:
            print(f"Wrote {args.out}")
    # Close the process group before exit: a gloo group torn down by interpreter exit can abort a rank
    # ("terminate called without an active exception") after all the work is done.
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


__all__ = [
    "LinearProbe",
    "LinearProbeHead",
    "ProbeArguments",
    "ProbeData",
    "bins_to_depth",
    "build_report",
    "confusion_matrix",
    "depth_image_errors",
    "feature_extractor",
    "finite_report",
    "format_probe_table",
    "poly_schedule",
    "prepare_data",
    "probe",
    "probe_main",
    "segmentation_scores",
    "sig_loss",
    "write_report",
]
