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
"""Test-time registers (Jiang et al. 2025, arXiv 2506.08010): the training-free baseline beside PH-Reg.

A stock DINOv2 / DINOv2-with-registers / ViT / CLIP model, unchanged (same modules, same parameter names under
`model.`), plus two forward hooks:

1. after the vision embeddings, `num_test_time_registers` (1) zero tokens are appended after the patches, with no
   position embedding: the published DINOv2 code appends `torch.zeros` register tokens after the position
   embeddings are added (`prepare_tokens_with_masks` in `dinov2/dinov2/models/vision_transformer.py` of
   `nickjiang2378/test-time-registers`);
2. at each register neuron (a hidden unit of a block's MLP, i.e. a channel of the input of its `fc2`), the extra
   token gets the neuron's maximum activation over all tokens of the image and the image patches get 0; the class
   token (and a base's trained registers) keep theirs. This is `activate_on_registers` with its defaults
   (`scale=1.0`, `normal_values="zero"`) in `shared/hook_fn.py` of that repository, applied per image.

Outputs are those of the base with the extra token(s) removed from `last_hidden_state` and `hidden_states`, so
every consumer of the base's token layout works unchanged; `attentions` keep it (the last key/query). With no
register neuron the model computes exactly what the base computes. Finding the neurons needs images and lives in
`phreg_hf.evaluate.test_time_registers` (`find_register_neurons`, `phreg test-time-registers`).

This file imports only transformers, torch and `.configuration_phreg_ttr`: it travels with a saved checkpoint for
`AutoModel.from_pretrained(path, trust_remote_code=True)` and `AutoBackbone.from_pretrained(...)`.
"""

import os

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_phreg_ttr import (
    TTR_BASE_MODEL_TYPES,
    PhregTestTimeRegistersConfig,
    check_register_neurons,
)

_MODULE = __name__.rpartition(".")[2]  # "modeling_phreg_ttr", also under transformers_modules


def vision_tower(model: nn.Module) -> nn.Module:
    """The module holding a stock model's vision `embeddings` and blocks (CLIP: its `vision_model`)."""
    return model.vision_model if hasattr(model, "vision_model") else model


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The vision transformer blocks of a stock model (`encoder.layer`, `encoder.layers` or `layers`)."""
    tower = vision_tower(model)
    encoder = getattr(tower, "encoder", tower)
    for name in ("layer", "layers"):
        blocks = getattr(encoder, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(
        f"Found no transformer blocks in {type(model).__name__} (expected encoder.layer(s) or layers)."
    )


def mlp_output_projection(block: nn.Module) -> nn.Linear:
    """The last linear layer of a block's MLP: its input holds the MLP neurons' activations."""
    mlp = block.mlp
    projection = getattr(mlp, "fc2", None) or getattr(mlp, "weights_out", None)  # weights_out: DINOv2 SwiGLU
    if not isinstance(projection, nn.Linear):
        raise ValueError(f"{type(block).__name__}.mlp has no fc2 / weights_out linear layer to hook.")
    return projection


def num_prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patches: the class token, plus a DINOv2-with-registers base's trained registers."""
    config = getattr(model.config, "vision_config", None) or model.config
    return 1 + (
        getattr(config, "num_register_tokens", 0) if config.model_type == "dinov2_with_registers" else 0
    )


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the base applies to its dense output tokens (CLIP: `post_layernorm`)."""
    tower = vision_tower(model)
    return getattr(tower, "layernorm", None) or tower.post_layernorm


class PhregTestTimeRegistersModel(PreTrainedModel):
    """A stock vision model with test-time registers (see the module docstring). Build one with
    [`~PhregTestTimeRegistersModel.from_base`] from a model and its register neurons, or load a saved one."""

    config_class = PhregTestTimeRegistersConfig
    base_model_prefix = "ttr"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: PhregTestTimeRegistersConfig, base_model: PreTrainedModel | None = None):
        super().__init__(config)
        self.model = base_model if base_model is not None else AutoModel.from_config(config.base_config)
        self._hook_handles = []
        self._install_hooks()
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------
    # Building

    @classmethod
    def from_base(
        cls,
        base_model: PreTrainedModel,
        register_neurons: dict,
        search_settings: dict | None = None,
        **config_kwargs,
    ) -> "PhregTestTimeRegistersModel":
        """Wrap a stock model with test-time registers at `register_neurons`. The base is used as is, not copied:
        its modules get the hooks, so after wrapping, calling the base itself returns the extra token too (use the
        wrapper, which removes it, or a fresh copy of the base).

        Args:
            base_model: a transformers `Dinov2Model`, `Dinov2WithRegistersModel`, `ViTModel`, `CLIPVisionModel`
                or `CLIPModel`.
            register_neurons: `{layer: [neuron, ...]}`, 0-based block and MLP hidden-unit indices (as returned by
                `find_register_neurons`); `{}` reproduces the base exactly.
            search_settings: how the neurons were found, recorded in the config.
        """
        model_type = getattr(getattr(base_model, "config", None), "model_type", None)
        if not isinstance(base_model, PreTrainedModel) or model_type not in TTR_BASE_MODEL_TYPES:
            raise ValueError(
                f"Test-time registers support transformers models of types {list(TTR_BASE_MODEL_TYPES)}; got "
                f"{type(base_model).__name__} (model_type {model_type!r})."
            )
        if not hasattr(base_model, "embeddings") and not hasattr(base_model, "vision_model"):
            raise ValueError(
                f"{type(base_model).__name__} has no vision embeddings; pass the AutoModel of the base."
            )
        vision_config = getattr(base_model.config, "vision_config", None) or base_model.config
        check_register_neurons(vision_config, register_neurons)
        config = cls.config_class(
            base_config=base_model.config.to_dict(),
            register_neurons=register_neurons,
            search_settings=search_settings,
            **config_kwargs,
        )
        # Same attention implementation as the base (`to_dict` leaves it out).
        config.base_config._attn_implementation = base_model.config._attn_implementation
        model = cls(config, base_model=base_model)
        return model.to(base_model.device).train(base_model.training)

    def _init_weights(self, module) -> None:
        # Only the stock model has weights: initialise them as it does.
        self.model._init_weights(module)

    # ----------------------------------------------------------------------------------------------------------
    # The two hooks

    @property
    def num_test_time_registers(self) -> int:
        return self.config.num_test_time_registers

    @property
    def active(self) -> bool:
        """Whether any register neuron is set (without one the model is exactly its base, with no extra token)."""
        return bool(self.config.layer_neurons())

    @property
    def num_prefix_tokens(self) -> int:
        return num_prefix_tokens(self.model)

    @property
    def patch_size(self) -> int:
        """The base's patch side in pixels (as the PH-Reg students' `patch_size`)."""
        patch_size = self.config.base_vision_config.patch_size
        return int(patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size)

    def _install_hooks(self) -> None:
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []
        if not self.active:
            return  # no neuron to move: the extra token would only change attention, so there is none
        tower = vision_tower(self.model)
        self._hook_handles.append(tower.embeddings.register_forward_hook(self._append_registers))
        blocks = transformer_blocks(self.model)
        for layer, neurons in self.config.layer_neurons().items():
            projection = mlp_output_projection(blocks[layer])
            self._hook_handles.append(projection.register_forward_pre_hook(self._move_activations(neurons)))

    def _append_registers(self, module, inputs, embeddings: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, T + R, C): zero tokens after the patches, after the position embeddings were added.
        extra = embeddings.new_zeros(embeddings.shape[0], self.num_test_time_registers, embeddings.shape[-1])
        return torch.cat((embeddings, extra), dim=1)

    def _move_activations(self, index: list[int]):
        num_registers, start = self.num_test_time_registers, self.num_prefix_tokens

        def hook(module, inputs):
            (activations,) = inputs  # (B, T + R, neurons)
            # A plain list until here: from_pretrained builds modules on the meta device.
            neurons = torch.tensor(index, dtype=torch.long, device=activations.device)
            selected = activations[..., neurons]
            peak = selected.amax(dim=1, keepdim=True)  # (B, 1, K): max over every token of each image
            moved = selected.clone()
            moved[:, start:-num_registers] = 0  # image patches
            moved[:, -num_registers:] = peak  # the test-time registers
            activations = activations.clone()
            activations[..., neurons] = moved
            return (activations,)

        return hook

    # ----------------------------------------------------------------------------------------------------------
    # Forward

    def _strip(self, output):
        """Remove the test-time registers from a vision output's `last_hidden_state` and `hidden_states`."""
        if not self.active:
            return output
        cut = -self.num_test_time_registers
        output.last_hidden_state = output.last_hidden_state[:, :cut].contiguous()
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:, :cut].contiguous() for h in output.hidden_states)
        return output

    def forward(self, pixel_values: torch.Tensor | None = None, return_dict: bool | None = None, **kwargs):
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`): normalized images.
            kwargs: as for the base model's forward (`output_hidden_states`, `output_attentions`,
                `interpolate_pos_encoding`, and for a full CLIP `input_ids` / `attention_mask`).

        Returns:
            The base model's output; `last_hidden_state` `(B, prefix + h*w, C)` and each of `hidden_states`
            exactly as the base lays them out (the extra token removed).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(pixel_values=pixel_values, return_dict=True, **kwargs)
        if self.config.base_config.model_type == "clip":
            if outputs.vision_model_output is not None:
                self._strip(outputs.vision_model_output)
        else:
            self._strip(outputs)
        return outputs if return_dict else outputs.to_tuple()

    def vision_forward(self, pixel_values: torch.Tensor, **kwargs):
        """The vision tower's output (for a full CLIP: its `vision_model`), test-time registers removed."""
        tower = self.model.vision_model if self.config.base_config.model_type == "clip" else self.model
        return self._strip(tower(pixel_values=pixel_values, return_dict=True, **kwargs))

    def get_patch_tokens(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Final-normed patch tokens (no class token, no registers), as the PH-Reg students' `get_patch_tokens`.

        Args:
            pixel_values: `(B, 3, H, W)`, H and W multiples of the patch size.

        Returns:
            `(B, h*w, C)`, row-major over the patch grid.
        """
        tokens = self.vision_forward(pixel_values, **kwargs).last_hidden_state[:, self.num_prefix_tokens :]
        tower = vision_tower(self.model)
        # DINOv2 / ViT norm their last_hidden_state; CLIP's vision tower leaves it to `post_layernorm`.
        return tokens if hasattr(tower, "layernorm") else final_norm(self.model)(tokens)

    def get_feature_map(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Dense feature map, as the PH-Reg students' `get_feature_map`: `(B, 3, H, W)` pixels ->
        `(B, hidden_size, H / patch_size, W / patch_size)` from `get_patch_tokens`."""
        patch_size = self.patch_size
        height, width = pixel_values.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"Images of {height}x{width} px do not split into {patch_size}-px patches; resize or crop them to "
                f"multiples of {patch_size}."
            )
        tokens = self.get_patch_tokens(pixel_values, **kwargs)
        return tokens.unflatten(1, (height // patch_size, width // patch_size)).permute(0, 3, 1, 2)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs):
        """A full CLIP's `get_image_features` (pooled from the class token, which the transform leaves in place)."""
        return self.model.get_image_features(pixel_values=pixel_values, **kwargs)

    def get_text_features(self, *args, **kwargs):
        """A full CLIP's `get_text_features`, unchanged (the text tower has no test-time registers)."""
        return self.model.get_text_features(*args, **kwargs)

    def get_input_embeddings(self):
        return vision_tower(self.model).embeddings.patch_embeddings

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, with both `AutoModel` and `AutoBackbone` in `auto_map` (both classes
        live in this file, which travels with the weights)."""
        if getattr(self, "_auto_class", None) is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModel"] = f"{_MODULE}.PhregTestTimeRegistersModel"
            auto_map["AutoBackbone"] = f"{_MODULE}.PhregTestTimeRegistersBackbone"
            self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)


class PhregTestTimeRegistersBackbone(BackboneMixin, PhregTestTimeRegistersModel):
    """[`PhregTestTimeRegistersModel`] as an `AutoBackbone`, with the feature maps of the PH-Reg students'
    backbones: stage 0 (`stem`) the embeddings, stage i block i; `apply_layernorm` applies the base's final norm;
    `(B, C, h, w)` patch maps (class token, trained and test-time registers removed), or `(B, 1 + h*w, C)` with
    `reshape_hidden_states=False`."""

    def __init__(self, config: PhregTestTimeRegistersConfig, base_model: PreTrainedModel | None = None):
        super().__init__(config, base_model=base_model)
        vision = config.base_vision_config
        self.num_features = [vision.hidden_size] * (vision.num_hidden_layers + 1)

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs
    ) -> BackboneOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`): normalized images, H and W multiples of
                the patch size.

        Returns:
            [`~transformers.modeling_outputs.BackboneOutput`]: `feature_maps`, one per stage in `out_features`,
            `(B, hidden_size, H / patch_size, W / patch_size)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        outputs = self.vision_forward(pixel_values, output_hidden_states=True, **kwargs)
        patch_size = self.patch_size
        grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        norm, start = final_norm(self.model), self.num_prefix_tokens
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, outputs.hidden_states, strict=True):
            if stage not in self.out_features:
                continue
            if self.config.apply_layernorm:
                hidden_state = norm(hidden_state)
            patches = hidden_state[:, start:]
            if self.config.reshape_hidden_states:
                hidden_state = patches.unflatten(1, grid).permute(0, 3, 1, 2).contiguous()
            else:
                hidden_state = torch.cat((hidden_state[:, :1], patches), dim=1)
            feature_maps += (hidden_state,)
        hidden_states = outputs.hidden_states if output_hidden_states else None
        output = BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=hidden_states,
            attentions=getattr(outputs, "attentions", None),
        )
        return output if return_dict else output.to_tuple()


__all__ = ["PhregTestTimeRegistersBackbone", "PhregTestTimeRegistersModel", "transformer_blocks"]
