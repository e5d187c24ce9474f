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
"""Distillation: the trainer that teaches a student the denoised teacher's features.

`trainer.py` (setup and the loop, `DistillTrainer`), `arguments.py` (`DistillArguments`, parsed by
`HfArgumentParser`), `training_data.py` (images, checks, dataset identity), `teacher_cache.py` (targets on disk),
`checkpointing.py` (fingerprint, save, verified resume), `outputs.py` and `run_files.py` (what a finished run
writes), `clip_training.py` (the paper's CLIP recipe), `demo.py` (the offline demo's settings) and `cli.py` (the
command line: `phreg distill`, `python -m phreg_hf.distill` through `__main__.py`, `examples/distill.py`).

Imports: `phreg_hf.models`, the shared top-level modules (`data`, `teacher`, `seeding`, ...), and the two
packages a run ends with: `phreg_hf.evaluate` (the end-of-run measures and previews) and `phreg_hf.hub` (the
model card and `--push_to_hub`). Nothing imports this package but `phreg_hf.demos`, the CLI and the examples.
"""
