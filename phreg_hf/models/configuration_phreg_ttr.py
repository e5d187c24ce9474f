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
"""Configuration of test-time registers (Jiang et al. 2025, "Vision Transformers Don't Need Trained Registers",
arXiv 2506.08010): the training-free baseline beside PH-Reg.

The config is the stock base model's own config (`base_config`, any of `TTR_BASE_MODEL_TYPES`) plus the register
neurons found for it (`register_neurons`, {layer: [neuron, ...]}) and how they were found (`search_settings`, for
the record only; nothing at inference reads it). This file imports nothing of ``phreg_hf``: it travels with saved
checkpoints for ``trust_remote_code=True``.
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import SubConfigSpec

# The stock model types test-time registers are built on (their MLPs all end in `fc2`, see modeling_phreg_ttr.py).
TTR_BASE_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "vit", "clip_vision_model", "clip")


def mlp_width(vision_config: PreTrainedConfig) -> int:
    """Hidden units of one transformer block's MLP (the neurons a register-neuron id indexes)."""
    if getattr(vision_config, "use_swiglu_ffn", False):  # Dinov2SwiGLUFFN rounds 2/3 of the width up to 8
        hidden_features = int(vision_config.hidden_size * vision_config.mlp_ratio)
        return (int(hidden_features * 2 / 3) + 7) // 8 * 8
    if hasattr(
        vision_config, "mlp_ratio"
    ):  # DINOv2 (a stray `intermediate_size` kwarg on its config is unused)
        return int(vision_config.hidden_size * vision_config.mlp_ratio)
    return int(vision_config.intermediate_size)  # ViT, CLIP


def check_register_neurons(vision_config: PreTrainedConfig, register_neurons: dict) -> None:
    """Raise ValueError unless every layer and neuron id of `register_neurons` exists in the model of
    `vision_config`: a list made for another model fails here, naming the bad entry."""
    num_layers, num_neurons = vision_config.num_hidden_layers, mlp_width(vision_config)
    for layer, neurons in register_neurons.items():
        try:
            index = int(layer)
        except (TypeError, ValueError):
            raise ValueError(
                f"register_neurons has layer key {layer!r}; keys are block indices 0..{num_layers - 1}."
            ) from None
        if not 0 <= index < num_layers:
            raise ValueError(
                f"register_neurons names layer {index}, but the base has {num_layers} transformer blocks "
                f"(0..{num_layers - 1}). The neuron list was made for another model: search again on this one."
            )
        bad = [
            n for n in neurons if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < num_neurons
        ]
        if bad:
            raise ValueError(
                f"register_neurons[{layer}] holds {bad}, outside this base's {num_neurons} MLP neurons per block "
                f"(0..{num_neurons - 1}). The neuron list was made for another model: search again on this one."
            )
        if len(set(neurons)) != len(neurons):
            raise ValueError(f"register_neurons[{layer}] = {list(neurons)} repeats a neuron; list each once.")


@strict
class PhregTestTimeRegistersConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`PhregTestTimeRegistersModel`].

    Args:
        base_config (`dict` or [`~transformers.PreTrainedConfig`]):
            The stock model's config (`model_type` one of `TTR_BASE_MODEL_TYPES`).
        register_neurons (`dict[str, list[int]]`, *optional*, defaults to `{}`):
            The register neurons, by 0-based transformer block: `{"5": [17, 203], ...}` (JSON keys are strings;
            ints are accepted). Each id indexes the block's MLP hidden units (the input of its `fc2`). Empty: the
            model computes exactly what the base computes, plus one inert extra token.
        num_test_time_registers (`int`, *optional*, defaults to 1):
            Extra tokens appended after the patches. The published models use one (`num_registers = 1` in
            `register_neurons.ipynb` and `backbone_model.num_register_tokens = 1` in `dinov2/dinov2/hub/backbones.py`
            of `nickjiang2378/test-time-registers`).
        search_settings (`dict`, *optional*):
            How the neurons were found (images, threshold, layers, top-k), recorded for the model card.
        out_features / out_indices: stages of the `AutoBackbone` form, as for the PH-Reg students ("stem",
            "stage1" .. "stageN").
    """

    model_type = "phreg_test_time_registers"
    sub_configs_defaults = {"base_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2")}

    base_config: dict | PreTrainedConfig | None = None
    register_neurons: dict | None = None
    num_test_time_registers: int = 1
    search_settings: dict | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    def __post_init__(self, **kwargs):
        out_indices = kwargs.pop("out_indices", None)
        out_features = kwargs.pop("out_features", None)
        super().__post_init__(**kwargs)
        self.register_neurons = {
            str(layer): [int(n) for n in neurons] for layer, neurons in (self.register_neurons or {}).items()
        }
        self.search_settings = dict(self.search_settings or {})
        num_layers = self.base_vision_config.num_hidden_layers
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, num_layers + 1)]
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)

    @property
    def base_vision_config(self) -> PreTrainedConfig:
        """The config of the vision tower (the whole base config, except for a full CLIP)."""
        return getattr(self.base_config, "vision_config", None) or self.base_config

    def validate_base_model_type(self):
        model_type = getattr(self.base_config, "model_type", None)
        if model_type not in TTR_BASE_MODEL_TYPES:
            raise ValueError(
                f"Test-time registers support base model types {list(TTR_BASE_MODEL_TYPES)}, got {model_type!r}. "
                "Build them from a DINOv2, DINOv2-with-registers, ViT or CLIP checkpoint."
            )

    def validate_num_test_time_registers(self):
        value = self.num_test_time_registers
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"num_test_time_registers must be an integer >= 1, got {value!r} (the paper uses 1)."
            )

    def validate_register_neurons(self):
        check_register_neurons(self.base_vision_config, self.register_neurons or {})

    def layer_neurons(self) -> dict[int, list[int]]:
        """`register_neurons` with int keys, layers with no neuron left out."""
        return {int(layer): list(neurons) for layer, neurons in self.register_neurons.items() if neurons}


__all__ = ["PhregTestTimeRegistersConfig", "TTR_BASE_MODEL_TYPES", "check_register_neurons", "mlp_width"]
