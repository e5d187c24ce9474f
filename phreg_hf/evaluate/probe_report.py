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
"""The report of `phreg probe`: built from the rows, printed as a table, written as strict JSON (schema in the
README, "Linear probes"; the model card reads it)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

logger = logging.getLogger(__name__)

REPORT_MODEL_ORDER = ("clean", "base", "teacher", "student")  # "clean": the probe demo's control row
# (metric key, column label, higher is better) per task; the first is the headline metric.
TASK_METRICS = {
    "segmentation": (("mIoU", "mIoU", True), ("pixel_accuracy", "pixel acc", True)),
    "depth": (("rmse", "RMSE", False), ("abs_rel", "AbsRel", False), ("delta1", "delta1", True)),
}


def build_report(args, probe, rows: dict[str, dict], **extra) -> dict:
    """The JSON report of `args` (`ProbeArguments`) and `probe` (the `LinearProbe` that made `rows`): task,
    metrics per model, data, protocol settings (schema in README, "Linear probes")."""
    metrics = TASK_METRICS[args.task]
    return {
        "task": args.task,
        "primary_metric": metrics[0][0],
        "higher_is_better": {key: higher for key, _, higher in metrics},
        "rows": rows,
        "num_train_pairs": len(probe.data.train),
        "num_eval_pairs": len(probe.data.eval),
        "train_data": probe.data.train.description,
        "eval_data": probe.data.eval.description,
        "num_classes": probe.data.num_classes,
        "crop_size": probe.crop_size,
        "stride": probe.stride,
        "feature_cache": probe.use_cache,
        "num_processes": probe.accelerator.num_processes,
        "mixed_precision": probe.accelerator.mixed_precision,
        "settings": {key: value for key, value in asdict(args).items() if key != "out"},
        **extra,
    }


def format_probe_table(report: dict) -> str:
    """One row per model, one column per metric, and the headline metric's change against the base model."""
    metrics = TASK_METRICS[report["task"]]
    key0, label0, higher0 = metrics[0]
    rows = report["rows"]
    names = [n for n in REPORT_MODEL_ORDER if n in rows] + [n for n in rows if n not in REPORT_MODEL_ORDER]
    width = max([10, *(len(name) + 1 for name in names)])  # e.g. "test_time_registers"
    header = f"{'model':<{width}}" + "".join(f"{label:>12}" for _, label, _ in metrics) + f"{'vs base':>12}"
    directions = f"{'better:':<{width}}" + "".join(
        f"{'(higher)' if h else '(lower)':>12}" for _, _, h in metrics
    )
    lines = [header, directions, "-" * len(header)]
    scale = {"mIoU": 100.0, "pixel_accuracy": 100.0, "delta1": 100.0}
    for name in names:
        row = rows[name]
        cells = "".join(
            f"{row[key] * scale.get(key, 1.0):>12.2f}" if row.get(key) is not None else f"{'-':>12}"
            for key, _, _ in metrics
        )
        delta = ""
        if name != "base" and row.get(key0) is not None and rows.get("base", {}).get(key0) is not None:
            delta = f"{(row[key0] - rows['base'][key0]) * scale.get(key0, 1.0):>+12.2f}"
        lines.append(f"{name:<{width}}{cells}{delta}")
    unit = " (mIoU, pixel acc, delta1 in %)" if report["task"] == "segmentation" else " (delta1 in %)"
    lines.append(
        f"({report['num_train_pairs']} training pairs: {report['train_data']}; {report['num_eval_pairs']} scored: "
        f"{report['eval_data']}; crop {report['crop_size']}, stride {report['stride']}, "
        f"{report['settings']['max_steps']} steps{unit})"
    )
    return "\n".join(lines)


def finite_report(report: dict) -> tuple[dict, list[str]]:
    """`(copy of report with every NaN / inf float replaced by None, dotted keys of those values)`: a head that
    diverged, or an image set that scores nothing, must not cost the rest of the report (strict JSON has no NaN)."""
    non_finite: list[str] = []

    def clean(value, key: str):
        if isinstance(value, float) and not math.isfinite(value):
            non_finite.append(key)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    return clean(report, ""), non_finite


def write_report(path: str | Path, report: dict, overwrite: bool = False) -> Path:
    """Write the report as indented JSON (parent folders created); returns the path.

    Refuses (ValueError naming the file) an existing file unless `overwrite`, an existing non-JSON file, and a file
    of a model folder (its config, weights, code) always. Values that are not finite are written as null and listed
    under "non_finite" (and logged), so the finite results of a long run are never lost at the last step.
    """
    from ..file_checks import check_output_file

    path = Path(path)
    if path.exists() and path.suffix.lower() != ".json":
        raise ValueError(
            f"--out {path} exists and is not a .json file; pass another path (it would be overwritten)."
        )
    check_output_file(path, "--out", overwrite)
    clean, non_finite = finite_report(report)
    if non_finite:
        clean["non_finite"] = non_finite
        logger.warning(
            "Not finite (NaN or inf), written as null in %s: %s. A head that diverged (lower --learning_rate) or "
            "features that are not finite give these.",
            path,
            ", ".join(non_finite),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, allow_nan=False, default=_json_default) + "\n")
    return path


def _json_default(value):
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


__all__ = [
    "REPORT_MODEL_ORDER",
    "TASK_METRICS",
    "build_report",
    "finite_report",
    "format_probe_table",
    "write_report",
]
