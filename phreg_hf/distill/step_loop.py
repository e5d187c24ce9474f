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
"""The step loop of `trainer.DistillTrainer`: micro-batches, optimizer steps, epochs, with one host sync per step.

`StepLoopMixin` is part of `DistillTrainer` (kept apart so that each file holds one concern). A GPU runs ahead of
the Python that feeds it only while nothing waits for a result: a `.item()`, `bool(tensor)` or `.tolist()` of a
device tensor stalls the CPU until the GPU has caught up, and the next step's kernels are queued late. So:

- a batch arrives as uint8 crops and is normalized on the device (`normalize_pixels`): 4x fewer bytes to copy.
- a micro-step queues its forward and backward and adds its statistics (NaN/inf flag, loss, cosine, MSE) to a
  device tensor; counts known on the host (images, unreadable files, teacher images, cache hits) stay on the
  host. It never reads a device value: the image indices and which rows came with a cached target arrive as
  Python lists with the batch (`data.collate_skipping_corrupt`).
- at the end of an accumulation window the statistics of the window are summed over processes and read once
  (`_end_of_window`: the one host sync of an optimizer step). Every process then sees the same sums, so a window
  with NaN/inf loss or targets on any process is skipped (no optimizer update) and counted on all of them.

A NaN/inf micro-batch still runs its backward (the gradients of the window are dropped at its end, so what a
skipped step leaves behind is the same as before: nothing); deciding before the backward would need a sync per
micro-step. A step that computes new targets for the teacher cache copies them to the host to store them: that
copy is the price of the cache's first epoch only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger

from ..data import normalize_pixels
from ..seeding import crop_seed_for
from .checkpointing import list_checkpoints

logger = get_logger("phreg_hf.distill.trainer")  # the trainer's log, whichever file writes to it

# Device statistics of a window: NaN/inf micro-batches, loss*B, cosine*B, mse*B.
_DEVICE_STATS = 4
# Host statistics of a window: skipped (unreadable) images, images, teacher images, cache hits, cache misses.
_HOST_STATS = 5


def distillation_loss(
    student_tokens: torch.Tensor, targets: torch.Tensor, mse_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PH-Reg loss on final-normed patch tokens: `(1 - mean cosine) + mse_scale * MSE` (docs/method.md).

    Args:
        student_tokens: `(B, N, C)` student patch tokens (any float dtype; computed in float32).
        targets: `(B, N, C)` denoised teacher targets.

    Returns:
        `(loss, mean cosine, mse)`, scalars.
    """
    student_tokens = student_tokens.float()
    targets = targets.float()
    cosine = F.cosine_similarity(student_tokens, targets, dim=-1).mean()
    mse = F.mse_loss(student_tokens, targets)
    return (1.0 - cosine) + mse_scale * mse, cosine, mse


class StepLoopMixin:
    """The loop methods of `DistillTrainer` (they read `self.args`, `self.accelerator`, `self.state`, ...)."""

    def targets_for_batch(
        self, pixel_values: torch.Tensor, indices: Sequence[int], batch: dict | None = None
    ) -> torch.Tensor:
        """Targets of a training batch: from the cache (computed once per image), or recomputed every time.

        With a cache, the rows whose target a DataLoader worker already read (`batch["has_target"]`) come with the
        batch; the others are read or computed (and stored) here, by the training process, which alone writes.
        """
        indices = [int(i) for i in indices]
        cache = self.teacher_cache
        if cache is None:
            return self.compute_targets(pixel_values, indices, epoch=self.state.epoch)

        def compute(pv, idx):
            return self.compute_targets(pv, idx, epoch=None)

        known = batch.get("has_target") if batch is not None else None
        if not known or not any(known):
            crop_seeds = [crop_seed_for(self.args.seed, i) for i in indices]
            return cache.get_or_compute(indices, pixel_values, compute, crop_seeds)[0]
        targets = batch["targets"].to(pixel_values.device).float()
        missing = [row for row, ok in enumerate(known) if not ok]
        cache.hits += len(indices) - len(missing)
        if missing:
            rows = [indices[row] for row in missing]
            computed, _ = cache.get_or_compute(
                rows, pixel_values[missing], compute, [crop_seed_for(self.args.seed, i) for i in rows]
            )
            targets[missing] = computed
        return targets

    def normalize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The DataLoader's uint8 crops `(B, 3, R, R)` as the models' float32 input, normalized where they are (on
        the device, once the batch is there): a batch crosses to the device at 1 byte a value, not 4."""
        return normalize_pixels(pixel_values, self.pixel_mean, self.pixel_std)

    # ----------------------------------------------------------------------------------------------------------
    def _new_window(self) -> None:
        self._window_device = torch.zeros(_DEVICE_STATS, dtype=torch.float64, device=self.accelerator.device)
        self._window_host = [0.0] * _HOST_STATS
        self._window_unreadable: list[tuple[int, str]] = []

    def _micro_step(self, batch) -> None:
        """Forward and backward of one micro-batch; adds its statistics to the window's, reading nothing back."""
        pixel_values = batch["pixel_values"]
        batch_size = pixel_values.shape[0]
        host = self._window_host
        host[0] += float(batch.get("num_skipped", 0))
        host[1] += float(batch_size)
        self._window_unreadable.extend(batch.get("unreadable", []))
        self._teacher_images_in_step = 0
        if batch_size == 0:
            if self.accelerator.num_processes > 1:
                self._backward_empty()  # DDP needs every process in each backward
            return
        pixel_values = self.normalize_pixels(pixel_values)
        cache = self.teacher_cache
        hits, misses = (cache.hits, cache.misses) if cache is not None else (0, 0)
        indices = batch["indices"] if "indices" in batch else batch["index"].tolist()
        targets = self.targets_for_batch(pixel_values, indices, batch)
        host[2] += float(self._teacher_images_in_step)
        if cache is not None:
            host[3] += float(cache.hits - hits)
            host[4] += float(cache.misses - misses)
        with self.accelerator.autocast():
            tokens = self.student_patch_tokens(pixel_values)
        loss, cosine, mse = distillation_loss(tokens, targets, self.args.mse_scale)
        bad = ~(torch.isfinite(targets).all() & torch.isfinite(loss))
        # where, not multiply: a NaN loss must not turn the window's sums into NaN (NaN * 0).
        values = torch.stack([loss.detach(), cosine.detach(), mse.detach()]).double() * batch_size
        self._window_device += torch.cat([bad.double()[None], torch.where(bad, 0.0, values)])
        self.accelerator.backward(loss)

    def _backward_empty(self) -> None:
        """A process whose micro-batch lost every image to decoding errors still joins the gradient sync
        (DDP needs every process in each backward) with a zero loss on a blank image."""
        blank = torch.zeros(1, 3, self.resolution, self.resolution, device=self.accelerator.device)
        with self.accelerator.autocast():
            tokens = self.student_patch_tokens(blank)
        self.accelerator.backward(tokens.float().sum() * 0.0)

    def _window_totals(self) -> list[float]:
        """The window's statistics summed over processes: the one host sync of an optimizer step."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return self._window_device.tolist() + self._window_host
        host = torch.tensor(self._window_host, dtype=torch.float64).to(accelerator.device, non_blocking=True)
        return accelerator.reduce(torch.cat([self._window_device, host]), reduction="sum").tolist()

    def _end_of_window(self, running: list[float]) -> None:
        """One optimizer step (unless a micro-batch of the window went bad on some process, or held no image)."""
        args, state = self.args, self.state
        totals = self._window_totals()
        bad, sums = totals[0] > 0, totals[1:_DEVICE_STATS]
        skipped, images, teacher_images, hits, misses = totals[_DEVICE_STATS:]
        state.teacher_images += int(teacher_images)
        state.cache_hits += int(hits)
        state.cache_misses += int(misses)
        state.images_seen += int(images)
        if skipped > 0:
            self._record_unreadable(self._window_unreadable)
        if bad:
            self._record_bad_step()
        else:
            state.consecutive_bad_steps = 0
            running[0] += images
            for i, value in enumerate(sums):
                running[1 + i] += value
            if images > 0:  # a window whose every image was unreadable has nothing to step on
                if args.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(self.student.parameters(), args.max_grad_norm)
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        self._new_window()

    def _run_steps(self, progress) -> None:
        """Optimizer steps until `total_steps`, epoch after epoch, checkpointing and logging on the way."""
        args, accelerator, state = self.args, self.accelerator, self.state
        running = [0.0] * 4  # images, loss*B, cosine*B, mse*B since the last log
        self._new_window()
        while state.global_step < self.total_steps:
            self._set_epoch(state.epoch)
            dataloader = self.train_dataloader
            if state.batches_in_epoch:
                dataloader = accelerator.skip_first_batches(dataloader, state.batches_in_epoch)
            for batch in dataloader:
                with accelerator.accumulate(self.student):
                    self._micro_step(batch)
                    state.batches_in_epoch += 1
                    if not accelerator.sync_gradients:
                        continue
                    self._end_of_window(running)
                state.global_step += 1
                progress.update(1)
                if state.global_step % args.logging_steps == 0 or state.global_step == self.total_steps:
                    self._log_progress(running, progress)
                    running[:] = [0.0] * 4
                if args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0:
                    self.save_checkpoint()
                if state.global_step >= self.total_steps:
                    break
            else:
                # The epoch ran out (not stopped by max_steps): next epoch.
                self._end_epoch()
                continue
            break

    def _set_epoch(self, epoch: int) -> None:
        # Order (seedable sampler) and crops/views (dataset) are functions of (seed, epoch, index), so a resumed
        # run sees exactly what an uninterrupted one would, whatever the number of workers.
        self.train_dataloader.set_epoch(epoch)
        if hasattr(self.distill_dataset, "set_epoch"):
            self.distill_dataset.set_epoch(epoch)

    def _end_epoch(self) -> None:
        state = self.state
        if self.teacher_cache is not None:
            # Make this epoch's targets visible to every process (and its workers) before the next epoch.
            self.teacher_cache.flush()
            self.accelerator.wait_for_everyone()
            self.teacher_cache.refresh()
        # Short epochs (a handful of images) would flood the log.
        short = self.steps_per_epoch is not None and self.steps_per_epoch < self.args.logging_steps
        (logger.debug if short else logger.info)(
            f"Epoch {state.epoch} done at step {state.global_step}; {state.skipped_images} unreadable images "
            f"skipped so far, {state.skipped_steps} steps skipped."
        )
        state.epoch += 1
        state.batches_in_epoch = 0

    def _record_unreadable(self, local: list[tuple[int, str]]) -> None:
        """Note the unreadable images of this window (all processes'), warning once per file per run."""
        from accelerate.utils import gather_object

        found = gather_object(list(local)) if self.accelerator.num_processes > 1 else list(local)
        for index, reason in found:
            if str(index) not in self.state.unreadable_images:
                self.state.unreadable_images[str(index)] = reason
                logger.warning(f"Skipping unreadable image {reason} (reported once; skipped every epoch).")

    def _record_bad_step(self) -> None:
        state = self.state
        state.skipped_steps += 1
        state.consecutive_bad_steps += 1
        logger.warning(
            f"Step {state.global_step}: NaN/inf in the loss or the teacher targets; step skipped (no update). "
            f"{state.skipped_steps} skipped so far, {state.consecutive_bad_steps} in a row."
        )
        if state.consecutive_bad_steps >= self.args.max_bad_steps:
            last = list_checkpoints(self.output_dir)
            raise RuntimeError(
                f"{state.consecutive_bad_steps} consecutive steps had NaN/inf loss or teacher targets (at step "
                f"{state.global_step}, epoch {state.epoch}; --max_bad_steps {self.args.max_bad_steps}). Training "
                "stopped. Try a lower --learning_rate, --mixed_precision no, or check the images. "
                + (f"The last checkpoint is {last[-1]}." if last else "No checkpoint was saved.")
            )

    def _log_progress(self, running: list[float], progress) -> None:
        state = self.state
        images = max(running[0], 1.0)
        logs = {
            "train/loss": running[1] / images,
            "train/cosine": running[2] / images,
            "train/mse": running[3] / images,
            "train/lr": self.lr_scheduler.get_last_lr()[0],
            "train/epoch": state.epoch,
            "train/skipped_steps": state.skipped_steps,
            "train/skipped_images": state.skipped_images,
        }
        if running[0] == 0:
            logs = {k: v for k, v in logs.items() if k not in ("train/loss", "train/cosine", "train/mse")}
        self.accelerator.log(logs, step=state.global_step)
        progress.set_postfix({k.split("/")[1]: f"{v:.4g}" for k, v in logs.items() if k != "train/epoch"})
        logger.info(
            f"step {state.global_step}: " + ", ".join(f"{k.split('/')[1]}={v:.5g}" for k, v in logs.items())
        )
