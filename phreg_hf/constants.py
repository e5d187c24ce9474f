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
"""File names and defaults shared by the trainer (which writes the files), the evaluator and the model card."""

# phreg-hf's version: `phreg_hf.__version__`, and pyproject.toml reads it from here (one place to bump).
VERSION = "0.1.0"

# Written by the trainer into --output_dir: the settings of the run (see trainer.DistillTrainer.save_outputs).
TRAINING_SETTINGS_FILE = "phreg_training.json"
# Written by the trainer (held-out measurement at the end of training) and by `phreg eval --out`.
# Schema: {"num_images": int, "resolution": int, "images": str, "rows": {"base"|"teacher"|"student": {metric: float}}}
METRICS_FILE = "phreg_metrics.json"
# Optional before/after pictures from `phreg visualize`, uploaded with the model card when present.
PREVIEWS_DIR = "previews"
# Images measured by default, by `phreg eval --max_images` and the trainer's --num_eval_images alike (the first ones
# of a folder in sorted order), so that both measure the same held-out images.
DEFAULT_EVAL_IMAGES = 64
# Seed of the denoised teacher's views when measuring (`phreg eval --seed` and the trainer's final measures), so that
# both print the same teacher row for the same images.
MEASURE_VIEW_SEED = 0
