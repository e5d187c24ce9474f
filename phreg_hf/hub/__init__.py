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
"""Shipping a student: `phreg push`, the model card, what a saved student folder holds, dense-task reports.

`push.py` (upload plan and `phreg push`), `model_card.py` (rendering the card from `model_cards/`),
`student_folder.py` (config, code files, license of a saved student) and `dense_reports.py` (probe and mIoU
reports as card tables).

Imports: `phreg_hf.models` and the shared top-level modules only; it reads the JSON files a run wrote, by the
names in `phreg_hf.constants`. `phreg_hf.distill` imports it (a run writes its card and can push), not the other
way round.

`phreg_hf.hub` was one module before the subpackages; its names stay importable from here.
"""

from .push import *  # noqa: F403 - the public API of the former phreg_hf.hub module
from .push import __all__  # noqa: F401
