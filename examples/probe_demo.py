#!/usr/bin/env python
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
"""Offline demonstration: planted artifacts hurt a linear-probe segmentation, and PH-Reg recovers it.

    python examples/probe_demo.py                  # no network; about 1.5-2 minutes per seed on 2 lightly loaded CPU cores
    python examples/probe_demo.py --seeds 0 1 2    # one table per seed, then mean +- std over the seeds
    python examples/probe_demo.py --rows base test_time_registers   # only those rows (same numbers as in the full run)

SYNTHETIC on both sides (see `phreg_hf/demos/probe_demo.py`): a random-init DINOv2 with planted position-locked
artifacts (not a pretrained model), and a labelled set of scikit-image sample photos with drawn tinted shapes.
Rows: "clean" (the same weights, nothing planted), "base" (planted), "teacher" (its denoised teacher), "student"
(PH-Reg distilled from it) and "test_time_registers" (the training-free baseline on the planted model, its register
neurons found on the probe's training images); all probed with the same head initialisation, crops and steps.
"""

from __future__ import annotations

import argparse
import sys

from phreg_hf.data import SampleImagesUnavailable, sample_image_paths
from phreg_hf.demos.probe_demo import DEMO_ROWS, format_seed_summary, run_probe_demo, summarize_seeds
from phreg_hf.evaluate.probe import format_probe_table, write_report
from phreg_hf.evaluate.test_time_registers import format_register_neurons
from phreg_hf.file_checks import check_output_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="Seeds (shapes, distillation, probe)."
    )
    parser.add_argument("--num_images", type=int, default=72, help="Labelled images (2/3 train, 1/3 scored).")
    parser.add_argument("--distill_steps", type=int, default=400, help="Distillation steps of the student.")
    parser.add_argument("--probe_steps", type=int, default=1500, help="Training steps of each linear head.")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=DEMO_ROWS,
        default=list(DEMO_ROWS),
        help="Rows to probe (each is probed on its own, so a subset gives the same numbers as the full run).",
    )
    parser.add_argument(
        "--out",
        default=None,
        help='Write the reports as JSON here: {"reports": {seed: report}} and, with several seeds, "summary".',
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
    args = parser.parse_args(argv)
    try:
        sample_image_paths()  # the labelled set is drawn on scikit-image's photos: say so before any work
        if args.out:
            check_output_file(args.out, "--out", args.overwrite)  # before minutes of work, not after
    except (SampleImagesUnavailable, ValueError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    reports = {}
    for seed in args.seeds:
        report = run_probe_demo(
            num_images=args.num_images,
            distill_steps=args.distill_steps,
            probe_steps=args.probe_steps,
            seed=seed,
            rows=tuple(args.rows),
            progress=True,
        )
        reports[seed] = report
        print(f"\nseed {seed}:")
        print(format_probe_table(report))
        rows = report["rows"]
        print(
            f"runtime {report['runtime_s']:.0f} s (distillation {report['distill_runtime_s']:.0f} s; probes: "
            + ", ".join(f"{name} {row['runtime_s']:.0f} s" for name, row in rows.items())
            + ")"
        )
        search = report.get("test_time_registers_search")
        if search:
            neurons = {int(layer): ids for layer, ids in search["register_neurons"].items()}
            print(f"test-time registers: {search['norm_threshold_rule']}; register neurons:")
            print("\n".join(format_register_neurons(neurons)))
    summary = summarize_seeds(reports) if len(reports) > 1 else None
    if summary:
        print(f"\nmIoU (%) over seeds {', '.join(str(seed) for seed in reports)}, mean +- std:")
        print(format_seed_summary(summary))
    if args.out:
        payload = {"reports": {str(seed): report for seed, report in reports.items()}}
        if summary:
            payload["summary"] = summary
        write_report(args.out, payload, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
