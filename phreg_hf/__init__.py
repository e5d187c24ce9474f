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
"""PH-Reg for Hugging Face: post-hoc self-distilled registers for ViT, DINOv2, CLIP, SigLIP and DINOv3 vision models.

Importing this package registers the student configs with `AutoConfig`, the models with `AutoModel` and their
backbone forms with `AutoBackbone`, and marks them for `save_pretrained` to write an `auto_map` plus the code
files, so that people who never installed phreg-hf can load a saved student with `trust_remote_code=True`.

Layout, one folder per concern; imports run one way, from the bottom of this list to the top:

    models/     the code a checkpoint carries (configs, students, backbones, CLIP student, segmentation pipeline)
    evaluate/   label-free measures, pictures, linear probes, segmentation and mIoU (`phreg eval`, ...)
    hub/        model card and upload (`phreg push`)
    distill/    the trainer and what it needs (teacher cache, checkpoints, run outputs, the demo settings)
    demos/      offline demonstrations built from the others
    cli.py      the `phreg` command

`models/` imports nothing else of ours; `evaluate/` and `hub/` import `models/` and the shared top-level modules
(`data`, `teacher`, `seeding`, `file_checks`, `constants`, `arg_parsing`, `launch`, `synthetic*`), which import
each other and `models/` (`data` takes its RGB conversion from the segmentation pipeline, so both decode alike).
`tests/test_layout.py` checks these rules.
"""

from transformers import AutoBackbone, AutoConfig, AutoModel

from . import _moved_modules
from .constants import VERSION
from .evaluate.segmentation import register_segmentation_pipeline
from .models.configuration_phreg import (
    DEFAULT_NUM_REGISTER_TOKENS,
    PhregCLIPConfig,
    PhregCLIPVisionConfig,
    PhregDinov2Config,
    PhregDinov2WithRegistersConfig,
    PhregDinov3ViTConfig,
    PhregSiglipVisionConfig,
    PhregViTConfig,
)
from .models.configuration_phreg_ttr import PhregTestTimeRegistersConfig
from .models.modeling_phreg import (
    TRAINABLE_PARTS,
    PhregCLIPVisionModel,
    PhregDinov2Model,
    PhregDinov2WithRegistersModel,
    PhregRegisterMixin,
    PhregViTModel,
    student_class_for,
    student_from_base,
)
from .models.modeling_phreg_backbone import (
    PhregCLIPVisionBackbone,
    PhregDinov2Backbone,
    PhregDinov2WithRegistersBackbone,
    PhregViTBackbone,
)
from .models.modeling_phreg_clip import PhregCLIPModel
from .models.modeling_phreg_dinov3 import PhregDinov3ViTBackbone, PhregDinov3ViTModel
from .models.modeling_phreg_siglip import PhregSiglipVisionBackbone, PhregSiglipVisionModel
from .models.modeling_phreg_ttr import PhregTestTimeRegistersBackbone, PhregTestTimeRegistersModel

__version__ = VERSION

for _config_class, _model_class in (
    (PhregDinov2Config, PhregDinov2Model),
    (PhregViTConfig, PhregViTModel),
    (PhregCLIPVisionConfig, PhregCLIPVisionModel),
    (PhregDinov2WithRegistersConfig, PhregDinov2WithRegistersModel),
    (PhregCLIPConfig, PhregCLIPModel),
    (PhregSiglipVisionConfig, PhregSiglipVisionModel),
    (PhregDinov3ViTConfig, PhregDinov3ViTModel),
    (PhregTestTimeRegistersConfig, PhregTestTimeRegistersModel),
):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

for _backbone_class in (
    PhregDinov2Backbone,
    PhregViTBackbone,
    PhregCLIPVisionBackbone,
    PhregDinov2WithRegistersBackbone,
    PhregSiglipVisionBackbone,
    PhregDinov3ViTBackbone,
    PhregTestTimeRegistersBackbone,
):
    AutoBackbone.register(_backbone_class.config_class, _backbone_class, exist_ok=True)
    _backbone_class.register_for_auto_class("AutoBackbone")

# pipeline("phreg-open-vocabulary-segmentation", model=...) for students and base CLIPs alike.
register_segmentation_pipeline()

# `import phreg_hf.trainer` and the other module paths of 0.1 keep working for one release (with a FutureWarning).
_moved_modules.install()


def __getattr__(name: str):
    # `phreg_hf.segmentation.save_pretrained_with_pipeline` and friends, after `import phreg_hf` only.
    if name in _moved_modules.MOVED_MODULES:
        return _moved_modules.import_moved(name)
    raise AttributeError(f"module 'phreg_hf' has no attribute {name!r}")


__all__ = [
    "DEFAULT_NUM_REGISTER_TOKENS",
    "PhregCLIPConfig",
    "PhregCLIPModel",
    "PhregCLIPVisionBackbone",
    "PhregCLIPVisionConfig",
    "PhregCLIPVisionModel",
    "PhregDinov2Backbone",
    "PhregDinov2Config",
    "PhregDinov2Model",
    "PhregDinov2WithRegistersBackbone",
    "PhregDinov2WithRegistersConfig",
    "PhregDinov2WithRegistersModel",
    "PhregDinov3ViTBackbone",
    "PhregDinov3ViTConfig",
    "PhregDinov3ViTModel",
    "PhregRegisterMixin",
    "PhregSiglipVisionBackbone",
    "PhregSiglipVisionConfig",
    "PhregSiglipVisionModel",
    "PhregTestTimeRegistersBackbone",
    "PhregTestTimeRegistersConfig",
    "PhregTestTimeRegistersModel",
    "PhregViTBackbone",
    "PhregViTConfig",
    "PhregViTModel",
    "TRAINABLE_PARTS",
    "student_class_for",
    "student_from_base",
]
