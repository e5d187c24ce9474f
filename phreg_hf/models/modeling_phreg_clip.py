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
"""A full CLIP PH-Reg student: CLIP's text tower unchanged, plus a PH-Reg vision student with text-aligned dense
features.

[`PhregCLIPModel`] is what the paper distills for open-vocabulary segmentation (docs/method.md, section 7). One checkpoint
serves both uses of CLIP:

- `get_text_features` is `CLIPModel.get_text_features` itself (the same function object), so text embeddings are
  CLIP's bit for bit.
- `get_dense_image_features` gives `(B, h*w, projection_dim)` patch features in CLIP's joint text-image space
  through MaskCLIP's *value path* of the last block: `layer_norm1 -> v_proj -> out_proj` on every patch token (no
  attention mixing, no residual, no MLP), then `post_layernorm` and `visual_projection`.
- `get_image_features` / the pooled output go through the standard last block, as in `CLIPModel`.

Weight sharing: the value path keeps its OWN copy of the last block's `layer_norm1`, `v_proj` and `out_proj`
(`dense_value_path`), initialized from the base. PH-Reg trains the value path to match the NACLIP teacher; the
standard last block was trained (by OpenAI) together with its queries, keys and MLP, and retuning its value and
output projections for the dense target would move the CLS token, i.e. every image-level output, for no dense
gain. With a separate copy, the standard last block stays the base's and image-level outputs move only as far as
the trained registers, position embeddings and patch embedding move them (measured by the tests and the
trainer's `clip_image_feature_cosine`). The cost is 2 * hidden^2 + 3 * hidden parameters (1.2 M for ViT-B).

This file imports only transformers, torch and our two other remote-code files, relatively: it travels with a
saved checkpoint for `AutoModel.from_pretrained(path, trust_remote_code=True)`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, CLIPModel, CLIPTextModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import (
    CLIPOutput,
    CLIPPreTrainedModel,
    CLIPVisionEmbeddings,
    image_text_contrastive_loss,
)
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .configuration_phreg import PhregCLIPConfig, PhregCLIPVisionConfig
from .modeling_phreg import (
    PhregCLIPVisionModel,
    _check_num_register_tokens,
    check_clip_config_has_towers,
    copy_backbone_file,
)

logger = logging.get_logger(__name__)


def _custom_pipeline_files(pipelines: dict) -> list[Path] | None:
    """The code files of a config's `custom_pipelines` (each entry's module next to this file, plus the files it
    imports relatively), or None when one of them is not there."""
    from transformers.dynamic_module_utils import get_relative_import_files

    files: list[Path] = []
    for entry in pipelines.values():
        module = str((entry or {}).get("impl", "")).rsplit(".", 1)[0]
        source = Path(__file__).with_name(module + ".py")
        if not module or not source.is_file():
            return None
        try:
            imported = [Path(path) for path in get_relative_import_files(str(source))]
        except (OSError, ValueError):
            return None
        files += [source, *imported]
    return sorted(set(files))


class PhregCLIPValuePath(nn.Module):
    """MaskCLIP's dense path through a CLIP encoder block: `layer_norm1 -> v_proj -> out_proj`, per token.

    Parameter names follow `CLIPEncoderLayer` (`layer_norm1`, `v_proj`, `out_proj`) so that a block's weights copy
    over by name.
    """

    def __init__(self, config: PhregCLIPVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, N, C)` tokens entering the last block -> `(B, N, C)` value-path tokens."""
        return self.out_proj(self.v_proj(self.layer_norm1(hidden_states)))

    @torch.no_grad()
    def copy_from_block(self, block: nn.Module) -> None:
        """Copy `layer_norm1`, `self_attn.v_proj`, `self_attn.out_proj` of a `CLIPEncoderLayer`."""
        self.layer_norm1.load_state_dict(block.layer_norm1.state_dict())
        self.v_proj.load_state_dict(block.self_attn.v_proj.state_dict())
        self.out_proj.load_state_dict(block.self_attn.out_proj.state_dict())


@dataclass
class PhregCLIPOutput(CLIPOutput):
    r"""
    [`~transformers.models.clip.modeling_clip.CLIPOutput`] plus:

    dense_image_embeds (`torch.FloatTensor` of shape `(B, h*w, projection_dim)`, *optional*):
        Text-aligned patch features of the MaskCLIP value path (not normalized), when `return_dense_features=True`.
    """

    dense_image_embeds: torch.FloatTensor | None = None


class PhregCLIPModel(CLIPPreTrainedModel):
    """CLIP with a PH-Reg vision student: text tower, projections and logit scale of `CLIPModel`, vision tower a
    [`PhregCLIPVisionModel`] (registers after CLS), plus the value-path copy of the last block for dense features.

    Build one from a stock `CLIPModel` (OpenAI CLIP, or OpenCLIP/DFN weights converted to transformers' CLIP) with
    [`PhregCLIPModel.from_base`]. With 0 registers and nothing trained it computes exactly what the base computes.
    """

    config_class = PhregCLIPConfig
    config: PhregCLIPConfig
    main_input_name = "input_ids"
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    def __init__(self, config: PhregCLIPConfig):
        super().__init__(config)
        if getattr(config, "model_type", None) != PhregCLIPConfig.model_type:
            raise ValueError(
                f"PhregCLIPModel needs a PhregCLIPConfig, got {type(config).__name__}. Build a student from a stock "
                "CLIPModel with PhregCLIPModel.from_base(model_or_path)."
            )
        self.projection_dim = config.projection_dim
        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.vision_model = PhregCLIPVisionModel._from_config(config.vision_config)
        self.visual_projection = nn.Linear(
            config.vision_config.hidden_size, config.projection_dim, bias=False
        )
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.dense_value_path = PhregCLIPValuePath(config.vision_config)
        self.post_init()

    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            factor = self.config.initializer_factor
            init.normal_(self.text_projection.weight, std=self.config.text_config.hidden_size**-0.5 * factor)
            init.normal_(
                self.visual_projection.weight, std=self.config.vision_config.hidden_size**-0.5 * factor
            )
            init.constant_(self.logit_scale, self.config.logit_scale_init_value)
            # A fresh model's value path starts as its last block's (from_base copies the base's anyway).
            self.dense_value_path.copy_from_block(self.vision_model.transformer_blocks[-1])

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`; the code files include `modeling_phreg_backbone.py`, so that the vision
        tower's backbone form (`PhregCLIPVisionBackbone`) travels with the checkpoint, as it always has.

        A model whose config names custom pipelines (`custom_pipelines`, e.g. a trainer's CLIP student) keeps them
        usable: their files (`pipeline_phreg_segmentation.py` and what it imports) are copied too. Where they are not
        at hand (a model loaded with `trust_remote_code` without its pipeline), the entry is left out of the saved
        config, with a warning, rather than saved pointing at a file the folder lacks."""
        saves_code = getattr(self, "_auto_class", None) is not None
        pipelines = dict(getattr(self.config, "custom_pipelines", None) or {})
        files = _custom_pipeline_files(pipelines) if saves_code else None
        if pipelines and files is None:
            logger.warning(
                "%s is saved without its custom_pipelines entry (%s): the pipeline code is not next to %s. To keep "
                "it, save with phreg-hf installed (phreg_hf.evaluate.segmentation.save_pretrained_with_pipeline).",
                save_directory,
                ", ".join(sorted(pipelines)),
                Path(__file__).name,
            )
            del (
                self.config.custom_pipelines
            )  # an extra attribute of the config: absent, not null, in config.json
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if pipelines:
                self.config.custom_pipelines = pipelines
        if saves_code:
            copy_backbone_file(save_directory)
            for source in files or ():
                shutil.copyfile(source, Path(save_directory) / source.name)

    # ----------------------------------------------------------------------------------------------------------
    # Construction
    @classmethod
    def from_base(
        cls, clip_model_or_path: CLIPModel | str | os.PathLike, num_register_tokens: int = 16, **kwargs
    ) -> PhregCLIPModel:
        """Build a CLIP student from a stock `CLIPModel`, copying every base weight exactly.

        Args:
            clip_model_or_path: a loaded `CLIPModel`, or a Hub id / local folder of a `clip` checkpoint (OpenAI CLIP,
                or OpenCLIP/DFN weights saved as transformers' `CLIPModel`).
            num_register_tokens: registers to add (0 reproduces the base model exactly).
            kwargs: passed to `CLIPModel.from_pretrained` when a path is given (`revision`, `dtype`, ...).

        Returns:
            The student in the base model's dtype and device, registers freshly initialized, the value path a copy
            of the base's last block.
        """
        _check_num_register_tokens(num_register_tokens)
        if isinstance(clip_model_or_path, (str, os.PathLike)):
            config_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir") if k in kwargs}
            check_clip_config_has_towers(clip_model_or_path, **config_kwargs)
            model_type = AutoConfig.from_pretrained(clip_model_or_path, **config_kwargs).model_type
            if model_type != "clip":
                raise ValueError(
                    f"{clip_model_or_path} is a '{model_type}' checkpoint, but PhregCLIPModel is built from a full "
                    "CLIP checkpoint (model_type 'clip', with text tower and projections). For a vision tower alone "
                    "use PhregCLIPVisionModel.from_base."
                )
            base = CLIPModel.from_pretrained(clip_model_or_path, **kwargs)
        else:
            if kwargs:
                raise ValueError(
                    f"Options {sorted(kwargs)} only apply when from_base is given a path or Hub id."
                )
            base = clip_model_or_path
            if not isinstance(base, CLIPModel):
                raise ValueError(
                    f"PhregCLIPModel.from_base expects a transformers CLIPModel (text and vision towers), got "
                    f"{type(base).__name__}. Load one with CLIPModel.from_pretrained(...)."
                )
        vision_kwargs = PhregCLIPVisionModel._config_kwargs_from_base(base.vision_model)
        config = PhregCLIPConfig(
            text_config=base.config.text_config.to_dict(),
            vision_config=PhregCLIPVisionConfig(**vision_kwargs, num_register_tokens=num_register_tokens),
            projection_dim=base.config.projection_dim,
            logit_scale_init_value=base.config.logit_scale_init_value,
            initializer_factor=base.config.initializer_factor,
        )
        config._attn_implementation = base.config._attn_implementation
        config.text_config._attn_implementation = base.config.text_config._attn_implementation
        config.vision_config._attn_implementation = base.config.vision_config._attn_implementation
        student = cls(config)
        missing, unexpected = student.load_state_dict(base.state_dict(), strict=False)
        expected_missing = sorted(
            ["vision_model.register_tokens"]
            + [f"dense_value_path.{k}" for k in student.dense_value_path.state_dict()]
        )
        if unexpected or sorted(missing) != expected_missing:
            raise ValueError(
                f"The weights of {type(base).__name__} do not map onto PhregCLIPModel: missing {missing}, unexpected "
                f"{unexpected}. Please report this with your transformers version."
            )
        student.dense_value_path.copy_from_block(base.vision_model.encoder.layers[-1])
        reference = next(base.parameters())
        return student.to(device=reference.device, dtype=reference.dtype)

    @torch.no_grad()
    def resize_position_embeddings(self, image_size: int) -> None:
        """Resize the position-embedding table once, in place, to a new square `image_size` (e.g. 224 -> 448).

        The new table is exactly what CLIP's own bicubic interpolation gives at that size (transformers'
        `CLIPVisionEmbeddings.interpolate_pos_encoding`), so outputs at `image_size` do not change; the resized table
        is then what trains (the paper: 448 px, 28 x 28 grid; docs/method.md) and `config.vision_config.image_size` is updated.
        """
        vision_config = self.config.vision_config
        patch = self.vision_model.patch_size
        if not isinstance(image_size, int) or image_size % patch or image_size < patch:
            raise ValueError(
                f"image_size must be a positive multiple of the patch size {patch}, got {image_size!r}."
            )
        old = self.vision_model.embeddings
        grid = image_size // patch
        probe = torch.zeros(
            1, 1 + grid * grid, vision_config.hidden_size, device=old.position_embedding.weight.device
        )
        table = old.interpolate_pos_encoding(probe, image_size, image_size)[0]
        vision_config.image_size = image_size
        new = CLIPVisionEmbeddings(vision_config).to(
            device=table.device, dtype=old.patch_embedding.weight.dtype
        )
        new.class_embedding.copy_(old.class_embedding)
        new.patch_embedding.load_state_dict(old.patch_embedding.state_dict())
        new.position_embedding.weight.copy_(table)
        new.position_embedding.weight.requires_grad_(old.position_embedding.weight.requires_grad)
        self.vision_model.embeddings = new

    # ----------------------------------------------------------------------------------------------------------
    # Text: CLIP's own method, the same function object (bit-for-bit CLIP text embeddings).
    get_text_features = CLIPModel.get_text_features

    # ----------------------------------------------------------------------------------------------------------
    # Image
    def _tokens_before_last_block(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, 1 + N + h*w, C)` tokens entering the last encoder block."""
        vision = self.vision_model
        vision.check_pixel_values(pixel_values)
        pixel_values = pixel_values.to(vision.patch_embedding_projection.weight.dtype)
        hidden_states = vision.encoder_input_norm(vision.insert_registers(vision.embed_patches(pixel_values)))
        attention_mask = create_bidirectional_mask(
            config=vision.config, inputs_embeds=hidden_states, attention_mask=None
        )
        for block in vision.transformer_blocks[:-1]:
            hidden_states = block(hidden_states, attention_mask)
        return hidden_states

    def _dense_from_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        patches = hidden_states[:, self.vision_model.num_prefix_tokens :]
        return self.visual_projection(self.vision_model.post_layernorm(self.dense_value_path(patches)))

    def get_dense_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Text-aligned patch features through the MaskCLIP value path of the last block.

        Args:
            pixel_values: `(B, 3, H, W)` normalized images; H and W any multiple of the patch size (position
                embeddings are interpolated bicubically away from `config.vision_config.image_size`).

        Returns:
            `(B, h*w, projection_dim)`, row-major over the patch grid, not normalized (compare with text features
            by cosine).
        """
        return self._dense_from_tokens(self._tokens_before_last_block(pixel_values))

    def get_patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The dense features PH-Reg distills for CLIP: `get_dense_image_features`, `(B, h*w, projection_dim)`."""
        return self.get_dense_image_features(pixel_values)

    def get_dense_feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, projection_dim, H / patch, W / patch)` text-aligned feature map."""
        grid_height, grid_width = self.vision_model.check_pixel_values(pixel_values)
        dense = self.get_dense_image_features(pixel_values)
        return dense.unflatten(1, (grid_height, grid_width)).permute(0, 3, 1, 2)

    @can_return_tuple
    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Image embeddings as `CLIPModel.get_image_features`: `pooler_output` is `(B, projection_dim)`, the
        projected `post_layernorm(CLS)` after the standard last block; any size that is a multiple of the patch."""
        vision_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        vision_outputs.pooler_output = self.visual_projection(vision_outputs.pooler_output)
        return vision_outputs

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        return_dense_features: bool = False,
        output_image_embeds: bool = True,
        **kwargs,
    ) -> PhregCLIPOutput:
        r"""
        Like `CLIPModel.forward`, with either input optional.

        Args:
            input_ids: `(T, L)` token ids (from the saved tokenizer); None skips the text side.
            pixel_values: `(B, 3, H, W)` normalized images, H and W multiples of the patch size; None skips images.
            return_dense_features: also return `dense_image_embeds` `(B, h*w, projection_dim)` (value path); the
                trunk up to the last block runs once for both image outputs.
            output_image_embeds: False skips the standard last block (no `image_embeds`), e.g. when only the dense
                features are needed, as in distillation.

        Returns:
            [`PhregCLIPOutput`]: `text_embeds` `(T, projection_dim)`, `image_embeds` `(B, projection_dim)` (both
            L2-normalized, as in CLIP), `logits_per_image` `(B, T)` / `logits_per_text` when both inputs are given,
            `dense_image_embeds` when asked for.
        """
        text_embeds = image_embeds = dense = logits_per_image = logits_per_text = loss = None
        text_outputs = vision_outputs = None
        if input_ids is not None:
            text_outputs = self.text_model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
            )
            text_embeds = self.text_projection(text_outputs.pooler_output)
            text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
        if pixel_values is not None:
            hidden_states = self._tokens_before_last_block(pixel_values)
            vision = self.vision_model
            attention_mask_vision = create_bidirectional_mask(
                config=vision.config, inputs_embeds=hidden_states, attention_mask=None
            )
            if output_image_embeds:
                last_hidden_state = vision.transformer_blocks[-1](hidden_states, attention_mask_vision)
                pooled = vision.post_layernorm(last_hidden_state[:, 0])
                vision_outputs = BaseModelOutputWithPooling(
                    last_hidden_state=last_hidden_state, pooler_output=pooled
                )
                image_embeds = self.visual_projection(pooled)
                image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
            if return_dense_features:
                dense = self._dense_from_tokens(hidden_states)
        if text_embeds is not None and image_embeds is not None:
            logits_per_text = torch.matmul(text_embeds, image_embeds.t()) * self.logit_scale.exp()
            logits_per_image = logits_per_text.t()
            if return_loss:
                loss = image_text_contrastive_loss(logits_per_text)
        return PhregCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
            dense_image_embeds=dense,
        )

    # ----------------------------------------------------------------------------------------------------------
    # What PH-Reg trains (the trainer's interface, as on the vision students)
    @property
    def patch_size(self) -> int:
        return self.vision_model.patch_size

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """As `PhregRegisterMixin.trainable_parameter_groups`, with `last_block` the value path: the dense
        features, the only thing PH-Reg distills, do not depend on the standard last block."""
        groups = self.vision_model.trainable_parameter_groups()
        groups["last_block"] = list(self.dense_value_path.parameters())
        return groups


__all__ = ["PhregCLIPModel", "PhregCLIPOutput", "PhregCLIPValuePath"]
