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
"""Measuring and using a student: what `phreg eval`, `visualize`, `probe`, `segment` and `eval-segmentation` run.

`metrics.py` (label-free artifact measures), `artifacts.py` (`phreg eval`: base vs denoised teacher vs student,
and the model loading the other commands share), `model_checks.py` (the checks they share),
`visualization.py` (norm maps and PCA pictures), `probe.py`, `probe_arguments.py`, `probe_data.py` and
`probe_report.py` (linear-probe segmentation and depth), `segmentation.py` (`phreg segment`) with
`segment_outputs.py` (its output folder: one run at a time, written as one set), `segmentation_eval.py` (mIoU),
`test_time_registers.py` with `test_time_registers_cli.py` (the training-free baseline) and `ttr_rows.py` (its
rows in the other commands).

Imports: `phreg_hf.models` and the shared top-level modules only. It reads what a distillation saved (folders,
JSON files), never the trainer's code: `phreg_hf.distill` imports this package, not the other way round.
"""
