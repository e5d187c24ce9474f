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
"""Configurations of the PH-Reg student models.

Each config is the backbone's own transformers config plus one field, ``num_register_tokens``, so that a
student is described by exactly the numbers of the base checkpoint it was built from. This file imports
nothing of ``phreg_hf``: it travels with saved checkpoints for ``trust_remote_code=True``.
"""

from huggingface_hub.dataclasses import strict
from transformers import (
    CLIPConfig,
    CLIPTextConfig,
    CLIPVisionConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    DINOv3ViTConfig,
    SiglipVisionConfig,
    ViTConfig,
)
from transformers.backbone_utils import BackboneConfigMixin

# Reference setting of PH-Reg (docs/method.md): 16 learnable registers.
DEFAULT_NUM_REGISTER_TOKENS = 16


class PhregConfigMixin:
    """Validation shared by the three student configs (run by ``@strict`` at construction and on load)."""

    base_model_type: str = ""

    def validate_num_register_tokens(self):
        value = self.num_register_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"num_register_tokens must be an integer >= 0, got {value!r}. Use 0 to reproduce the base model "
                f"exactly, or the PH-Reg reference value {DEFAULT_NUM_REGISTER_TOKENS}."
            )

    def validate_square_patches(self):
        for name in ("patch_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and (len(value) != 2 or value[0] != value[1]):
                raise ValueError(
                    f"{name} must be one int (square), got {value!r}; pass e.g. {name}={value[0]}."
                )


class PhregBackboneConfigMixin(BackboneConfigMixin):
    """`out_features` / `out_indices` for the `AutoBackbone` form of a student, as transformers' backbones have.

    Stages are `stem` (the embeddings, registers inserted) and `stage1` .. `stageN` (the outputs of the N
    transformer blocks): index 0 is the stem, index N (or -1) the last block.
    """

    def init_backbone_stages(self, kwargs: dict) -> None:
        """Set `stage_names` and the output stages (for configs whose transformers base is no backbone config)."""
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )

    def verify_out_features_out_indices(self):
        # transformers' own check names the bad value but not what would work; say both.
        last = len(self.stage_names) - 1
        stages = f"0 ('stem', the embeddings) to {last} (the last of the {last} transformer blocks), or -1"
        for index in self._out_indices or []:
            if isinstance(index, bool) or not isinstance(index, int) or not -(last + 1) <= index <= last:
                raise ValueError(
                    f"out_indices={self._out_indices} holds {index!r}, past the last layer: this model has {last} "
                    f"transformer blocks, so valid indices are {stages}. Pass e.g. out_indices=[{last}]."
                )
        for name in self._out_features or []:
            if name not in self.stage_names:
                raise ValueError(
                    f"out_features={self._out_features} holds {name!r}, which is not a stage of this model: valid "
                    f"names are 'stem', 'stage1' .. 'stage{last}'. Pass e.g. out_features=['stage{last}']."
                )
        super().verify_out_features_out_indices()


@strict
class PhregDinov2Config(PhregConfigMixin, PhregBackboneConfigMixin, Dinov2Config):
    r"""
    Configuration of [`PhregDinov2Model`]: a [`~transformers.Dinov2Config`] plus register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of learnable register tokens inserted after the CLS token. 0 gives back the base model.
        All other arguments: see [`~transformers.Dinov2Config`].
    """

    model_type = "phreg_dinov2"
    base_model_type = "dinov2"

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS


@strict
class PhregViTConfig(PhregConfigMixin, PhregBackboneConfigMixin, ViTConfig):
    r"""
    Configuration of [`PhregViTModel`]: a [`~transformers.ViTConfig`] plus register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of learnable register tokens inserted after the CLS token. 0 gives back the base model.
        add_pooling_layer (`bool`, *optional*, defaults to `True`):
            Whether the model has ViT's pooler (dense + tanh on the CLS token), as `ViTModel(add_pooling_layer=...)`.
        use_mask_token (`bool`, *optional*, defaults to `False`):
            Whether the model has ViT's mask token (for `bool_masked_pos`), as `ViTModel(use_mask_token=...)`.
        out_features, out_indices, apply_layernorm, reshape_hidden_states:
            For [`PhregViTBackbone`], as in [`~transformers.Dinov2Config`].
        All other arguments: see [`~transformers.ViTConfig`].
    """

    model_type = "phreg_vit"
    base_model_type = "vit"

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS
    add_pooling_layer: bool = True
    use_mask_token: bool = False
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    def __post_init__(self, **kwargs):
        self.init_backbone_stages(kwargs)
        super().__post_init__(**kwargs)


@strict
class PhregCLIPVisionConfig(PhregConfigMixin, PhregBackboneConfigMixin, CLIPVisionConfig):
    r"""
    Configuration of [`PhregCLIPVisionModel`]: a [`~transformers.CLIPVisionConfig`] plus register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of learnable register tokens inserted after the CLS token. 0 gives back the base model.
        out_features, out_indices, apply_layernorm, reshape_hidden_states:
            For [`PhregCLIPVisionBackbone`], as in [`~transformers.Dinov2Config`]; the layernorm applied to the
            feature maps is CLIP's `post_layernorm`, the norm of its dense tokens.
        All other arguments: see [`~transformers.CLIPVisionConfig`].
    """

    model_type = "phreg_clip_vision_model"
    base_model_type = "clip_vision_model"
    # A saved student config is the vision config itself, never nested in a full CLIP config.
    base_config_key = ""

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    def __post_init__(self, **kwargs):
        self.init_backbone_stages(kwargs)
        super().__post_init__(**kwargs)


@strict
class PhregDinov2WithRegistersConfig(PhregConfigMixin, PhregBackboneConfigMixin, Dinov2WithRegistersConfig):
    r"""
    Configuration of [`PhregDinov2WithRegistersModel`]: a [`~transformers.Dinov2WithRegistersConfig`] (a base that
    was pretrained with registers) plus PH-Reg's new register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of NEW learnable register tokens that PH-Reg adds (after the base's own). 0 gives back the base
            model. Note the different meaning from `Dinov2WithRegistersConfig.num_register_tokens`, which is
            `num_base_register_tokens` here, so that every student config counts PH-Reg's registers the same way.
        num_base_register_tokens (`int`, *optional*, defaults to 4):
            The base checkpoint's own registers (pretrained with the model; PH-Reg keeps them frozen).
        All other arguments: see [`~transformers.Dinov2WithRegistersConfig`].
    """

    model_type = "phreg_dinov2_with_registers"
    base_model_type = "dinov2_with_registers"

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS
    num_base_register_tokens: int = 4

    def validate_num_base_register_tokens(self):
        value = self.num_base_register_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"num_base_register_tokens must be an integer >= 0 (the base checkpoint's own registers), got "
                f"{value!r}. Build the student with PhregDinov2WithRegistersModel.from_base(base), which reads it."
            )


class PhregCLIPConfig(CLIPConfig):
    r"""
    Configuration of [`PhregCLIPModel`]: a full [`~transformers.CLIPConfig`] whose vision config is a
    [`PhregCLIPVisionConfig`] (CLIP's vision config plus `num_register_tokens`). The text config is CLIP's own, so
    the text tower and `get_text_features` are CLIP's, unchanged.

    Args:
        text_config (`dict` or [`~transformers.CLIPTextConfig`], *optional*): the text tower's config.
        vision_config (`dict` or [`PhregCLIPVisionConfig`], *optional*): the vision student's config.
        All other arguments: see [`~transformers.CLIPConfig`].
    """

    model_type = "phreg_clip"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": PhregCLIPVisionConfig}

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """`CLIPConfig.from_dict`, refusing a saved config without a tower's settings: transformers would fill in a
        default tower, whose weight shapes then fail to load with a report that names neither cause nor fix."""
        missing = [key for key in ("vision_config", "text_config") if not config_dict.get(key)]
        if missing:
            raise ValueError(
                f"This phreg_clip config.json has no {' and '.join(missing)} (the settings of the tower(s) its "
                "weights belong to). Save the model again from a complete copy (save_pretrained writes both), or "
                "restore the missing entry."
            )
        return super().from_dict(config_dict, **kwargs)

    @property
    def num_register_tokens(self) -> int:
        return self.vision_config.num_register_tokens


@strict
class PhregSiglipVisionConfig(PhregConfigMixin, PhregBackboneConfigMixin, SiglipVisionConfig):
    r"""
    Configuration of [`PhregSiglipVisionModel`]: a [`~transformers.SiglipVisionConfig`] plus register tokens. Also
    the config of SigLIP 2 fixed-resolution checkpoints, which are `siglip` checkpoints.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of learnable register tokens, put before the patch tokens (SigLIP has no CLS token). 0 gives back
            the base model.
        out_features, out_indices, apply_layernorm, reshape_hidden_states:
            For [`PhregSiglipVisionBackbone`], as in [`~transformers.Dinov2Config`]; the layernorm applied to the
            feature maps is SigLIP's `post_layernorm`.
        All other arguments (`vision_use_head` included): see [`~transformers.SiglipVisionConfig`].
    """

    model_type = "phreg_siglip_vision_model"
    base_model_type = "siglip_vision_model"
    # A saved student config is the vision config itself, never nested in a full SigLIP config.
    base_config_key = ""

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    def __post_init__(self, **kwargs):
        self.init_backbone_stages(kwargs)
        super().__post_init__(**kwargs)


@strict
class PhregDinov3ViTConfig(PhregConfigMixin, PhregBackboneConfigMixin, DINOv3ViTConfig):
    r"""
    Configuration of [`PhregDinov3ViTModel`]: a [`~transformers.DINOv3ViTConfig`] plus PH-Reg's new register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of NEW learnable register tokens that PH-Reg adds, after DINOv3's own. 0 gives back the base model.
            As for [`PhregDinov2WithRegistersConfig`], `DINOv3ViTConfig.num_register_tokens` is
            `num_base_register_tokens` here.
        num_base_register_tokens (`int`, *optional*, defaults to 4):
            The base checkpoint's own registers (4 in the released DINOv3 ViTs; PH-Reg keeps them frozen).
        All other arguments (the RoPE settings, backbone stages): see [`~transformers.DINOv3ViTConfig`].
    """

    model_type = "phreg_dinov3_vit"
    base_model_type = "dinov3_vit"

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS
    num_base_register_tokens: int = 4

    def validate_num_base_register_tokens(self):
        value = self.num_base_register_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"num_base_register_tokens must be an integer >= 0 (the base checkpoint's own registers), got "
                f"{value!r}. Build the student with PhregDinov3ViTModel.from_base(base), which reads it."
            )


__all__ = [
    "DEFAULT_NUM_REGISTER_TOKENS",
    "PhregCLIPConfig",
    "PhregCLIPVisionConfig",
    "PhregDinov2Config",
    "PhregDinov2WithRegistersConfig",
    "PhregDinov3ViTConfig",
    "PhregSiglipVisionConfig",
    "PhregViTConfig",
]
