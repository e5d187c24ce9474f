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
"""PH-Reg students as transformers backbones (`AutoBackbone`), for dense heads such as DPT and UperNet.

Each backbone IS its student model (same modules, same parameter names) plus transformers' `BackboneMixin`, so
`AutoBackbone.from_pretrained(student_dir, out_indices=[...])` loads a saved student's weights as they are, and
a student's `state_dict` loads into the `backbone` of a `DPTForDepthEstimation` / `UperNetForSemanticSegmentation`
built from its `backbone_config`.

Feature maps follow `Dinov2Backbone`: stage 0 (`stem`) is the embedding output, stage i the output of block i;
`apply_layernorm` applies the model's final norm (`layernorm`; CLIP: `post_layernorm`, the norm of its dense
tokens); `reshape_hidden_states` gives `(B, C, h, w)` patch maps. The CLS token and all registers are removed
from the maps, so with 0 registers `PhregDinov2Backbone` returns exactly what `Dinov2Backbone` returns. With
`reshape_hidden_states=False` the maps are `(B, 1 + h*w, C)`: CLS then patches, registers removed, which is what
heads written for `[CLS, patches]` sequences (DPT's readout) expect. The SigLIP and DINOv3 backbones live beside
their models (`modeling_phreg_siglip.py`, `modeling_phreg_dinov3.py`); DINOv3's follows `DINOv3ViTBackbone`.

This file imports only transformers, torch and the other two PH-Reg files, relatively: it travels with saved
checkpoints for `trust_remote_code=True`.
"""

import torch
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_outputs import BackboneOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .modeling_phreg import (
    PhregCLIPVisionModel,
    PhregDinov2Model,
    PhregDinov2WithRegistersModel,
    PhregRegisterMixin,
    PhregViTModel,
)


class PhregBackboneMixin(BackboneMixin):
    """`BackboneMixin` on top of a PH-Reg student: feature maps of chosen stages, CLS and registers removed."""

    def __init__(self, config):
        super().__init__(config)
        # One entry per stage (stem + every block), as Dinov2Backbone: every stage has hidden_size channels.
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): normalized images, H and W multiples of
                the patch size.
            kwargs: as for the student's forward (`output_hidden_states`, `output_attentions`, `return_dict`).

        Returns:
            [`~transformers.modeling_outputs.BackboneOutput`] whose `feature_maps` hold one tensor per stage in
            `out_features`: `(B, hidden_size, H / patch_size, W / patch_size)`, or `(B, 1 + h*w, hidden_size)`
            (CLS + patches; `(B, h*w, hidden_size)` for a base without CLS, SigLIP) when
            `config.reshape_hidden_states` is False.
        """
        grid_height, grid_width = self.check_pixel_values(pixel_values)
        # BackboneMixin's own `forward` is abstract: run the student's.
        outputs = PhregRegisterMixin.forward(self, pixel_values, **kwargs)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, outputs.hidden_states, strict=True):
            if stage not in self.out_features:
                continue
            if self.config.apply_layernorm:
                hidden_state = self.final_norm(hidden_state)
            patches = hidden_state[:, self.num_prefix_tokens :]
            if self.config.reshape_hidden_states:
                hidden_state = (
                    patches.unflatten(1, (grid_height, grid_width)).permute(0, 3, 1, 2).contiguous()
                )
            elif self.has_cls_token:
                hidden_state = torch.cat((hidden_state[:, :1], patches), dim=1)
            else:  # SigLIP: no CLS to keep
                hidden_state = patches
            feature_maps += (hidden_state,)
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class PhregDinov2Backbone(PhregBackboneMixin, PhregDinov2Model):
    """[`PhregDinov2Model`] as a backbone; with 0 registers, the feature maps of `Dinov2Backbone`."""


class PhregViTBackbone(PhregBackboneMixin, PhregViTModel):
    """[`PhregViTModel`] as a backbone (stock transformers has no ViT backbone; this follows `Dinov2Backbone`)."""


class PhregCLIPVisionBackbone(PhregBackboneMixin, PhregCLIPVisionModel):
    """[`PhregCLIPVisionModel`] as a backbone; `apply_layernorm` applies CLIP's `post_layernorm`."""


class PhregDinov2WithRegistersBackbone(PhregBackboneMixin, PhregDinov2WithRegistersModel):
    """[`PhregDinov2WithRegistersModel`] as a backbone; the base's registers and PH-Reg's are both removed."""


# The backbone forms in other files (SigLIP, DINOv3, beside their models) add themselves: they import this file.
BACKBONE_CLASSES = [
    PhregDinov2Backbone,
    PhregViTBackbone,
    PhregCLIPVisionBackbone,
    PhregDinov2WithRegistersBackbone,
]


def register_backbone_class(backbone_class: type) -> type:
    """Make `backbone_class_for` find `backbone_class` by its config's `model_type`."""
    if backbone_class not in BACKBONE_CLASSES:
        BACKBONE_CLASSES.append(backbone_class)
    return backbone_class


def backbone_class_for(model_type: str) -> type[PhregBackboneMixin] | None:
    """The backbone class for a student config's `model_type` (e.g. "phreg_dinov2"), None if there is none."""
    for backbone_class in BACKBONE_CLASSES:
        if backbone_class.config_class.model_type == model_type:
            return backbone_class
    return None


__all__ = [
    "PhregCLIPVisionBackbone",
    "PhregDinov2Backbone",
    "PhregDinov2WithRegistersBackbone",
    "PhregViTBackbone",
    "backbone_class_for",
    "register_backbone_class",
]
