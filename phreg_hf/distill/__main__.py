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
"""`python -m phreg_hf.distill` and `accelerate launch [--multi_gpu --num_processes N] -m phreg_hf.distill`: the
main job, as `phreg distill` runs it (`phreg_hf.distill.cli.distill_main`)."""

import sys

from .cli import MODULE_PROG, distill_main

if __name__ == "__main__":
    sys.exit(distill_main(prog=MODULE_PROG))
