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
"""Dense-task reports beside a student, shown in its model card: the outcome users adopt PH-Reg for.

`phreg probe --out OUTPUT_DIR/phreg_dense_NAME.json` (linear-probe segmentation or depth) and
`phreg eval-segmentation --out OUTPUT_DIR/phreg_dense_NAME.json` (zero-shot open-vocabulary segmentation) write
reports that `phreg push` uploads with the model and the card turns into one table each (`dense_result_tables`);
`phreg benchmark segmentation|probe --out OUTPUT_DIR` writes `phreg_dense_benchmark_{segmentation,probe}.json`
(the paper's Table 1 / Table 2 shapes), shown the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# Reports that travel with a student and appear in its card.
DENSE_REPORT_GLOB = "phreg_dense_*.json"
# Row order of the tables (other rows follow in the report's order).
_MODEL_ORDER = ("clean", "base", "base_maskclip", "base_naclip", "teacher", "student")
# Shown in percent.
_PERCENT = {"mIoU", "pixel_accuracy", "delta1", "miou"}
_LABELS = {
    "mIoU": "mIoU (%)",
    "miou": "mIoU (%)",
    "pixel_accuracy": "pixel accuracy (%)",
    "rmse": "RMSE",
    "abs_rel": "AbsRel",
    "delta1": "delta1 (%)",
}


def dense_report_paths(folder: str | Path) -> list[Path]:
    """The dense-task reports in `folder`, sorted by name."""
    return sorted(Path(folder).glob(DENSE_REPORT_GLOB))


def _cell(key: str, value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.2f}" if key in _PERCENT else f"{value:.4f}"


def _table(path: Path, report: dict) -> dict:
    rows = report.get("rows")
    if not isinstance(rows, dict) or not rows:
        raise ValueError(
            f'{path} has no "rows" (one entry per model); re-run `phreg probe` / `phreg eval-segmentation` with '
            f"--out {path}, or remove the file to push without it."
        )
    if "benchmarks" in report and "columns" in report:  # phreg benchmark probe (Table 2)
        columns = report["columns"]
        names = list(rows)
        return {
            "file": path.name,
            "title": "Linear probes, the paper's benchmarks (Table 2)",
            "scope": f"benchmarks {', '.join(report['benchmarks'])}; paper (DINOv2-B) in the report",
            "columns": [f"{c['benchmark']} {_LABELS.get(c['metric'], c['metric'])}" for c in columns],
            "directions": ["higher" if c["higher_is_better"] else "lower" for c in columns],
            "rows": [
                {
                    "model": name,
                    "cells": [
                        _cell(c["metric"], rows[name]["cells"][f"{c['benchmark']}/{c['metric']}"]["value"])
                        for c in columns
                    ],
                }
                for name in names
            ],
        }
    if "benchmarks" in report:  # phreg benchmark segmentation (Table 1)
        sets = report["benchmarks"]
        titles = report.get("titles") or {}
        names = [n for n in _MODEL_ORDER if n in rows] + [n for n in rows if n not in _MODEL_ORDER]
        return {
            "file": path.name,
            "title": "Zero-shot open-vocabulary segmentation, the paper's benchmarks (Table 1)",
            "scope": f"mIoU (%) on {len(sets)} benchmarks; mean over those; paper numbers in the report",
            "columns": [f"{titles.get(n, n)} mIoU (%)" for n in sets] + ["mean mIoU (%)"],
            "directions": ["higher"] * (len(sets) + 1),
            "rows": [
                {
                    "model": name,
                    "cells": [_cell("miou", rows[name]["per_benchmark"].get(n)) for n in sets]
                    + [_cell("miou", rows[name].get("miou"))],
                }
                for name in names
            ],
        }
    if "primary_metric" in report:  # phreg probe
        better = report.get("higher_is_better") or {}
        metrics = list(better) or [report["primary_metric"]]
        title = f"Linear probe, {report.get('task', 'dense task')}"
        scope = (
            f"{report.get('num_train_pairs', '?')} training pairs ({report.get('train_data', '?')}), "
            f"{report.get('num_eval_pairs', '?')} scored ({report.get('eval_data', '?')}); frozen backbone, "
            "BatchNorm + 1x1 conv head on the last-layer patch tokens, the same seed and data for every model"
        )
        directions = ["higher" if better.get(m, True) else "lower" for m in metrics]
    else:  # phreg eval-segmentation
        metrics = ["miou"]
        title = "Zero-shot open-vocabulary segmentation"
        scope = (
            f"{report.get('num_images', '?')} images ({report.get('images', '?')}), "
            f"{len(report.get('classes') or [])} classes; label 255 ignored"
        )
        directions = ["higher"]
    names = [n for n in _MODEL_ORDER if n in rows] + [n for n in rows if n not in _MODEL_ORDER]
    return {
        "file": path.name,
        "title": title,
        "scope": scope,
        "columns": [_LABELS.get(m, m) for m in metrics],
        "directions": directions,
        "rows": [{"model": name, "cells": [_cell(m, rows[name].get(m)) for m in metrics]} for name in names],
    }


def dense_result_tables(folder: str | Path) -> list[dict]:
    """One table per dense-task report in `folder` (see the module docstring); ValueError names a bad file."""
    tables = []
    for path in dense_report_paths(folder):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-create it or remove it.") from None
        if not isinstance(report, dict):
            raise ValueError(f"{path} should hold a JSON object; re-create it or remove it.")
        tables.append(_table(path, report))
    return tables


__all__ = ["DENSE_REPORT_GLOB", "dense_report_paths", "dense_result_tables"]
