"""Configurations of the PH-Reg student models.

Each config is the backbone's own transformers config plus one field, ``num_register_tokens``, so that a
student is described by exactly the numbers of the base checkpoint it was built from. This file imports
nothing of ``phreg_hf``: it travels with saved checkpoints for ``trust_remote_code=True``.
"""

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, Dinov2Config, ViTConfig

# Reference setting of PH-Reg (METHOD.md): 16 learnable registers.
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


@strict
class PhregDinov2Config(PhregConfigMixin, Dinov2Config):
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
class PhregViTConfig(PhregConfigMixin, ViTConfig):
    r"""
    Configuration of [`PhregViTModel`]: a [`~transformers.ViTConfig`] plus register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of learnable register tokens inserted after the CLS token. 0 gives back the base model.
        add_pooling_layer (`bool`, *optional*, defaults to `True`):
            Whether the model has ViT's pooler (dense + tanh on the CLS token), as `ViTModel(add_pooling_layer=...)`.
        All other arguments: see [`~transformers.ViTConfig`].
    """

    model_type = "phreg_vit"
    base_model_type = "vit"

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS
    add_pooling_layer: bool = True


@strict
class PhregCLIPVisionConfig(PhregConfigMixin, CLIPVisionConfig):
    r"""
    Configuration of [`PhregCLIPVisionModel`]: a [`~transformers.CLIPVisionConfig`] plus register tokens.

    Args:
        num_register_tokens (`int`, *optional*, defaults to 16):
            Number of learnable register tokens inserted after the CLS token. 0 gives back the base model.
        All other arguments: see [`~transformers.CLIPVisionConfig`].
    """

    model_type = "phreg_clip_vision_model"
    base_model_type = "clip_vision_model"
    # A saved student config is the vision config itself, never nested in a full CLIP config.
    base_config_key = ""

    num_register_tokens: int = DEFAULT_NUM_REGISTER_TOKENS


@strict
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

    @property
    def num_register_tokens(self) -> int:
        return self.vision_config.num_register_tokens


__all__ = [
    "PhregCLIPConfig",
    "PhregCLIPVisionConfig",
    "PhregDinov2Config",
    "PhregViTConfig",
    "DEFAULT_NUM_REGISTER_TOKENS",
]
