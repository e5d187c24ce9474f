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
"""Inference cost of a PH-Reg student vs its base model: latency and peak memory, printed as a markdown table.

    python benchmarks/bench_inference.py            # DINOv2-base size (hidden 768, 12 layers, patch 14)
    python benchmarks/bench_inference.py --small    # a tiny model, for a quick check (~20 s)

For every attention kernel x resolution x batch size, the stock `Dinov2Model` (base) and the PH-Reg student built
from it with 16 registers (`student_from_base(base, 16)`) run the same random input under `torch.inference_mode`,
in float32. The student processes 16 more tokens per image (1 + 16 + patches instead of 1 + patches): ~6% more at
224 px (256 patches), ~1% more at 518 px (1369 patches). Weights are random (no download): cost does not depend
on them.

Per cell and model:
1. Warmup: one untimed forward of the cell's exact shape (first calls of a shape pay for kernel setup and fresh
   memory; a single timed run without it would favour whichever model ran second). Peak memory is measured on
   it, and again on a second untimed forward when one takes less than `--max_timed_seconds / --repeats` (then the
   second, warm number is kept: one-time allocations would swamp a small cell's activations).
2. Timed forwards, base and student alternating (so a change in background load hits both), up to `--repeats`
   each, fewer once a model's timed forwards add up to `--max_timed_seconds` (at least one). The median is
   reported with the number of timed runs. A DINOv2-base forward at 518 px, batch 8, takes ~15-30 s on 2 CPU
   cores, so those cells get one timed run by default; the whole default run takes ~5 minutes on such a machine.

Peak memory is the extra memory of one forward (weights and input excluded):
- CUDA: `torch.cuda.max_memory_allocated()` during the forward minus the memory allocated before it.
- CPU (Linux, glibc): the process's peak resident set size during the forward minus its resident size before it.
  The peak (VmHWM) is reset through /proc/self/clear_refs; `malloc_trim(0)` first returns freed memory to the OS,
  and during measured forwards glibc serves every allocation >= 256 KiB with its own mmap (unmapped when freed),
  so the resident size follows torch's tensors rather than what malloc keeps cached. That allocator setting
  slows allocation, so timed forwards run with glibc's steady-state thresholds instead (mmap from 32 MiB, trim
  above 64 MiB: where its adaptive thresholds settle after large frees). It counts everything the process
  touches (oneDNN scratch, Python objects), so cells of a few MiB carry ~1 MiB of noise. Where this is not
  possible: "n/a".
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

from phreg_hf import student_from_base

CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_STATUS = Path("/proc/self/status")
# glibc mallopt parameters, and their values while measuring memory / while timing (see the module docstring).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MEASURE_MEMORY_THRESHOLDS = {M_MMAP_THRESHOLD: 256 * 1024, M_TRIM_THRESHOLD: 128 * 1024}
TIMING_THRESHOLDS = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 64 * 2**20}
FULL_SIZE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14, image_size=518)
SMALL_SIZE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=224)
MODELS = ("base", "student")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--small", action="store_true", help="tiny model (hidden 64, 2 layers) for a quick run"
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 518])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--attn", nargs="+", default=["eager", "sdpa"], help="attention kernels")
    parser.add_argument("--num_register_tokens", type=int, default=16, help="registers of the student")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="at most this many timed forwards per model and cell (default 3; 10 with --small)",
    )
    parser.add_argument(
        "--max_timed_seconds",
        type=float,
        default=15.0,
        help="stop timing a model in a cell once its timed forwards add up to this (at least one is timed)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return parser.parse_args()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Memory
class CpuMemoryProbe:
    """Peak resident memory of one call on Linux + glibc (see the module docstring); `available` says if usable."""

    def __init__(self) -> None:
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            CLEAR_REFS.write_text("5")
            self._status_kib("VmHWM")
            self.available = hasattr(self.libc, "mallopt") and hasattr(self.libc, "malloc_trim")
        except (OSError, KeyError):
            self.libc, self.available = None, False

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def _set_thresholds(self, thresholds: dict[int, int]) -> None:
        for parameter, value in thresholds.items():
            self.libc.mallopt(parameter, value)

    def timing_mode(self) -> None:
        if self.available:
            self._set_thresholds(TIMING_THRESHOLDS)

    def peak_extra_mib(self, forward: Callable[[], object]) -> float | None:
        if not self.available:
            forward()
            return None
        self._set_thresholds(MEASURE_MEMORY_THRESHOLDS)
        gc.collect()
        self.libc.malloc_trim(0)
        before = self._status_kib("VmRSS")
        CLEAR_REFS.write_text("5")  # VmHWM := current RSS
        result = forward()
        peak = self._status_kib("VmHWM") - before
        del result
        return peak / 1024


def cuda_peak_extra_mib(forward: Callable[[], object], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = forward()
    torch.cuda.synchronize(device)
    del result
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


# ---------------------------------------------------------------------------------------------------------------
# One cell
def forward_of(model: torch.nn.Module, pixel_values: torch.Tensor) -> Callable[[], torch.Tensor]:
    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(pixel_values=pixel_values).last_hidden_state

    return forward


def _timed(forward: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    forward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass
class Result:
    times: list[float]
    peak_mib: float | None


def warmup_and_peak_memory(forward: Callable[[], object], device: torch.device, probe, cheap_seconds: float):
    """Step 1 of the module docstring: the peak extra MiB (None if unmeasurable)."""
    measure = (lambda: cuda_peak_extra_mib(forward, device)) if device.type == "cuda" else None
    if measure is None:
        measure = (lambda: probe.peak_extra_mib(forward)) if device.type == "cpu" else None
    if measure is None:
        forward()
        return None
    start = time.perf_counter()
    peak = measure()
    if time.perf_counter() - start < cheap_seconds:
        peak = measure()
    return peak


def measure_cell(
    models: dict, pixel_values: torch.Tensor, args: argparse.Namespace, probe
) -> dict[str, Result]:
    """Warmup + memory per model, then alternating timed forwards (module docstring)."""
    device = pixel_values.device
    forwards = {name: forward_of(model, pixel_values) for name, model in models.items()}
    cheap_seconds = args.max_timed_seconds / args.repeats
    peaks = {name: warmup_and_peak_memory(f, device, probe, cheap_seconds) for name, f in forwards.items()}
    probe.timing_mode()

    def wants_more(times: list[float]) -> bool:
        return len(times) < args.repeats and (not times or sum(times) < args.max_timed_seconds)

    times: dict[str, list[float]] = {name: [] for name in models}
    while any(wants_more(t) for t in times.values()):
        for name, forward in forwards.items():
            if wants_more(times[name]):
                times[name].append(_timed(forward, device))
    return {name: Result(times[name], peaks[name]) for name in models}


def build_models(size: dict, attn: str, num_register_tokens: int, device: torch.device) -> dict:
    """The stock random-init `Dinov2Model` and its PH-Reg student, float32, eval mode."""
    torch.manual_seed(0)
    config = Dinov2Config(**size)
    config._attn_implementation = attn
    base = Dinov2Model(config).eval().to(device)
    return {"base": base, "student": student_from_base(base, num_register_tokens).eval().to(device)}


def cell_input(resolution: int, batch_size: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(resolution * 100 + batch_size)
    return torch.randn(batch_size, 3, resolution, resolution, generator=generator).to(device)


# ---------------------------------------------------------------------------------------------------------------
# Table
def _ratio(student: float | None, base: float | None) -> str:
    return "n/a" if student is None or not base else f"{student / base:.3f}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def markdown_table(cells: dict[tuple, dict[str, Result]], patch_size: int, num_register_tokens: int) -> str:
    header = (
        "| res | batch | attn | tokens base/student | base ms | student ms | runs | latency ratio "
        "| base peak MiB | student peak MiB | memory ratio |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for (attn, resolution, batch_size), results in cells.items():
        base, student = results["base"], results["student"]
        base_ms, student_ms = (statistics.median(r.times) * 1000 for r in (base, student))
        patches = (resolution // patch_size) ** 2
        lines.append(
            f"| {resolution} | {batch_size} | {attn} | {1 + patches}/{1 + num_register_tokens + patches} "
            f"| {base_ms:.1f} | {student_ms:.1f} | {len(base.times)}/{len(student.times)} "
            f"| {_ratio(student_ms, base_ms)} | {_mib(base.peak_mib)} | {_mib(student.peak_mib)} "
            f"| {_ratio(student.peak_mib, base.peak_mib)} |"
        )
    return "\n".join(lines)


def describe(args, size: dict, device: torch.device, probe) -> str:
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
        memory_how = "torch.cuda.max_memory_allocated during the forward minus allocated before"
    else:
        hardware = f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)"
        memory_how = (
            "peak RSS during the forward minus RSS before (VmHWM reset via /proc/self/clear_refs, malloc_trim "
            "first, glibc mmap threshold 256 KiB while measuring)"
            if probe.available
            else "not measurable here (needs Linux /proc/self/clear_refs and glibc)"
        )
    return (
        f"# PH-Reg inference cost: stock Dinov2Model (base) vs PH-Reg student with {args.num_register_tokens} "
        f"registers\n\nmodel: random-init DINOv2, hidden {size['hidden_size']}, {size['num_hidden_layers']} layers, "
        f"patch {size['patch_size']}{' (--small)' if args.small else ' (DINOv2-base size)'}; float32; "
        f"torch {torch.__version__}; {hardware}\n"
        f"latency: median of the timed forwards after a same-shape warmup, base and student alternating (runs = "
        f"timed forwards base/student, at most {args.repeats}, fewer once {args.max_timed_seconds:g} s are spent)\n"
        f"peak memory: extra MiB of one forward, {memory_how}\nratios: student / base\n"
    )


def main() -> None:
    args = parse_args()
    args.repeats = args.repeats or (10 if args.small else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = SMALL_SIZE if args.small else FULL_SIZE
    for resolution in args.resolutions:
        if resolution % size["patch_size"]:
            raise SystemExit(
                f"--resolutions: {resolution} is not a multiple of the patch size {size['patch_size']}."
            )
    probe = CpuMemoryProbe()
    start = time.perf_counter()
    cells: dict[tuple, dict[str, Result]] = {}
    for attn in args.attn:
        models = build_models(size, attn, args.num_register_tokens, device)
        for resolution in args.resolutions:
            for batch_size in args.batch_sizes:
                pixel_values = cell_input(resolution, batch_size, device)
                cells[attn, resolution, batch_size] = measure_cell(models, pixel_values, args, probe)
                log(f"{attn} {resolution} px batch {batch_size} done ({time.perf_counter() - start:.0f} s)")
        del models
        gc.collect()
    print(describe(args, size, device, probe))
    print(markdown_table(cells, size["patch_size"], args.num_register_tokens))


if __name__ == "__main__":
    main()
