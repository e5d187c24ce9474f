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
"""The module paths of phreg-hf 0.1 (one flat folder), kept working for one release as aliases of their new homes.

`import phreg_hf.trainer` (or `from phreg_hf.trainer import DistillTrainer`) still works: it returns the module
`phreg_hf.distill.trainer` itself (the same object, so `isinstance`, monkeypatching and pickles agree) and warns
once per old path with a `FutureWarning` that names the new one. Nothing is imported until an old path is used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module (under phreg_hf) -> its new path. `phreg_hf.hub` became the package of the same name, which re-exports
# what the module held, so it needs no alias.
MOVED_MODULES = {
    "configuration_phreg": "phreg_hf.models.configuration_phreg",
    "modeling_phreg": "phreg_hf.models.modeling_phreg",
    "modeling_phreg_backbone": "phreg_hf.models.modeling_phreg_backbone",
    "modeling_phreg_clip": "phreg_hf.models.modeling_phreg_clip",
    "clip_dense": "phreg_hf.models.clip_dense",
    "pipeline_phreg_segmentation": "phreg_hf.models.pipeline_phreg_segmentation",
    "trainer": "phreg_hf.distill.trainer",
    "training_args": "phreg_hf.distill.arguments",
    "training_data": "phreg_hf.distill.training_data",
    "training_outputs": "phreg_hf.distill.outputs",
    "checkpointing": "phreg_hf.distill.checkpointing",
    "run_files": "phreg_hf.distill.run_files",
    "teacher_cache": "phreg_hf.distill.teacher_cache",
    "clip_training": "phreg_hf.distill.clip_training",
    "demo": "phreg_hf.distill.demo",
    "metrics": "phreg_hf.evaluate.metrics",
    "evaluation": "phreg_hf.evaluate.artifacts",
    "visualization": "phreg_hf.evaluate.visualization",
    "probe": "phreg_hf.evaluate.probe",
    "probe_data": "phreg_hf.evaluate.probe_data",
    "segmentation": "phreg_hf.evaluate.segmentation",
    "segmentation_eval": "phreg_hf.evaluate.segmentation_eval",
    "model_card": "phreg_hf.hub.model_card",
    "student_folder": "phreg_hf.hub.student_folder",
    "dense_reports": "phreg_hf.hub.dense_reports",
    "probe_demo": "phreg_hf.demos.probe_demo",
}
_warned: set[str] = set()


def import_moved(old_name: str):
    """The module that `phreg_hf.<old_name>` now is, after a one-time `FutureWarning` naming its new path."""
    new_path = MOVED_MODULES[old_name]
    if old_name not in _warned:
        _warned.add(old_name)
        warnings.warn(
            f"phreg_hf.{old_name} moved to {new_path}; import it from there. The old path is an alias that will be "
            "removed in the next release.",
            FutureWarning,
            stacklevel=3,
        )
    return importlib.import_module(new_path)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `phreg_hf.<old_name>` and hands back the module at its new path (no copy is made)."""

    _PREFIX = "phreg_hf."

    def find_spec(self, fullname, path=None, target=None):
        old_name = fullname[len(self._PREFIX) :] if fullname.startswith(self._PREFIX) else None
        if old_name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = import_moved(spec.name[len(self._PREFIX) :])
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The import system set the alias's spec on the module; give it back its own.
        module.__spec__ = self._real_spec


def install() -> None:
    """Make the old paths importable (done once by `import phreg_hf`). First in line: a stale file of the old name
    (an old copy of the package on the path) must not win over the moved module."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
