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
"""PH-Reg student models: a Hugging Face ViT, DINOv2 or CLIP vision backbone plus learnable register tokens.

One register mechanism ([`PhregRegisterMixin`], in `modeling_phreg_registers.py`) serves every backbone; each
backbone only says, in a short adapter, where its embeddings, transformer blocks and norms live (SigLIP and DINOv3
in their own files, `modeling_phreg_siglip.py` and `modeling_phreg_dinov3.py`). The backbone modules are transformers' own
(embeddings, layers, norms), with the same parameter names as the stock model, so every base weight maps 1:1
and, with zero registers, a student computes exactly what the base model computes.

Token order in ``last_hidden_state`` is ``[CLS, reg_1 .. reg_N, patch_1 .. patch_{h*w}]``, the order of
transformers' ``Dinov2WithRegistersModel``. Registers are inserted after the position embeddings have been
added, so they get none.

This file imports only transformers, torch and the other PH-Reg model files, relatively: it is the code that travels with a
saved checkpoint for ``AutoModel.from_pretrained(path, trust_remote_code=True)``.
"""

import os

import torch
from torch import nn
from transformers import (
    AutoConfig,
    CLIPVisionModel,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PreTrainedConfig,
    PreTrainedModel,
    ViTModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPPreTrainedModel, CLIPVisionEmbeddings
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings, Dinov2Encoder, Dinov2PreTrainedModel
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
    Dinov2WithRegistersEmbeddings,
    Dinov2WithRegistersEncoder,
    Dinov2WithRegistersPreTrainedModel,
)
from transformers.models.vit.modeling_vit import ViTEmbeddings, ViTLayer, ViTPooler, ViTPreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from .configuration_phreg import (
    PhregCLIPVisionConfig,
    PhregDinov2Config,
    PhregDinov2WithRegistersConfig,
    PhregViTConfig,
)
from .modeling_phreg_registers import (  # noqa: F401  (re-exported: the public paths of 0.1 and 0.2)
    BACKBONE_MODULE,
    STUDENT_CLASSES,
    TRAINABLE_PARTS,
    PhregRegisterMixin,
    _check_num_register_tokens,
    backbone_file,
    check_clip_config_has_towers,
    config_class_name_for,
    copy_backbone_file,
    register_student_class,
    student_class_for,
    student_class_name_for,
)


class _Dinov2ModuleLayout:
    """Where a DINOv2-layout student (`embeddings`, `encoder.layer`, final `layernorm`) keeps what the register
    mechanism needs: shared by `PhregDinov2Model` and `PhregDinov2WithRegistersModel`."""

    def embed_patches(self, pixel_values, bool_masked_pos=None):
        return self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)

    def encoder_input_norm(self, hidden_states):
        return hidden_states

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        return self.encoder.layer

    @property
    def final_norm(self) -> nn.LayerNorm:
        return self.layernorm

    @property
    def position_embedding_parameters(self):
        return [self.embeddings.position_embeddings]

    @property
    def patch_embedding_projection(self) -> nn.Conv2d:
        return self.embeddings.patch_embeddings.projection

    def pool(self, hidden_states):
        sequence_output = self.layernorm(hidden_states)
        return sequence_output, sequence_output[:, 0]

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings


class PhregDinov2Model(PhregRegisterMixin, _Dinov2ModuleLayout, Dinov2PreTrainedModel):
    """DINOv2 with PH-Reg registers; weights of `Dinov2Model`, architecture of `Dinov2WithRegistersModel`.

    `last_hidden_state` is final-normed (`layernorm`), as in `Dinov2Model`; `pooler_output` is its CLS token.
    Position embeddings are interpolated as `Dinov2Model` does (bicubic, no antialias), so with 0 registers the
    outputs equal `Dinov2Model`'s at every resolution. See `to_dinov2_with_registers` for a stock export.
    """

    config_class = PhregDinov2Config
    config: PhregDinov2Config
    backbone_class_name = "PhregDinov2Backbone"
    base_model_classes = (Dinov2Model,)
    base_model_types = ("dinov2",)

    def __init__(self, config: PhregDinov2Config):
        super().__init__(config)
        self._init_registers(config)
        self.embeddings = Dinov2Embeddings(config)
        self.encoder = Dinov2Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @property
    def has_mask_token(self) -> bool:
        return self.embeddings.mask_token is not None

    def to_dinov2_with_registers(self) -> Dinov2WithRegistersModel:
        """Export to a stock transformers `Dinov2WithRegistersModel` (loads with no remote code).

        The two share every weight, so at the native resolution (square, `config.image_size`, where no
        position-embedding interpolation happens) outputs are identical up to float rounding (tested at atol
        1e-5 in float32). At other resolutions `Dinov2WithRegistersModel` interpolates position embeddings with
        antialiasing, `Dinov2Model` (and this class) without, so outputs differ there: keep the native size, or
        use this class, when exact agreement matters.
        """
        state_dict = dict(self.state_dict())
        state_dict["embeddings.register_tokens"] = state_dict.pop("register_tokens")
        if "embeddings.mask_token" not in state_dict:  # a base built with use_mask_token=False
            state_dict["embeddings.mask_token"] = torch.zeros(1, self.config.hidden_size, dtype=self.dtype)
        return _export_dinov2_with_registers(self, state_dict, self.config.num_register_tokens)


def _export_dinov2_with_registers(
    student, state_dict: dict, num_register_tokens: int
) -> Dinov2WithRegistersModel:
    """A stock `Dinov2WithRegistersModel` with the student's config fields and the given weights (strict load)."""
    fields = set(Dinov2WithRegistersConfig.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__)
    values = {key: getattr(student.config, key) for key in fields if not key.startswith("_")}
    config = Dinov2WithRegistersConfig(**{**values, "num_register_tokens": num_register_tokens})
    config._attn_implementation = student.config._attn_implementation
    exported = Dinov2WithRegistersModel(config)
    exported.load_state_dict(state_dict, strict=True)
    return exported.to(device=student.device, dtype=student.dtype).eval()


class PhregDinov2WithRegistersEmbeddings(Dinov2WithRegistersEmbeddings):
    """The stock embeddings, sized by `num_base_register_tokens`: the base's own registers, not PH-Reg's."""

    def __init__(self, config: PhregDinov2WithRegistersConfig) -> None:
        super().__init__(config)
        self.register_tokens = nn.Parameter(
            torch.zeros(1, config.num_base_register_tokens, config.hidden_size)
        )


class PhregDinov2WithRegistersModel(
    PhregRegisterMixin, _Dinov2ModuleLayout, Dinov2WithRegistersPreTrainedModel
):
    """A DINOv2 that was pretrained WITH registers (`Dinov2WithRegistersModel`), plus PH-Reg's new registers.

    The base's own registers (`embeddings.register_tokens`) are kept, and frozen by the trainer (they are no
    trainable part); PH-Reg's `register_tokens` come right after them: the token order is
    `[CLS, base_reg_1..base_reg_M, reg_1..reg_N, patches]`, so the base's tokens keep their positions. Position
    embeddings are interpolated as `Dinov2WithRegistersModel` does (bicubic with antialias), so with 0 new
    registers the outputs equal the base's at every resolution.
    """

    config_class = PhregDinov2WithRegistersConfig
    config: PhregDinov2WithRegistersConfig
    backbone_class_name = "PhregDinov2WithRegistersBackbone"
    base_model_classes = (Dinov2WithRegistersModel,)
    base_model_types = ("dinov2_with_registers",)
    _no_split_modules = ["PhregDinov2WithRegistersEmbeddings", "Dinov2WithRegistersLayer"]

    def __init__(self, config: PhregDinov2WithRegistersConfig):
        super().__init__(config)
        self._init_registers(config)
        self.embeddings = PhregDinov2WithRegistersEmbeddings(config)
        self.encoder = Dinov2WithRegistersEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @classmethod
    def _config_kwargs_from_base(cls, base):
        kwargs = super()._config_kwargs_from_base(base)
        # The base's `num_register_tokens` are its own registers; ours counts PH-Reg's new ones.
        kwargs["num_base_register_tokens"] = kwargs.pop("num_register_tokens")
        return kwargs

    @property
    def num_base_prefix_tokens(self) -> int:
        return 1 + self.config.num_base_register_tokens

    # Dinov2WithRegisters checkpoints always carry the mask token.
    has_mask_token = True

    def to_dinov2_with_registers(self) -> Dinov2WithRegistersModel:
        """Export to a stock `Dinov2WithRegistersModel` holding the base's and PH-Reg's registers (M + N), in
        this order; loads with no remote code. Same embeddings class, so outputs agree at every resolution."""
        state_dict = dict(self.state_dict())
        base_registers = state_dict["embeddings.register_tokens"]
        state_dict["embeddings.register_tokens"] = torch.cat(
            (base_registers, state_dict.pop("register_tokens")), 1
        )
        return _export_dinov2_with_registers(
            self, state_dict, self.config.num_base_register_tokens + self.config.num_register_tokens
        )


class PhregViTModel(PhregRegisterMixin, ViTPreTrainedModel):
    """ViT with PH-Reg registers; weights of `ViTModel`.

    `last_hidden_state` is final-normed (`layernorm`), as in `ViTModel`; `pooler_output` is ViT's pooler (dense +
    tanh on CLS) when `config.add_pooling_layer`, else None. Unlike `ViTModel`, any input size that is a
    multiple of the patch size works without `interpolate_pos_encoding=True`.
    """

    config_class = PhregViTConfig
    config: PhregViTConfig
    backbone_class_name = "PhregViTBackbone"
    base_model_classes = (ViTModel,)
    base_model_types = ("vit",)

    def __init__(self, config: PhregViTConfig):
        super().__init__(config)
        self._init_registers(config)
        self.embeddings = ViTEmbeddings(config, use_mask_token=config.use_mask_token)
        self.layers = nn.ModuleList([ViTLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if config.add_pooling_layer else None
        self.post_init()

    @classmethod
    def _config_kwargs_from_base(cls, base):
        return {
            **super()._config_kwargs_from_base(base),
            "add_pooling_layer": base.pooler is not None,
            "use_mask_token": base.embeddings.mask_token is not None,
        }

    def embed_patches(self, pixel_values, bool_masked_pos=None):
        # At the native size ViT's interpolation returns the position embeddings unchanged.
        return self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=True)

    @property
    def has_mask_token(self) -> bool:
        return self.embeddings.mask_token is not None

    def encoder_input_norm(self, hidden_states):
        return hidden_states

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        return self.layers

    @property
    def final_norm(self) -> nn.LayerNorm:
        return self.layernorm

    @property
    def position_embedding_parameters(self):
        return [self.embeddings.position_embeddings]

    @property
    def patch_embedding_projection(self) -> nn.Conv2d:
        return self.embeddings.patch_embeddings.projection

    def pool(self, hidden_states):
        sequence_output = self.layernorm(hidden_states)
        return sequence_output, self.pooler(sequence_output) if self.pooler is not None else None

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings


class PhregCLIPVisionModel(PhregRegisterMixin, CLIPPreTrainedModel):
    """CLIP vision tower with PH-Reg registers; weights of `CLIPVisionModel` (or a full `CLIPModel`).

    CLIP's norms keep their meaning: `pre_layrnorm` normalizes every token entering the encoder (registers
    included, since they are inserted right after the position embeddings), `last_hidden_state` is the raw
    encoder output (not normed, as in `CLIPVisionModel`), and `pooler_output` is `post_layernorm` of CLS.
    The dense patch tokens (`get_patch_tokens`, `get_feature_map`, and the PH-Reg distillation targets) are
    `post_layernorm` applied to the patch tokens, i.e. CLIP's final norm, as for DINOv2 and ViT.
    """

    config_class = PhregCLIPVisionConfig
    config: PhregCLIPVisionConfig
    backbone_class_name = "PhregCLIPVisionBackbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _input_embed_layer = "patch_embedding"
    base_model_classes = (CLIPVisionModel,)
    base_model_types = ("clip_vision_model", "clip")
    last_hidden_state_is_normed = False
    # A full CLIP checkpoint: only its vision tower is used.
    unused_checkpoint_keys = (
        r"^text_model\.",
        r"^text_projection\.",
        r"^visual_projection\.",
        r"^logit_scale$",
    )

    # A full CLIP student (`PhregCLIPModel`) keeps this model's weights under `vision_model.`; loading from one
    # reads them there, and ignores the rest (text tower, projections, the dense value path).
    _full_clip_keys = {r"^vision_model\.": ""}
    _full_clip_unused_keys = (*unused_checkpoint_keys, r"^dense_value_path\.")

    def __init__(self, config: PhregCLIPVisionConfig):
        super().__init__(config)
        self._init_registers(config)
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`; given a full CLIP student (`phreg_clip`, e.g. a trainer's CLIP
        output), the vision tower's weights are loaded from it (under `vision_model.` there), so that
        `PhregCLIPVisionBackbone.from_pretrained(clip_student)` is that student's vision tower, not a random one.
        A stock CLIP checkpoint is refused: it has no registers, build a student with `from_base`."""
        model_type = None
        if kwargs.get("config") is None and not kwargs.get("gguf_file"):
            hub_kwargs = {
                k: kwargs[k]
                for k in ("revision", "token", "cache_dir", "local_files_only", "subfolder")
                if k in kwargs
            }
            model_type = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)[0].get(
                "model_type"
            )
        if model_type in cls.base_model_types:
            raise ValueError(
                f"{pretrained_model_name_or_path} is a stock '{model_type}' checkpoint, not a PH-Reg student: build "
                f"one with {cls.__name__}.from_base(path, num_register_tokens=16) (or load a saved student)."
            )
        if model_type != "phreg_clip":
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        kwargs["key_mapping"] = {**cls._full_clip_keys, **(kwargs.get("key_mapping") or {})}
        ignored, cls._keys_to_ignore_on_load_unexpected = (
            cls._keys_to_ignore_on_load_unexpected,
            [
                *(cls._keys_to_ignore_on_load_unexpected or []),
                *cls._full_clip_unused_keys,
            ],
        )
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        finally:
            cls._keys_to_ignore_on_load_unexpected = ignored
        model = loaded[0] if isinstance(loaded, tuple) else loaded

        # transformers reverses a load's key mapping when saving; this model saves under its own names.
        def from_this_mapping(conversion) -> bool:
            patterns = getattr(conversion, "_original_source_patterns", None)
            patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
            return patterns == list(cls._full_clip_keys)

        conversions = [
            c for c in getattr(model, "_weight_conversions", None) or [] if not from_this_mapping(c)
        ]
        model._weight_conversions = conversions or None
        return loaded

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """As [`PhregRegisterMixin.forward`], with the signature of `CLIPVisionModel.forward`: CLIP has no mask
        token, so `bool_masked_pos` is no declared argument (passed anyway, it is refused with a clear error)."""
        return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)

    def embed_patches(self, pixel_values, bool_masked_pos=None):
        # At the native size CLIP's interpolation returns the position embeddings unchanged. CLIP has no mask
        # token, so `check_bool_masked_pos` has refused bool_masked_pos before this point.
        return self.embeddings(pixel_values, interpolate_pos_encoding=True)

    # CLIP was never trained with masked patches: no mask token.
    has_mask_token = False

    def encoder_input_norm(self, hidden_states):
        return self.pre_layrnorm(hidden_states)

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        return self.encoder.layers

    @property
    def final_norm(self) -> nn.LayerNorm:
        return self.post_layernorm

    @property
    def position_embedding_parameters(self):
        return [self.embeddings.position_embedding.weight]

    @property
    def patch_embedding_projection(self) -> nn.Conv2d:
        return self.embeddings.patch_embedding

    def pool(self, hidden_states):
        return hidden_states, self.post_layernorm(hidden_states[:, 0])

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding


# In this order since 0.1 (the order `student_class_for` searches).
for _student_class in (PhregDinov2Model, PhregViTModel, PhregCLIPVisionModel, PhregDinov2WithRegistersModel):
    register_student_class(_student_class)


def student_from_base(
    base_model_or_path: PreTrainedModel | str | os.PathLike, num_register_tokens: int = 16, **kwargs
) -> PhregRegisterMixin:
    """Build the right PH-Reg student (DINOv2, ViT, CLIP, SigLIP, DINOv3) from a stock model, Hub id or folder.

    See `PhregRegisterMixin.from_base` for the arguments.
    """
    if isinstance(base_model_or_path, (str, os.PathLike)):
        config_kwargs = {
            k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs
        }
        model_type = AutoConfig.from_pretrained(base_model_or_path, **config_kwargs).model_type
        return student_class_for(model_type).from_base(base_model_or_path, num_register_tokens, **kwargs)
    model_type = getattr(getattr(base_model_or_path, "config", None), "model_type", None)
    if model_type is None or not isinstance(base_model_or_path, nn.Module):
        raise ValueError(
            "student_from_base expects a transformers ViT, DINOv2, CLIP, SigLIP or DINOv3 model, or a path to "
            f"one; got {type(base_model_or_path).__name__}."
        )
    return student_class_for(model_type).from_base(base_model_or_path, num_register_tokens, **kwargs)


__all__ = [
    "check_clip_config_has_towers",
    "PhregCLIPVisionModel",
    "PhregDinov2Model",
    "PhregDinov2WithRegistersModel",
    "PhregRegisterMixin",
    "PhregViTModel",
    "TRAINABLE_PARTS",
    "register_student_class",
    "student_class_for",
    "student_from_base",
]
