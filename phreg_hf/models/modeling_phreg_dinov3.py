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
"""The PH-Reg student of a DINOv3 ViT (`DINOv3ViTModel`), its backbone and its stock export.

DINOv3 already has registers (4 in the released ViTs) and no learned position table: rotary position embeddings
(RoPE) rotate the queries and keys of the patch tokens. The student keeps the base's registers (frozen) and puts
PH-Reg's after them, as for `Dinov2WithRegisters` bases: `[CLS, base_reg_1 .. base_reg_M, reg_1 .. reg_N, patches]`.

The new registers get no rotary position, as DINOv3's CLS and own registers: DINOv3's attention rotates the last
`h*w` tokens of the sequence (the patches) and leaves every token before them as it is, whatever their number. So
nothing here changes the attention; the rotary angles of the patch grid only reach the blocks through
[`PhregRegisterMixin.block_kwargs`].

Since there is no position table, PH-Reg trains the registers, the patch embedding and the last block (the
`position_embeddings` part does not exist: `trainable_parts`).

This file imports only transformers, torch and the other PH-Reg model files, relatively: it travels with a saved
checkpoint for `trust_remote_code=True`.
"""

import torch
from torch import nn
from transformers import DINOv3ViTBackbone, DINOv3ViTConfig, DINOv3ViTModel, PreTrainedConfig
from transformers import initialization as init
from transformers.backbone_utils import filter_output_hidden_states
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.dinov3_vit.modeling_dinov3_vit import (
    DINOv3ViTBackboneOutput,
    DINOv3ViTEmbeddings,
    DINOv3ViTLayer,
    DINOv3ViTPreTrainedModel,
    DINOv3ViTRopePositionEmbedding,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_phreg import PhregDinov3ViTConfig
from .modeling_phreg import TRAINABLE_PARTS, PhregRegisterMixin, register_student_class
from .modeling_phreg_backbone import PhregBackboneMixin, register_backbone_class


class PhregDinov3ViTEmbeddings(DINOv3ViTEmbeddings):
    """The stock embeddings, sized by `num_base_register_tokens`: the base's own registers, not PH-Reg's."""

    def __init__(self, config: PhregDinov3ViTConfig) -> None:
        super().__init__(config)
        self.register_tokens = nn.Parameter(
            torch.empty(1, config.num_base_register_tokens, config.hidden_size)
        )


class PhregDinov3ViTLayers(nn.Module):
    """The transformer blocks under their stock names (`model.layer.<i>`), so that every base weight maps 1:1.

    A plain module, not the stock `DINOv3ViTEncoder` (a `PreTrainedModel` with its own forward and output
    capturing, which the student's forward replaces)."""

    def __init__(self, config: PhregDinov3ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([DINOv3ViTLayer(config) for _ in range(config.num_hidden_layers)])


@register_student_class
class PhregDinov3ViTModel(PhregRegisterMixin, DINOv3ViTPreTrainedModel):
    """DINOv3 ViT with PH-Reg registers after its own; weights of `DINOv3ViTModel`.

    `last_hidden_state` is `norm`-ed and `pooler_output` is its CLS token, as in `DINOv3ViTModel`. Any input size
    that is a multiple of the patch size works (RoPE has no native size); with 0 new registers the outputs equal the
    stock model's at every size. See `to_dinov3_vit` for a stock export.

    In training mode the stock RoPE jitters and rescales the patch coordinates (DINOv3's own augmentation, kept for
    fine-tuning). The PH-Reg trainer keeps `rope_embeddings` in eval mode (`eval_modules_during_distillation`):
    the denoised targets are computed at the exact patch grid, and a student seeing jittered positions would be
    taught to map other positions onto them.
    """

    config_class = PhregDinov3ViTConfig
    config: PhregDinov3ViTConfig
    backbone_class_name = "PhregDinov3ViTBackbone"
    backbone_module = "modeling_phreg_dinov3"  # the backbone form is in this file
    base_model_classes = (DINOv3ViTModel, DINOv3ViTBackbone)
    base_model_types = ("dinov3_vit",)
    refused_base_types = {
        "dinov3_convnext": (
            "DINOv3 ConvNeXt models (model_type 'dinov3_convnext') are convolutional: they have no tokens to add "
            "registers to. Use a DINOv3 ViT checkpoint (model_type 'dinov3_vit', e.g. "
            "facebook/dinov3-vitb16-pretrain-lvd1689m)."
        )
    }
    # No learned position table (RoPE): PH-Reg trains the other three parts.
    trainable_parts = tuple(part for part in TRAINABLE_PARTS if part != "position_embeddings")
    eval_modules_during_distillation = ("rope_embeddings",)
    # The stock prefix, "model", is the name of the block container: `student.base_model` would return the blocks
    # (not a PreTrainedModel). A prefix that names no attribute makes the student its own base model; no checkpoint
    # key starts with it, so loading is unaffected.
    base_model_prefix = "phreg_dinov3_vit"
    _no_split_modules = ["PhregDinov3ViTEmbeddings", "DINOv3ViTLayer"]
    # DINOv3 checkpoints always carry the mask token.
    has_mask_token = True

    def __init__(self, config: PhregDinov3ViTConfig):
        super().__init__(config)
        self._init_registers(config)
        self.embeddings = PhregDinov3ViTEmbeddings(config)
        self.rope_embeddings = DINOv3ViTRopePositionEmbedding(config)
        self.model = PhregDinov3ViTLayers(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        # The stock init draws the base registers only when `config.num_register_tokens > 0`, which here counts
        # PH-Reg's: with 0 new registers the base's would stay uninitialized memory.
        if isinstance(module, PhregDinov3ViTEmbeddings) and self.config.num_base_register_tokens > 0:
            init.trunc_normal_(module.register_tokens, mean=0.0, std=self.config.initializer_range)

    @classmethod
    def _config_kwargs_from_base(cls, base):
        kwargs = super()._config_kwargs_from_base(base)
        # The base's `num_register_tokens` are its own registers; ours counts PH-Reg's new ones.
        kwargs["num_base_register_tokens"] = kwargs.pop("num_register_tokens")
        return kwargs

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """As [`PhregRegisterMixin.forward`], with the signature of `DINOv3ViTModel.forward` (no
        `interpolate_pos_encoding`: RoPE takes any size)."""
        return super().forward(pixel_values, bool_masked_pos=bool_masked_pos, **kwargs)

    @property
    def num_base_prefix_tokens(self) -> int:
        return 1 + self.config.num_base_register_tokens

    def embed_patches(self, pixel_values, bool_masked_pos=None):
        return self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)

    def block_kwargs(self, pixel_values):
        # (cos, sin) of the h*w patches, in the dtype of the (already cast) pixels, as the stock forward computes
        # them. The attention rotates the last h*w tokens only: CLS and all registers stay unrotated.
        return {"position_embeddings": self.rope_embeddings(pixel_values)}

    def encoder_input_norm(self, hidden_states):
        return hidden_states

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        return self.model.layer

    @property
    def final_norm(self) -> nn.LayerNorm:
        return self.norm

    @property
    def position_embedding_parameters(self):
        return []  # RoPE: no parameters

    @property
    def patch_embedding_projection(self) -> nn.Conv2d:
        return self.embeddings.patch_embeddings

    def pool(self, hidden_states):
        sequence_output = self.norm(hidden_states)
        return sequence_output, sequence_output[:, 0]

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def to_dinov3_vit(self) -> DINOv3ViTModel:
        """Export to a stock transformers `DINOv3ViTModel` (loads with no remote code) whose registers are the
        base's then PH-Reg's (`num_register_tokens = M + N`). RoPE leaves all of them unrotated, so the export
        computes what this model computes, at every size."""
        fields = set(DINOv3ViTConfig.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__)
        values = {key: getattr(self.config, key) for key in fields if not key.startswith("_")}
        values["num_register_tokens"] = self.config.num_base_register_tokens + self.config.num_register_tokens
        config = DINOv3ViTConfig(**values)
        config._attn_implementation = self.config._attn_implementation
        exported = DINOv3ViTModel(config)
        state_dict = dict(self.state_dict())
        state_dict["embeddings.register_tokens"] = torch.cat(
            (state_dict["embeddings.register_tokens"], state_dict.pop("register_tokens")), 1
        )
        exported.load_state_dict(state_dict, strict=True)
        return exported.to(device=self.device, dtype=self.dtype).eval()


@register_backbone_class
class PhregDinov3ViTBackbone(PhregBackboneMixin, PhregDinov3ViTModel):
    """[`PhregDinov3ViTModel`] as a backbone, with the conventions of transformers' `DINOv3ViTBackbone`, so that
    with 0 new registers it returns what `DINOv3ViTBackbone` returns:

    - the last stage is always `norm`-ed, the others when `config.apply_layernorm`;
    - `reshape_hidden_states=False` gives the patch tokens, `(B, h*w, C)` (CLS and every register removed);
    - `config.return_class_token` (no field of the config; set it as an attribute, as for the stock backbone) adds
      the CLS token of each stage in `cls_tokens`.
    """

    @can_return_tuple
    @filter_output_hidden_states
    def forward(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> DINOv3ViTBackboneOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): normalized images, H and W multiples of
                the patch size.

        Returns:
            `DINOv3ViTBackboneOutput` whose `feature_maps` hold one `(B, hidden_size, h, w)` map per stage in
            `out_features` (`(B, h*w, hidden_size)` when `config.reshape_hidden_states` is False), `cls_tokens`
            one `(B, hidden_size)` tensor per stage when `config.return_class_token`; `last_hidden_state` is set
            as an attribute, as by the stock backbone.
        """
        grid_height, grid_width = self.check_pixel_values(pixel_values)
        outputs = PhregRegisterMixin.forward(self, pixel_values, **kwargs)
        return_class_token = getattr(self.config, "return_class_token", False)
        last_stage = len(self.stage_names) - 1
        feature_maps, cls_tokens = [], []
        for index, (stage, hidden_state) in enumerate(
            zip(self.stage_names, outputs.hidden_states, strict=True)
        ):
            if index == last_stage or self.config.apply_layernorm:
                hidden_state = self.norm(hidden_state)
            if stage not in self.out_features:
                continue
            if return_class_token:
                cls_tokens.append(hidden_state[:, 0])
            patches = hidden_state[:, self.num_prefix_tokens :]
            if self.config.reshape_hidden_states:
                patches = patches.unflatten(1, (grid_height, grid_width)).permute(0, 3, 1, 2).contiguous()
            feature_maps.append(patches)
        output = DINOv3ViTBackboneOutput(
            feature_maps=tuple(feature_maps),
            cls_tokens=tuple(cls_tokens) if return_class_token else None,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        output.last_hidden_state = outputs.last_hidden_state
        return output


__all__ = ["PhregDinov3ViTBackbone", "PhregDinov3ViTModel"]
