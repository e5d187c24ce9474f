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
"""The plain-text table of the artifact measures (`phreg eval`, `phreg distill`'s summary).

Rows are the models measured (`artifacts.MODEL_ROWS` first, in that order, then any further row such as
`test_time_registers`), columns the measures of `artifacts.MEASURES`, with which way is better from
`metrics.HIGHER_IS_BETTER`.
"""

from __future__ import annotations

from .metrics import HIGHER_IS_BETTER

# Rows always shown first, in this order, and the measures in their table order: (key, label, short label).
MODEL_ROWS = ("base", "teacher", "student")
TEST_TIME_REGISTERS_ROW = "test_time_registers"  # the training-free baseline's row (`--test_time_registers`)
MEASURES = (
    ("outlier_ratio", "outlier ratio", "outlier ratio"),
    ("max_to_median_norm", "max/median norm", "max/median"),
    ("position_locked_energy", "position-locked energy", "pos.-locked"),
    ("teacher_agreement", "cosine to denoised teacher", "cos teacher"),
    ("local_smoothness", "local smoothness", "smoothness"),
)


def _better(key: str) -> str:
    return {True: "higher", False: "lower", None: ""}[HIGHER_IS_BETTER.get(key)]


def _footer(metrics: dict) -> str:
    footer = f"({metrics['num_images']} images at {metrics['resolution']} px: {metrics['images']}"
    skipped = metrics.get("num_skipped")
    if skipped:
        footer += f"; {skipped} unreadable image file{'s' if skipped != 1 else ''} skipped"
    return footer + ")"


def _cell(row: dict, key: str, width: int) -> str:
    return f"{row[key]:>{width}.4f}" if key in row else f"{'-':>{width}}"


def _table_by_measure(rows: dict, names: list[str], measures: list[tuple]) -> list[str]:
    """One row per measure, one column per model, the direction last (`examples/distill.py`'s layout)."""
    widths = [max(12, len(name) + 2) for name in names]
    header = (
        f"{'measure':<30}"
        + "".join(f"{name:>{w}}" for name, w in zip(names, widths, strict=True))
        + "   better"
    )
    lines = [header, "-" * len(header)]
    for key, label, _ in measures:
        cells = "".join(_cell(rows[name], key, w) for name, w in zip(names, widths, strict=True))
        lines.append(f"{label:<30}" + cells + f"   {_better(key)}")
    return lines


def _table_by_model(rows: dict, names: list[str], measures: list[tuple]) -> list[str]:
    """One row per model, one column per measure, a second header line with the direction (`phreg eval`)."""
    widths = [max(len(short), 9) + 2 for _, _, short in measures]
    columns = list(zip(measures, widths, strict=True))
    name_width = max(10, *(len(name) + 1 for name in names))
    header = f"{'model':<{name_width}}" + "".join(f"{short:>{w}}" for (_, _, short), w in columns)
    directions = f"{'better:':<{name_width}}" + "".join(
        f"{f'({_better(key)})' if _better(key) else '':>{w}}" for (key, _, _), w in columns
    )
    lines = [header, directions.rstrip(), "-" * len(header)]
    for name in names:
        lines.append(
            f"{name:<{name_width}}" + "".join(_cell(rows[name], key, w) for (key, _, _), w in columns)
        )
    return lines


def format_metrics_table(metrics: dict, models_as_rows: bool = False) -> str:
    """A plain-text table of the artifact measures in a `constants.METRICS_FILE` payload.

    Args:
        metrics: `{"num_images", "resolution", "images", "rows": {model: {measure: value}}}` (+ optional
            "num_skipped", reported in the footer).
        models_as_rows: one row per model (base, teacher, student) and one column per measure, with a second
            header line saying which way is better (`phreg eval`); default one row per measure with the direction
            in the last column (`examples/distill.py`).
    """
    rows = metrics["rows"]
    names = [name for name in MODEL_ROWS if name in rows] + [name for name in rows if name not in MODEL_ROWS]
    measures = [measure for measure in MEASURES if any(measure[0] in rows[name] for name in names)]
    layout = _table_by_model if models_as_rows else _table_by_measure
    return "\n".join([*layout(rows, names, measures), _footer(metrics)])


__all__ = ["MEASURES", "MODEL_ROWS", "TEST_TIME_REGISTERS_ROW", "format_metrics_table"]
