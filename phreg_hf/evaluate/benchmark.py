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
"""`phreg benchmark segmentation` and `phreg benchmark probe`: the paper's Table 1 and Table 2, one command each.

    phreg benchmark segmentation --model STUDENT --base openai/clip-vit-base-patch16 --data_root data/ --out OUT
    phreg benchmark probe --base facebook/dinov2-base --student STUDENT --data_root data/ --out OUT

Each benchmark of `presets` runs in turn (`--benchmarks voc21,ade20k` or `all`) with its preset settings (any
option given wins, and the report records it), progress bars per benchmark and per image. A finished benchmark's
report is written at once to `OUT/<kind>/<name>.json` and reused by a repeated run with the same models, data and
settings (`benchmark_results`); the table goes to `OUT/phreg_dense_benchmark_<kind>.json`, which `phreg push`
shows in the model card when OUT is the student's folder. `--check_data` checks every layout and loads no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from tqdm.auto import tqdm

from . import presets
from .benchmark_results import ResultStore, model_fingerprint, settings_fingerprint
from .segmentation_eval import TTR_ROW_NAMES, model_names
from .ttr_rows import (
    check_ttr_options,
    has_test_time_registers,
    on_the_fly_fingerprint,
    test_time_registers_field,
    ttr_images_field,
    ttr_min_images_field,
    ttr_model_name,
    ttr_report,
)

SEGMENTATION_OVERRIDES = (
    "short_side",
    "crop_size",
    "stride",
    "prob_threshold",
    "logit_scale",
    "resize",
    "position_interpolation",
)


@dataclass
class BenchmarkSegmentationArguments:
    """Options of `phreg benchmark segmentation`."""

    model: str = field(metadata={"help": "Folder or Hub id of the PH-Reg CLIP student."})
    base: str = field(metadata={"help": "Folder or Hub id of the base CLIP (the MaskCLIP and NACLIP rows)."})
    data_root: str = field(
        metadata={"help": "MMSegmentation's data/ folder holding the sets (README layouts)."}
    )
    out: str = field(metadata={"help": "Folder for the results (e.g. the student's folder, for its card)."})
    test_time_registers: str | None = test_time_registers_field(TTR_ROW_NAMES)
    ttr_images: str | None = ttr_images_field(TTR_ROW_NAMES)
    ttr_min_images: int = ttr_min_images_field()
    benchmarks: str = field(
        default="all",
        metadata={"help": f"Comma-separated, or all: {', '.join(presets.SEGMENTATION_PRESETS)}."},
    )
    check_data: bool = field(default=False, metadata={"help": "Only check every layout, then exit."})
    max_images: int | None = field(default=None, metadata={"help": "Score at most this many images per set."})
    short_side: int | None = field(default=None, metadata={"help": "Override every preset's short side."})
    crop_size: int | None = field(default=None, metadata={"help": "Override every preset's crop."})
    stride: int | None = field(default=None, metadata={"help": "Override every preset's stride."})
    prob_threshold: float | None = field(
        default=None, metadata={"help": "Override every preset's threshold."}
    )
    logit_scale: float | None = field(default=None, metadata={"help": "Override the logit scale (40)."})
    resize: str | None = field(default=None, metadata={"help": "torch or reference (preset: reference)."})
    position_interpolation: str | None = field(
        default=None, metadata={"help": "transformers or reference (preset: reference)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Crops per forward pass."})
    device: str | None = field(
        default=None, metadata={"help": "'cpu', 'cuda', ... (default: cuda if available)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Recompute stored results of other models, data or settings."}
    )

    def __post_init__(self) -> None:
        check_ttr_options(self)


def _eval_arguments(args: BenchmarkSegmentationArguments, preset):
    from .segmentation_eval import EvalSegmentationArguments

    return EvalSegmentationArguments(
        model=args.model,
        base=args.base,
        out="",
        benchmark=preset.name,
        data_root=args.data_root,
        batch_size=args.batch_size,
        **{name: getattr(args, name) for name in SEGMENTATION_OVERRIDES},
    )


def run_segmentation_benchmarks(args: BenchmarkSegmentationArguments, progress: bool = True) -> dict:
    """Run (or reuse) every selected segmentation benchmark; returns the summary (also written to OUT)."""
    from ..models.pipeline_phreg_segmentation import (
        DEFAULT_LOGIT_SCALE,
        check_segmenter_settings,
        read_class_file,
    )
    from .artifacts import resolve_device
    from .benchmark_data import check_layout, format_checks, pairs_of
    from .segmentation_eval import (
        build_segmenters,
        label_rule,
        load_base_and_student,
        resolve_settings,
        rows_report,
        score_rows,
    )

    check_segmenter_settings(  # an override that would turn every pixel into background or noise
        DEFAULT_LOGIT_SCALE if args.logit_scale is None else args.logit_scale,
        0.0 if args.prob_threshold is None else args.prob_threshold,
        prefix="--",
    )
    chosen = presets.select(presets.SEGMENTATION_PRESETS, args.benchmarks, "segmentation")
    plans = []
    for preset in chosen:
        settings, overridden = resolve_settings(_eval_arguments(args, preset))
        classes = read_class_file(settings["class_names"])
        plans.append((preset, settings, overridden, classes, label_rule(settings, len(classes))))
    if args.check_data:
        checks = [
            check_layout(args.data_root, p.layout, f"{p.name} ({p.split})", rule, progress)
            for p, _, _, _, rule in plans
        ]
        return {"check": format_checks(checks), "ok": all(c.ok for c in checks)}
    store = ResultStore(args.out, "segmentation")
    models = {"base": model_fingerprint(args.base), "model": model_fingerprint(args.model)}
    if has_test_time_registers(args):  # absent otherwise: results stored without it stay reusable
        models["test_time_registers"] = ttr_model_fingerprint(args, models["base"])
    rows = presets.segmentation_rows(has_test_time_registers(args))
    # Every layout and every stored result is checked before any model loads or any hour is spent.
    jobs = []
    for preset, settings, overridden, classes, rule in plans:
        pairs = pairs_of(args.data_root, preset.layout, f"{preset.name} ({preset.split})")
        fingerprint = {
            "models": models,
            "data": pairs.fingerprint(),
            "settings": settings_fingerprint(
                {**settings, "max_images": args.max_images, "rows": _rows_key(rows)}
            ),
        }
        stored, status = store.lookup(preset.name, fingerprint, args.overwrite)
        jobs.append((preset, settings, overridden, classes, rule, pairs, fingerprint, stored, status))
    loaded = None
    results = {}
    for preset, settings, overridden, classes, rule, pairs, fingerprint, stored, status in tqdm(
        jobs, desc="benchmarks", unit="set", disable=not progress
    ):
        tqdm.write(f"{preset.name}: {status}")
        if stored is None:
            if loaded is None:
                loaded = load_base_and_student(args.base, args.model, resolve_device(args.device), args)
            segmenters = build_segmenters(loaded, rows, classes, settings, args.batch_size)
            triples = list(zip(pairs.names, pairs.images, pairs.labels, strict=True))
            accumulators, count = score_rows(
                segmenters, triples, rule, args.max_images, progress, preset.name, total=len(triples)
            )
            names = [synonyms[0] for synonyms in classes]
            stored = {
                "task": "zero-shot open-vocabulary semantic segmentation",
                "benchmark": preset.name,
                "num_images": count,
                "images": pairs.description,
                "classes": names,
                "settings": {**settings, **rule.describe()},
                "overridden": overridden,
                "rows": rows_report(rows, accumulators, model_names(args), names),
                "paper": preset.paper,
                **ttr_report(args, loaded.get("test_time_registers", (None,))[0]),
            }
            store.save(preset.name, stored, fingerprint)
        results[preset.name] = stored
    summary = segmentation_summary(results, args)
    from .segmentation_eval import write_json_atomically

    write_json_atomically(f"{args.out}/phreg_dense_benchmark_segmentation.json", summary)
    return summary


def _rows_key(rows) -> list:
    return [(r.name, r.option, r.mode) for r in rows]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def segmentation_summary(results: dict[str, dict], args) -> dict:
    """Table 1 as JSON: per row the mIoU (fraction) of each benchmark run and their mean, and the paper's."""
    names = list(results)
    rows = {}
    for row in presets.segmentation_rows(has_test_time_registers(args)):
        per = {n: results[n]["rows"][row.name]["miou"] for n in names}
        paper = {n: presets.SEGMENTATION_PRESETS[n].paper.get(row.paper) for n in names} if row.paper else {}
        rows[row.name] = {
            "model": model_names(args)[row.option],
            "mode": row.mode,
            "description": row.description,
            "per_benchmark": per,
            "miou": _mean(list(per.values())),
            "paper_label": row.paper,
            "paper_per_benchmark": paper,
            "paper_mean": _mean([v / 100 for v in paper.values() if v is not None]),
        }
    return {
        "task": "benchmark zero-shot segmentation",
        "benchmarks": names,
        "titles": {n: presets.SEGMENTATION_PRESETS[n].title for n in names},
        "num_images": {n: results[n]["num_images"] for n in names},
        "overridden": {n: results[n].get("overridden", {}) for n in names if results[n].get("overridden")},
        "rows": rows,
        **stored_ttr_record(results),
        "args": asdict(args),
    }


def ttr_model_fingerprint(args, base_fingerprint: str) -> str:
    """The test-time-registers model's part of the models fingerprint: a folder's file hashes, or for one built
    on the fly (`--ttr_images`) `ttr_rows.on_the_fly_fingerprint` (the base's, the images' and the settings')."""
    if args.test_time_registers:
        return model_fingerprint(args.test_time_registers)
    return on_the_fly_fingerprint(args, base_fingerprint)


def stored_ttr_record(results: dict[str, dict]) -> dict:
    """The test-time-registers record of the first result that has one (the same model made them all)."""
    for result in results.values():
        if result.get("test_time_registers"):
            return {"test_time_registers": result["test_time_registers"]}
    return {}


def format_segmentation_table(summary: dict) -> str:
    """Table 1's shape: one row per model with the paper's row under it; 8 set columns and the mean, in %."""
    every = list(presets.SEGMENTATION_PRESETS)
    done = set(summary["benchmarks"])
    width = max(16, *(len(name) + 1 for name in summary["rows"]))
    header = f"{'mIoU (%)':<{width}}" + "".join(f"{presets.SEGMENTATION_PRESETS[n].title:>8}" for n in every)
    header += f" |{'mean':>7}"
    lines = [header, "-" * len(header)]

    def cell(value, scale=100.0) -> str:
        return f"{value * scale:>8.2f}" if value is not None else f"{'-':>8}"

    for name, row in summary["rows"].items():
        ours = "".join(cell(row["per_benchmark"].get(n)) if n in done else f"{'-':>8}" for n in every)
        mean = row["miou"]
        lines.append(f"{name:<{width}}{ours} |{mean * 100 if mean is not None else float('nan'):>7.2f}")
        if row["paper_label"]:
            paper = "".join(
                cell(row["paper_per_benchmark"].get(n), 1.0) if n in done else f"{'-':>8}" for n in every
            )
            pmean = row["paper_mean"]
            lines.append(f"{'  paper ' + row['paper_label']:<{width}}{paper} |{pmean * 100:>7.2f}")
    count = len(done)
    lines.append(
        f"(mean over the {count} of {len(every)} sets run; paper: Table 1, OpenAI CLIP ViT-B/16"
        + ("; its 8-set means are MaskCLIP 32.21, NACLIP 39.41, PH-Reg 41.85)" if count < len(every) else ")")
    )
    if summary.get("overridden"):
        lines.append(f"(preset settings overridden: {summary['overridden']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Linear probes (Table 2)
PROBE_OVERRIDES = (
    "max_steps",
    "crop_size",
    "stride",
    "short_side",
    "per_device_train_batch_size",
    "learning_rate",
    "max_train_samples",
    "max_eval_samples",
)


@dataclass
class BenchmarkProbeArguments:
    """Options of `phreg benchmark probe`."""

    base: str = field(metadata={"help": "Hub id or folder of the stock base model (DINOv2-B in the paper)."})
    student: str = field(metadata={"help": "Folder (or Hub id) of the PH-Reg student."})
    data_root: str = field(metadata={"help": "Folder holding VOCdevkit/, ade/ and nyu/ (README layouts)."})
    out: str = field(metadata={"help": "Folder for the results (e.g. the student's folder, for its card)."})
    test_time_registers: str | None = test_time_registers_field()
    ttr_images: str | None = ttr_images_field()
    ttr_min_images: int = ttr_min_images_field()
    benchmarks: str = field(
        default="all", metadata={"help": f"Comma-separated, or all: {', '.join(presets.PROBE_PRESETS)}."}
    )
    check_data: bool = field(default=False, metadata={"help": "Only check every layout, then exit."})
    train_split_file: str | None = field(
        default=None,
        metadata={"help": "NYUv2 training list under nyu/ (default nyu_train.txt, 24231 pairs)."},
    )
    eval_split_file: str | None = field(
        default=None, metadata={"help": "NYUv2 test list under nyu/ (default nyu_test.txt, 654 pairs)."}
    )
    max_steps: int | None = field(default=None, metadata={"help": "Override every preset's steps."})
    crop_size: int | None = field(default=None, metadata={"help": "Override the crop (518)."})
    stride: int | None = field(default=None, metadata={"help": "Override the test stride (341)."})
    short_side: int | None = field(default=None, metadata={"help": "Override the short side (518; 0 keeps)."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Override the batch."})
    learning_rate: float | None = field(default=None, metadata={"help": "Override the learning rate."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training pairs."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Score at most this many pairs."})
    feature_cache: str = field(default="auto", metadata={"help": "auto, on or off (see phreg probe --help)."})
    eval_batch_size: int = field(default=8, metadata={"help": "Windows per backbone pass."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto, no, bf16 or fp16."})
    seed: int = field(default=0, metadata={"help": "Seeds heads, crops and order (same for both models)."})
    base_revision: str | None = field(default=None, metadata={"help": "Hub revision of --base."})
    overwrite: bool = field(
        default=False, metadata={"help": "Recompute stored results of other models, data or settings."}
    )

    def __post_init__(self) -> None:
        check_ttr_options(self)


def _probe_layouts(args: BenchmarkProbeArguments, preset):
    import dataclasses

    train, evaluation = preset.train, preset.eval
    if preset.task == "depth":
        if args.train_split_file:
            train = dataclasses.replace(train, split_file=args.train_split_file)
        if args.eval_split_file:
            evaluation = dataclasses.replace(evaluation, split_file=args.eval_split_file)
    return train, evaluation


def _probe_arguments(args: BenchmarkProbeArguments, preset):
    from .probe import ProbeArguments

    settings = preset.settings()
    overridden = {}
    for name in PROBE_OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            if name in settings and settings[name] != value:
                overridden[name] = {"preset": settings[name], "given": value}
            settings[name] = value
    known = {f.name for f in fields(ProbeArguments)}
    common = {k: getattr(args, k) for k in ("feature_cache", "eval_batch_size", "mixed_precision", "seed")}
    probe_args = ProbeArguments(
        base=args.base,
        student=args.student,
        base_revision=args.base_revision,
        test_time_registers=args.test_time_registers,
        ttr_images=args.ttr_images,
        ttr_min_images=args.ttr_min_images,
        **common,
        **{k: v for k, v in settings.items() if k in known},
    )
    return probe_args, overridden


def run_probe_benchmarks(args: BenchmarkProbeArguments, progress: bool = True) -> dict:
    """Run (or reuse) every selected probe benchmark; returns the summary (also written to OUT)."""
    from .benchmark_data import check_layout, format_checks, pairs_of
    from .probe import LinearProbe, _patch_size, build_report, load_models, make_accelerator
    from .probe_data import LabelledSource, ProbeData, check_pairs

    chosen = presets.select(presets.PROBE_PRESETS, args.benchmarks, "probe")
    plans = [(p, *_probe_arguments(args, p), *_probe_layouts(args, p)) for p in chosen]
    if args.check_data:
        checks = []
        for preset, probe_args, _, train, evaluation in plans:
            rule = probe_args.label_settings().rule if preset.task == "segmentation" else None
            for layout, split in ((train, preset.train_split), (evaluation, preset.eval_split)):
                what = f"{preset.name} ({split})"
                checks.append(check_layout(args.data_root, layout, what, rule, progress, depth=rule is None))
        return {"check": format_checks(checks), "ok": all(c.ok for c in checks)}
    store = ResultStore(args.out, "probe")
    models_fp = {
        "base": model_fingerprint(args.base, args.base_revision),
        "student": model_fingerprint(args.student),
    }
    if has_test_time_registers(args):  # absent otherwise: results stored without it stay reusable
        models_fp["test_time_registers"] = ttr_model_fingerprint(args, models_fp["base"])
    jobs = []
    for preset, probe_args, overridden, train_layout, eval_layout in plans:
        train = pairs_of(args.data_root, train_layout, f"{preset.name} ({preset.train_split})")
        evaluation = pairs_of(args.data_root, eval_layout, f"{preset.name} ({preset.eval_split})")
        models_given = ("base", "student", "out", "test_time_registers", "ttr_images", "ttr_min_images")
        settings = {k: v for k, v in asdict(probe_args).items() if k not in models_given}
        fingerprint = {
            "models": models_fp,
            "data": f"{train.fingerprint()}+{evaluation.fingerprint()}",
            "settings": settings_fingerprint(settings),
        }
        stored, status = store.lookup(preset.name, fingerprint, args.overwrite)
        jobs.append((preset, probe_args, overridden, train, evaluation, fingerprint, stored, status))
    accelerator = models = None
    results = {}
    for preset, probe_args, overridden, train, evaluation, fingerprint, stored, status in tqdm(
        jobs, desc="benchmarks", unit="set", disable=not progress
    ):
        tqdm.write(f"{preset.name}: {status}")
        if stored is None:
            if models is None:
                accelerator = make_accelerator(args.mixed_precision)
                models, mean, std = load_models(probe_args)
            sources = [
                LabelledSource(p.images, p.labels, [str(i) for i in p.images], p.description)
                for p in (train, evaluation)
            ]
            if probe_args.max_train_samples:
                sources[0] = sources[0].subset(range(min(probe_args.max_train_samples, len(sources[0]))))
            if probe_args.max_eval_samples:
                sources[1] = sources[1].subset(range(min(probe_args.max_eval_samples, len(sources[1]))))
            labels = probe_args.label_settings()
            for source, role in zip(sources, ("training", "evaluation"), strict=True):
                check_pairs(source, labels, f"{preset.name} {role}", progress)
            data = ProbeData(sources[0], sources[1], labels, preset.num_classes, tuple(mean), tuple(std))
            runner = LinearProbe(probe_args, data, _patch_size(models["student"]), accelerator)
            runner.show_progress = progress
            rows = runner.run(models)
            stored = build_report(
                probe_args,
                runner,
                rows,
                base_model=args.base,
                student=args.student,
                benchmark=preset.name,
                overridden=overridden,
                paper=preset.paper,
                train_split=preset.train_split,
                eval_split=preset.eval_split,
                **ttr_report(probe_args, models.get("test_time_registers")),
            )
            store.save(preset.name, stored, fingerprint)
        results[preset.name] = stored
    summary = probe_summary(results, args)
    from .segmentation_eval import write_json_atomically

    write_json_atomically(f"{args.out}/phreg_dense_benchmark_probe.json", summary)
    return summary


def probe_summary(results: dict[str, dict], args) -> dict:
    """Table 2 as JSON: per model the metrics of each probe benchmark, with the paper's DINOv2-B numbers."""
    columns = []
    for name, report in results.items():
        preset = presets.PROBE_PRESETS[name]
        for metric, higher in report["higher_is_better"].items():
            if metric in preset.paper:
                columns.append({"benchmark": name, "metric": metric, "higher_is_better": higher})
    rows = {}
    names = {"base": args.base, "student": args.student}
    if has_test_time_registers(args):
        names["test_time_registers"] = ttr_model_name(args)
    for model, given in names.items():
        cells = {}
        for column in columns:
            report = results[column["benchmark"]]
            value = report["rows"].get(model, {}).get(column["metric"])
            paper = presets.PROBE_PRESETS[column["benchmark"]].paper[column["metric"]].get(model)
            cells[f"{column['benchmark']}/{column['metric']}"] = {"value": value, "paper": paper}
        rows[model] = {"model": given, "cells": cells}
    return {
        "task": "benchmark linear probes",
        "benchmarks": list(results),
        "columns": columns,
        "rows": rows,
        **stored_ttr_record(results),
        "args": asdict(args),
    }


_PERCENT = {"mIoU", "delta1"}


def format_probe_benchmark_table(summary: dict) -> str:
    """Table 2's shape: base and student rows, the paper's DINOv2-B numbers under each; mIoU / delta1 in %."""
    width = max([18, *(len(model) + 2 for model in summary["rows"])])
    labels = [f"{presets.PROBE_PRESETS[c['benchmark']].title} {c['metric']}" for c in summary["columns"]]
    col = max(12, *(len(label) + 2 for label in labels)) if labels else 12
    header = f"{'linear probe':<{width}}" + "".join(f"{label:>{col}}" for label in labels)
    lines = [header, "-" * len(header)]
    paper_names = {"base": "DINOv2-B", "student": "PH-Reg"}
    for model, row in summary["rows"].items():
        ours, paper = [], []
        for column in summary["columns"]:
            key = f"{column['benchmark']}/{column['metric']}"
            value, reported = row["cells"][key]["value"], row["cells"][key]["paper"]
            scale = 100.0 if column["metric"] in _PERCENT else 1.0
            digits = 2 if column["metric"] in _PERCENT else 4
            ours.append(f"{value * scale:>{col}.{digits}f}" if value is not None else f"{'-':>{col}}")
            paper.append(f"{reported:>{col}.{digits}f}" if reported is not None else f"{'-':>{col}}")
        lines.append(f"{model:<{width}}" + "".join(ours))
        if model in paper_names:  # the paper has no test-time-registers row
            lines.append(f"{'  paper ' + paper_names[model]:<{width}}" + "".join(paper))
    lines.append("(paper: Table 2, DINOv2-B; mIoU and delta1 in %, RMSE in metres, AbsRel a ratio)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Command line
KINDS = {
    "segmentation": (BenchmarkSegmentationArguments, run_segmentation_benchmarks, format_segmentation_table),
    "probe": (BenchmarkProbeArguments, run_probe_benchmarks, format_probe_benchmark_table),
}


def benchmark_main(argv: Sequence[str] | None = None) -> int:
    """`phreg benchmark segmentation|probe ...`. Exit codes: 0 done, 2 bad input or data failing --check_data."""
    import sys

    from ..arg_parsing import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in KINDS:
        usage = "usage: phreg benchmark {segmentation,probe} [options]  (phreg benchmark segmentation --help)"
        if argv and argv[0] in ("-h", "--help"):
            print(usage)
            return 0
        print(f"{usage}\nphreg benchmark: the first argument must be segmentation or probe.", file=sys.stderr)
        return 2
    kind, rest = argv[0], argv[1:]
    arguments, work, table = KINDS[kind]
    description = {
        "segmentation": "The paper's Table 1: zero-shot segmentation on the 8 benchmarks (presets), resumable.",
        "probe": "The paper's Table 2: linear probes on VOC21, ADE20k and NYUv2 depth (presets), resumable.",
    }[kind]
    code, args, summary = run_cli(arguments, rest, f"phreg benchmark {kind}", description, work)
    if code is not None:
        return code
    if args.check_data:
        print(summary["check"])
        return 0 if summary["ok"] else 2
    print(table(summary))
    print(
        f"Results: {args.out}/{kind}/ (one JSON per benchmark), {args.out}/phreg_dense_benchmark_{kind}.json"
    )
    return 0


__all__ = [
    "BenchmarkProbeArguments",
    "BenchmarkSegmentationArguments",
    "benchmark_main",
    "format_probe_benchmark_table",
    "format_segmentation_table",
    "probe_summary",
    "run_probe_benchmarks",
    "run_segmentation_benchmarks",
    "segmentation_summary",
]
