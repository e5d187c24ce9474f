"""PH-Reg for Hugging Face: post-hoc self-distilled registers for ViT, DINOv2 and CLIP vision models.

Importing this package registers the student configs with `AutoConfig` and the models with `AutoModel`, and
marks them for `save_pretrained` to write an `auto_map` plus the code files, so that people who never
installed phreg-hf can load a saved student with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_phreg import (
    DEFAULT_NUM_REGISTER_TOKENS,
    PhregCLIPConfig,
    PhregCLIPVisionConfig,
    PhregDinov2Config,
    PhregViTConfig,
)
from .modeling_phreg import (
    TRAINABLE_PARTS,
    PhregCLIPVisionModel,
    PhregDinov2Model,
    PhregRegisterMixin,
    PhregViTModel,
    student_class_for,
    student_from_base,
)
from .modeling_phreg_clip import PhregCLIPModel
from .segmentation import register_segmentation_pipeline

__version__ = "0.1.0"

for _config_class, _model_class in (
    (PhregDinov2Config, PhregDinov2Model),
    (PhregViTConfig, PhregViTModel),
    (PhregCLIPVisionConfig, PhregCLIPVisionModel),
    (PhregCLIPConfig, PhregCLIPModel),
):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

# pipeline("phreg-open-vocabulary-segmentation", model=...) for students and base CLIPs alike.
register_segmentation_pipeline()

__all__ = [
    "DEFAULT_NUM_REGISTER_TOKENS",
    "PhregCLIPConfig",
    "PhregCLIPModel",
    "PhregCLIPVisionConfig",
    "PhregCLIPVisionModel",
    "PhregDinov2Config",
    "PhregDinov2Model",
    "PhregRegisterMixin",
    "PhregViTConfig",
    "PhregViTModel",
    "TRAINABLE_PARTS",
    "student_class_for",
    "student_from_base",
]
