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
"""The PH-Reg student of a SigLIP vision tower (SigLIP, and SigLIP 2 fixed-resolution checkpoints), and its backbone.

SigLIP has no CLS token: its sequence is the patch tokens, summarized by an attention-pooling ("MAP") head. The
student puts its registers before the patches, `[reg_1 .. reg_N, patch_1 .. patch_{h*w}]`, so that, as for every
other student, `last_hidden_state[:, num_prefix_tokens:]` are the patches. The registers are inserted after the
position embeddings are added, so they get none.

SigLIP 2 comes in two forms. The fixed-resolution checkpoints (`google/siglip2-base-patch16-224`, ...) are
`model_type: siglip` checkpoints with SigLIP's architecture, and load here. The NaFlex ones
(`Siglip2VisionModel`) take ragged, pre-patchified inputs with a padding mask and one patch grid per image, which
the denoised teacher, its cache and the dense measures do not take: they are refused, with that reason.

This file imports only transformers, torch and the other PH-Reg model files, relatively: it travels with a saved
checkpoint for `trust_remote_code=True`.
"""

import torch
from torch import nn
from transformers import SiglipVisionModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.siglip.modeling_siglip import (
    SiglipEncoder,
    SiglipMultiheadAttentionPoolingHead,
    SiglipPreTrainedModel,
    SiglipVisionEmbeddings,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from .configuration_phreg import PhregSiglipVisionConfig
from .modeling_phreg import PhregRegisterMixin, register_student_class
from .modeling_phreg_backbone import PhregBackboneMixin, register_backbone_class

NAFLEX_REFUSAL = (
    "SigLIP 2 NaFlex models (Siglip2VisionModel, model_type '{model_type}') are not supported: their inputs are "
    "ragged pre-patchified sequences with a padding mask and one patch grid per image, which PH-Reg's denoised "
    "teacher (pixel shifts and flips), its target cache and the dense measures do not take. Use a SigLIP 2 "
    "fixed-resolution checkpoint instead (model_type 'siglip', e.g. google/siglip2-base-patch16-224), which loads "
    "as a SiglipVisionModel."
)


@register_student_class
class PhregSiglipVisionModel(PhregRegisterMixin, SiglipPreTrainedModel):
    """SigLIP vision tower with PH-Reg registers; weights of `SiglipVisionModel` (or a full `SiglipModel`).

    `last_hidden_state` is `post_layernorm`-ed, as in `SiglipVisionModel`, in the order `[registers, patches]`.
    `pooler_output` is SigLIP's attention-pooling head applied to the patch tokens only (None for a tower built
    without the head, `vision_use_head=False`):

    - the head is frozen (no PH-Reg part) and its probe, keys and values were trained on patch tokens only;
    - PH-Reg constrains the patch tokens only; the registers' outputs are free (high norms are their job). If the
      frozen head could attend to them, an unsupervised quantity would steer the image embedding that zero-shot
      classification, retrieval and VLM adapters use. Without them, the pooled output moves only as far as the
      distilled patch tokens move;
    - with 0 registers the slice is the whole sequence, so the pooled output is the base's exactly.

    Position embeddings are always interpolated as `SiglipVisionModel(..., interpolate_pos_encoding=True)` does
    (at the native square size the table is used as it is), so any size that is a multiple of the patch size works
    and, with 0 registers, outputs equal the stock model's. `interpolate_pos_encoding=False` asks for the native
    size only, and other sizes are refused with a clear error (the stock model fails with a broadcast error).
    """

    config_class = PhregSiglipVisionConfig
    config: PhregSiglipVisionConfig
    backbone_class_name = "PhregSiglipVisionBackbone"
    backbone_module = "modeling_phreg_siglip"  # the backbone form is in this file
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _input_embed_layer = "patch_embedding"
    base_model_classes = (SiglipVisionModel,)
    base_model_types = ("siglip_vision_model", "siglip")
    refused_base_types = {
        model_type: NAFLEX_REFUSAL.format(model_type=model_type)
        for model_type in ("siglip2", "siglip2_vision_model")
    }
    # A full SigLIP checkpoint (or an image classifier): only its vision tower is used.
    unused_checkpoint_keys = (r"^text_model\.", r"^logit_scale$", r"^logit_bias$", r"^classifier\.")
    has_cls_token = False
    # SigLIP was never trained with masked patches: no mask token.
    has_mask_token = False

    def __init__(self, config: PhregSiglipVisionConfig):
        super().__init__(config)
        self._init_registers(config)
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.use_head = config.vision_use_head
        if self.use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """As [`PhregRegisterMixin.forward`], with the signature of `SiglipVisionModel.forward`: SigLIP has no mask
        token, so `bool_masked_pos` is no declared argument (passed anyway, it is refused with a clear error)."""
        return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)

    @property
    def num_base_prefix_tokens(self) -> int:
        return 0  # no CLS: the registers go first

    def embed_patches(self, pixel_values, bool_masked_pos=None):
        # At the native square size SigLIP's interpolation returns the table unchanged.
        return self.embeddings(pixel_values, interpolate_pos_encoding=True)

    def encoder_input_norm(self, hidden_states):
        return hidden_states

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        return self.encoder.layers

    @property
    def final_norm(self) -> nn.LayerNorm:
        return self.post_layernorm

    @property
    def position_embedding_parameters(self):
        return [self.embeddings.position_embedding.weight]  # (h*w, C): no CLS row

    @property
    def patch_embedding_projection(self) -> nn.Conv2d:
        return self.embeddings.patch_embedding

    def pool(self, hidden_states):
        sequence_output = self.post_layernorm(hidden_states)
        if not self.use_head:
            return sequence_output, None
        # The frozen head pools the patch tokens only, what it was trained on (see the class docstring).
        return sequence_output, self.head(sequence_output[:, self.num_prefix_tokens :])

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding


@register_backbone_class
class PhregSiglipVisionBackbone(PhregBackboneMixin, PhregSiglipVisionModel):
    """[`PhregSiglipVisionModel`] as a backbone (stock transformers has no SigLIP backbone; this follows
    `Dinov2Backbone`). `apply_layernorm` applies SigLIP's `post_layernorm`; with `reshape_hidden_states=False` the
    maps are the patch tokens, `(B, h*w, C)`, as SigLIP has no CLS."""


__all__ = ["PhregSiglipVisionBackbone", "PhregSiglipVisionModel"]
