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
"""Seeds that depend only on `(seed, index, purpose)`: the same on every machine, process and data-loader worker.

The crop of a cached image and the teacher's views of an image are drawn from these, so a run's targets and
batches do not depend on how the images are split over processes or workers, and `phreg eval` draws the same
views as the trainer's own end-of-run measures.
"""

from __future__ import annotations

import hashlib

MASK_63 = (1 << 63) - 1


def derived_seed(seed: int, index: int, purpose: str) -> int:
    """A 63-bit seed that depends only on `(seed, index, purpose)`, the same on every machine and process."""
    digest = hashlib.blake2b(f"phreg:{purpose}:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & MASK_63


def crop_seed_for(seed: int, index: int) -> int:
    """Seed of the fixed random crop of image `index` when targets are cached."""
    return derived_seed(seed, index, "crop")


def view_seed_for(seed: int, index: int, epoch: int | None = None) -> int:
    """Seed of the K teacher views of image `index` (fixed per image with a cache, else also per epoch)."""
    return derived_seed(seed, index, "views" if epoch is None else f"views-epoch{epoch}")


__all__ = ["crop_seed_for", "derived_seed", "view_seed_for"]
