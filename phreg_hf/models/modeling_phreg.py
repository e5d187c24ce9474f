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

One register mechanism ([`PhregRegisterMixin`]) serves every backbone; each backbone only says, in a short
adapter, where its embeddings, transformer blocks and norms live (SigLIP and DINOv3 in their own files,
`modeling_phreg_siglip.py` and `modeling_phreg_dinov3.py`). The backbone modules are transformers' own
(embeddings, layers, norms), with the same parameter names as the stock model, so every base weight maps 1:1
and, with zero registers, a student computes exactly what the base model computes.

Token order in ``last_hidden_state`` is ``[CLS, reg_1 .. reg_N, patch_1 .. patch_{h*w}]``, the order of
transformers' ``Dinov2WithRegistersModel``. Registers are inserted after the position embeddings have been
added, so they get none.

This file imports only transformers, torch and ``.configuration_phreg``: it is the code that travels with a
saved checkpoint for ``AutoModel.from_pretrained(path, trust_remote_code=True)``.
"""

import os
import shutil
from pathlib import Path

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
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
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
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_phreg import (
    PhregCLIPVisionConfig,
    PhregDinov2Config,
    PhregDinov2WithRegistersConfig,
    PhregViTConfig,
)

logger = logging.get_logger(__name__)

BACKBONE_MODULE = "modeling_phreg_backbone"  # the file of the students' backbone forms


def backbone_file(module: str = BACKBONE_MODULE) -> Path | None:
    """`modeling_phreg_backbone.py` (or another backbone `module`) next to this file, or None. The backbone file
    imports this one, not the other way round, so it is not fetched with this file: it is there in the installed
    package, and in the remote-code folder of a student that was loaded as an `AutoBackbone`."""
    path = Path(__file__).with_name(module + ".py")
    return path if path.is_file() else None


def copy_backbone_file(save_directory: str | os.PathLike) -> bool:
    """Copy the backbone file beside a saved student's code files (False when there is none to copy)."""
    source = backbone_file()
    if source is None:
        return False
    shutil.copyfile(source, Path(save_directory) / source.name)
    return True


# Parts of a student that PH-Reg may train (docs/method.md: all four by default); see `trainable_parameter_groups`.
TRAINABLE_PARTS = ("registers", "position_embeddings", "patch_embeddings", "last_block")


def _check_num_register_tokens(num_register_tokens) -> None:
    if (
        isinstance(num_register_tokens, bool)
        or not isinstance(num_register_tokens, int)
        or num_register_tokens < 0
    ):
        raise ValueError(
            f"num_register_tokens must be an integer >= 0, got {num_register_tokens!r}. Use 0 to reproduce the "
            "base model exactly, or 16 (the PH-Reg reference setting)."
        )


def check_clip_config_has_towers(path: str | os.PathLike, option: str = "", **config_kwargs) -> None:
    """ValueError when the `config.json` of a full CLIP checkpoint (`clip`, `phreg_clip`) has no `vision_config` or
    `text_config`: transformers would fill in a default tower (ViT-B/32), whose weight shapes then fail to load
    with a size-mismatch report that names neither the file nor the fix. Other checkpoints pass unchecked.

    `config_kwargs`: `revision`, `token`, `cache_dir`, ... as for `AutoConfig.from_pretrained`.
    """
    config_dict, _ = PreTrainedConfig.get_config_dict(path, **config_kwargs)
    if config_dict.get("model_type") not in ("clip", "phreg_clip"):
        return
    missing = [key for key in ("vision_config", "text_config") if not config_dict.get(key)]
    if missing:
        raise ValueError(
            f"{(option + ' ') if option else ''}{path}: its config.json is a '{config_dict['model_type']}' config "
            f"without {' and '.join(missing)}, the settings of the CLIP tower(s) its weights belong to. Save the "
            "model again from a complete copy (save_pretrained writes both), or restore the missing entry."
        )


def config_class_name_for(model_type: str | None) -> str | None:
    """The name of the PH-Reg or stock class that loads checkpoints of `model_type` (for error messages)."""
    for student_class in STUDENT_CLASSES:
        if student_class.config_class.model_type == model_type:
            return student_class.__name__
    if model_type == "phreg_clip":
        return "PhregCLIPModel"
    try:
        return student_class_name_for(model_type)
    except ValueError:
        return None


def _student_class_named(name: str | None):
    return next((c for c in STUDENT_CLASSES if c.__name__ == name), None)


def _nearest_multiples(size: int, multiple: int) -> str:
    lower = (size // multiple) * multiple
    upper = lower + multiple
    return f"{lower} or {upper}" if lower > 0 else f"{upper}"


# Student class -> its base class loader (see `PhregRegisterMixin.base_model_loader`), built once.
_BASE_LOADERS: dict[type, type[PreTrainedModel]] = {}


class PhregRegisterMixin:
    """The register mechanism shared by every PH-Reg student.

    A backbone adapter provides: `embed_patches` (CLS + patch tokens with position embeddings added),
    `encoder_input_norm` (CLIP's `pre_layrnorm`, identity elsewhere), `transformer_blocks`, `final_norm`,
    `pool` (the backbone's own `last_hidden_state` / `pooler_output` convention), and the parameters PH-Reg
    trains (`position_embedding_parameters`, `patch_embedding_projection`).
    """

    config_class: type
    # Name of this student's backbone form in `backbone_module` (None: no backbone form). A name, not the class:
    # that file imports this one. SigLIP / DINOv3 keep theirs beside the model, in the model's own file.
    backbone_class_name: str | None = None
    backbone_module: str = BACKBONE_MODULE
    # The stock transformers classes a student can be built from (the first one is loaded from a path).
    base_model_classes: tuple[type[PreTrainedModel], ...] = ()
    # `model_type`s of base checkpoints this student accepts in `from_base`.
    base_model_types: tuple[str, ...] = ()
    # Whether `last_hidden_state` already went through `final_norm` (False for CLIP, whose dense tokens don't).
    last_hidden_state_is_normed: bool = True
    # Regexes of checkpoint keys outside the base model class, found in checkpoints of a larger model (a full CLIP
    # model's text tower, a classification head). They are not needed, so `from_base` does not load them, and
    # transformers' load report does not list them as UNEXPECTED.
    unused_checkpoint_keys: tuple[str, ...] = (r"^classifier\.",)
    # Whether the base puts a CLS token first (SigLIP has none: its tokens are the patches).
    has_cls_token: bool = True
    # The parts of `TRAINABLE_PARTS` this backbone has (DINOv3: no learned position table, rotary positions).
    trainable_parts: tuple[str, ...] = TRAINABLE_PARTS
    # Submodules kept in eval mode while PH-Reg trains the student (DINOv3: RoPE, which jitters in training mode).
    eval_modules_during_distillation: tuple[str, ...] = ()
    # Base model types this student refuses, with the reason and the fix (SigLIP 2 NaFlex, DINOv3 ConvNeXt).
    refused_base_types: dict[str, str] = {}

    # ----------------------------------------------------------------------------------------------------------
    # Construction
    def _init_registers(self, config) -> None:
        # Compared by model_type: with trust_remote_code the config class may come from another module copy.
        # `from_pretrained` builds a config of this class from any config.json, keeping the file's own model_type:
        # the message names that type (the class name alone would read "needs a X, got X").
        model_type = getattr(config, "model_type", None)
        if model_type != self.config_class.model_type:
            loader = config_class_name_for(model_type)
            if getattr(config, "base_model_type", None) or model_type == "phreg_clip":
                # A full CLIP student's vision tower loads as PhregCLIPVisionBackbone (see its from_pretrained).
                backbone = (
                    "PhregCLIPVisionBackbone"
                    if model_type == "phreg_clip"
                    else getattr(_student_class_named(loader), "backbone_class_name", None)
                )
                fix = f"It is a {loader} checkpoint: load it with {loader}.from_pretrained" + (
                    f" (or {backbone}.from_pretrained as a backbone)" if backbone else ""
                )
                fix += "; AutoModel picks the class itself."
            else:
                fix = (
                    f"Build a student from a stock model with {type(self).__name__}.from_base(model_or_path)"
                )
                fix += f" (for this checkpoint: {loader}.from_base)." if loader else "."
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__} (model_type "
                f"'{self.config_class.model_type}'), but this config.json is of model_type '{model_type}'. {fix}"
            )
        _check_num_register_tokens(config.num_register_tokens)
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))

    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            # PH-Reg: registers start as N(0, 1/hidden_size), i.e. token norms around 1.
            init.normal_(self.register_tokens, mean=0.0, std=self.config.hidden_size**-0.5)

    @classmethod
    def from_base(
        cls, base_model_or_path: PreTrainedModel | str | os.PathLike, num_register_tokens: int = 16, **kwargs
    ):
        """Build a student from a stock base model, copying every base weight exactly.

        Args:
            base_model_or_path: a loaded stock model (or a model wrapping one, e.g. a `...ForImageClassification`
                or a full `CLIPModel`), or a Hub id / local folder of such a checkpoint.
            num_register_tokens: registers to add (0 reproduces the base model exactly).
            kwargs: passed to `from_pretrained` when a path is given (e.g. `revision`, `dtype`,
                `attn_implementation`).

        Returns:
            The student, in the base model's dtype and device, with freshly initialized registers.
        """
        _check_num_register_tokens(num_register_tokens)
        if isinstance(base_model_or_path, (str, os.PathLike)):
            base = cls._load_base(base_model_or_path, **kwargs)
        else:
            if kwargs:
                raise ValueError(
                    f"Options {sorted(kwargs)} only apply when from_base is given a path or Hub id."
                )
            base = cls._unwrap_base(base_model_or_path)
        config = cls.config_class(
            **cls._config_kwargs_from_base(base), num_register_tokens=num_register_tokens
        )
        config._attn_implementation = base.config._attn_implementation
        student = cls(config)
        missing, unexpected = student.load_state_dict(base.state_dict(), strict=False)
        expected_missing = ["register_tokens"]
        if unexpected or sorted(missing) != expected_missing:
            raise ValueError(
                f"The weights of {type(base).__name__} do not map onto {cls.__name__}: missing {missing}, "
                f"unexpected {unexpected}. Please report this with your transformers version."
            )
        reference = next(base.parameters())
        return student.to(device=reference.device, dtype=reference.dtype)

    @classmethod
    def _load_base(cls, path: str | os.PathLike, **kwargs) -> PreTrainedModel:
        config_kwargs = {
            k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs
        }
        check_clip_config_has_towers(path, **config_kwargs)
        model_type = AutoConfig.from_pretrained(path, **config_kwargs).model_type
        if model_type not in cls.base_model_types:
            raise ValueError(
                f"{path} is a '{model_type}' checkpoint, but {cls.__name__} is built from "
                f"{' / '.join(cls.base_model_types)} checkpoints. Use {student_class_name_for(model_type)} or "
                "phreg_hf.student_from_base(path), which picks the right class."
            )
        return cls.base_model_loader().from_pretrained(path, **kwargs)

    @classmethod
    def base_model_loader(cls) -> type[PreTrainedModel]:
        """The stock base class, told (`_keys_to_ignore_on_load_unexpected`) which checkpoint keys it may skip."""
        base_class = cls.base_model_classes[0]
        if not cls.unused_checkpoint_keys:
            return base_class
        loader = _BASE_LOADERS.get(cls)
        if loader is None:
            ignored = list(base_class._keys_to_ignore_on_load_unexpected or []) + list(
                cls.unused_checkpoint_keys
            )
            # Same name, module and behaviour as the stock class (transformers treats classes of other modules as
            # custom code and maps checkpoint keys differently); only the keys it may skip silently differ.
            loader = type(
                base_class.__name__,
                (base_class,),
                {"__module__": base_class.__module__, "_keys_to_ignore_on_load_unexpected": ignored},
            )
            _BASE_LOADERS[cls] = loader
        return loader

    @classmethod
    def _unwrap_base(cls, model) -> PreTrainedModel:
        candidates = [model, getattr(model, "vision_model", None), getattr(model, "base_model", None)]
        for candidate in candidates:
            if isinstance(candidate, cls.base_model_classes):
                return candidate
        refusal = cls.refused_base_types.get(getattr(getattr(model, "config", None), "model_type", None))
        if refusal:
            raise ValueError(refusal)
        expected = " or ".join(c.__name__ for c in cls.base_model_classes)
        raise ValueError(
            f"{cls.__name__}.from_base expects a {expected} (or a model wrapping one), got {type(model).__name__}. "
            "Use phreg_hf.student_from_base(model), which picks the student class for the model's type."
        )

    @classmethod
    def _config_kwargs_from_base(cls, base: PreTrainedModel) -> dict:
        # Only the backbone's own architecture fields; generic ones (model_type, architectures, ...) stay ours.
        generic = set(PreTrainedConfig.__dataclass_fields__)
        keys = (
            set(type(base.config).__dataclass_fields__) & set(cls.config_class.__dataclass_fields__) - generic
        )
        return {key: getattr(base.config, key) for key in keys if not key.startswith("_")}

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus the backbone form: an `AutoBackbone` entry in `config.json`'s
        `auto_map` and `modeling_phreg_backbone.py` beside the other code files, so that a saved student also
        loads as a backbone with `trust_remote_code=True`.

        A student loaded with `trust_remote_code` as an `AutoModel` has no backbone file beside its code (see
        `backbone_file`): it is then saved without the backbone entry, and a warning says how to keep it."""
        saves_code = getattr(self, "_auto_class", None) is not None
        if saves_code and self.backbone_class_name is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            if backbone_file(self.backbone_module) is not None:
                auto_map["AutoBackbone"] = f"{self.backbone_module}.{self.backbone_class_name}"
            elif auto_map.pop("AutoBackbone", None) is not None:
                logger.warning(
                    "%s.py is not next to %s, so %s is saved without its AutoBackbone entry. To keep it, save "
                    "with phreg-hf installed (`import phreg_hf`), or load the model with AutoBackbone first.",
                    BACKBONE_MODULE,
                    Path(__file__).name,
                    save_directory,
                )
            self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)
        if saves_code:
            copy_backbone_file(save_directory)

    # ----------------------------------------------------------------------------------------------------------
    # Forward
    @property
    def patch_size(self) -> int:
        patch_size = self.config.patch_size
        return patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size

    @property
    def num_base_prefix_tokens(self) -> int:
        """Tokens the base model puts before the patches: CLS (plus its own registers, for a base that has them)."""
        return 1

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches in `last_hidden_state`: CLS, any registers of the base, PH-Reg's registers."""
        return self.num_base_prefix_tokens + self.config.num_register_tokens

    def check_pixel_values(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Validate `(B, C, H, W)` pixel values; returns the patch grid `(h, w)`."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = (
                tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            )
            raise ValueError(
                f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}. Use the model's "
                "image processor, or add a batch dimension with pixel_values[None]."
            )
        _, channels, height, width = pixel_values.shape
        if channels != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels but the model expects {self.config.num_channels}. Convert "
                "images to RGB first (e.g. PIL's image.convert('RGB')) and use the model's image processor."
            )
        p = self.patch_size
        if height % p or width % p or height == 0 or width == 0:
            raise ValueError(
                f"Image size {height}x{width} is not a multiple of the patch size {p}. Resize or crop to a multiple "
                f"of {p}: height {_nearest_multiples(height, p)}, width {_nearest_multiples(width, p)}."
            )
        return height // p, width // p

    def insert_registers(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(B, P + h*w, C)` base tokens -> `(B, P + N + h*w, C)`: PH-Reg's N registers right after the base's
        P prefix tokens (CLS, and the base's own registers if it has them) and before the patches."""
        registers = self.register_tokens.to(embeddings.dtype).expand(embeddings.shape[0], -1, -1)
        at = self.num_base_prefix_tokens
        return torch.cat((embeddings[:, :at], registers, embeddings[:, at:]), dim=1)

    def check_bool_masked_pos(self, bool_masked_pos: torch.Tensor | None, batch_size: int, num_patches: int):
        """Validate `(B, h*w)` masked-patch flags (True = replace the patch by the mask token)."""
        if bool_masked_pos is None:
            return None
        if not self.has_mask_token:
            raise ValueError(
                f"bool_masked_pos needs a mask token, and this {type(self).__name__} has none (its base model was built "
                "without one, e.g. ViTModel(use_mask_token=False); CLIP has none). Drop bool_masked_pos, or build the "
                "student from a base with a mask token."
            )
        if tuple(bool_masked_pos.shape) != (batch_size, num_patches):
            raise ValueError(
                f"bool_masked_pos must have shape (batch, num_patches) = ({batch_size}, {num_patches}) for these "
                f"pixel_values, got {tuple(bool_masked_pos.shape)}. It flags patches only (no CLS, no registers)."
            )
        return bool_masked_pos

    def check_native_size(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None) -> None:
        """`interpolate_pos_encoding=False` asks for no interpolation, as in ViT: only the native size then works."""
        if interpolate_pos_encoding is not False:
            return
        image_size = self.config.image_size
        native = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
        if tuple(pixel_values.shape[-2:]) != native:
            raise ValueError(
                f"Input image size {pixel_values.shape[-2]}x{pixel_values.shape[-1]} does not match the model's "
                f"{native[0]}x{native[1]} and interpolate_pos_encoding=False. Pass interpolate_pos_encoding=True (or "
                "leave it unset) to interpolate the position embeddings, or resize the images."
            )

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): normalized images; H and W any multiple
                of the patch size (position embeddings are interpolated away from the native size).
            bool_masked_pos (`torch.BoolTensor` of shape `(B, h*w)`, *optional*): patches to replace by the mask
                token before the position embeddings are added, as in `Dinov2Model` / `ViTModel` (students whose
                base has a mask token only).
            interpolate_pos_encoding (`bool`, *optional*): unset or True interpolates the position embeddings for
                any size that is a multiple of the patch size (the stock DINOv2 behaviour); False requires the
                native `config.image_size`, as `ViTModel(..., interpolate_pos_encoding=False)` does.
            kwargs: transformers' standard keyword arguments (`output_hidden_states`, `output_attentions`,
                `return_dict`, ...). `attention_mask` is refused: every token attends to every token.

        Returns:
            [`~transformers.modeling_outputs.BaseModelOutputWithPooling`] whose `last_hidden_state` is
            `(B, num_prefix_tokens + h*w, C)` in the order `[CLS, registers, patches]`, with the backbone's own
            conventions for `last_hidden_state` normalization and `pooler_output`.
        """
        if kwargs.get("attention_mask") is not None:
            raise ValueError(
                f"{type(self).__name__} takes no attention_mask: images have no padding and every token (CLS, "
                "registers, patches) attends to every other. Drop attention_mask; to ignore image regions, crop them "
                "or mask patches with bool_masked_pos."
            )
        kwargs.pop("attention_mask", None)
        grid_height, grid_width = self.check_pixel_values(pixel_values)
        self.check_native_size(pixel_values, interpolate_pos_encoding)
        bool_masked_pos = self.check_bool_masked_pos(
            bool_masked_pos, len(pixel_values), grid_height * grid_width
        )
        pixel_values = pixel_values.to(self.patch_embedding_projection.weight.dtype)
        embeddings = self.embed_patches(pixel_values, bool_masked_pos)
        hidden_states = self.encoder_input_norm(self.insert_registers(embeddings))
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=None
        )
        block_kwargs = self.block_kwargs(pixel_values)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, attention_mask, **block_kwargs, **kwargs)
        last_hidden_state, pooler_output = self.pool(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooler_output)

    def block_kwargs(self, pixel_values: torch.Tensor) -> dict:
        """Keyword arguments every transformer block gets besides the hidden states and mask (DINOv3: the rotary
        `position_embeddings` of the patch grid of `(B, C, H, W)` `pixel_values`); none by default."""
        return {}

    # ----------------------------------------------------------------------------------------------------------
    # Dense features
    def get_patch_tokens(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Final-normed patch tokens (no CLS, no registers), the dense features PH-Reg distills.

        Args:
            pixel_values: `(B, C, H, W)`, H and W multiples of the patch size.

        Returns:
            `(B, h*w, C)` with h = H / patch_size, w = W / patch_size, row-major over the patch grid.
        """
        outputs = self(pixel_values, **kwargs)
        tokens = outputs.last_hidden_state[:, self.num_prefix_tokens :]
        return tokens if self.last_hidden_state_is_normed else self.final_norm(tokens)

    def get_feature_map(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Dense feature map: `(B, C, H, W)` pixels -> `(B, hidden_size, H / patch_size, W / patch_size)`."""
        grid_height, grid_width = self.check_pixel_values(pixel_values)
        tokens = self.get_patch_tokens(pixel_values, **kwargs)
        return tokens.unflatten(1, (grid_height, grid_width)).permute(0, 3, 1, 2)

    # ----------------------------------------------------------------------------------------------------------
    # What PH-Reg trains
    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of each part PH-Reg may unfreeze, keyed by the names in `self.trainable_parts` (a part the
        backbone does not have, e.g. DINOv3's position table, is no key)."""
        groups = {
            "registers": [self.register_tokens],
            "position_embeddings": list(self.position_embedding_parameters),
            "patch_embeddings": list(self.patch_embedding_projection.parameters()),
            "last_block": list(self.transformer_blocks[-1].parameters()),
        }
        return {part: groups[part] for part in self.trainable_parts}


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


# Every student class, by the base model types it takes; the adapters in other files add theirs (they import this
# file, so it cannot import them).
STUDENT_CLASSES = [PhregDinov2Model, PhregViTModel, PhregCLIPVisionModel, PhregDinov2WithRegistersModel]


def register_student_class(student_class: type) -> type:
    """Make `student_class_for` / `student_from_base` pick `student_class` for its `base_model_types`."""
    if student_class not in STUDENT_CLASSES:
        STUDENT_CLASSES.append(student_class)
    return student_class


def student_class_for(model_type: str) -> type[PhregRegisterMixin]:
    """The student class for a base checkpoint's `model_type` (e.g. "dinov2", "vit", "clip")."""
    for student_class in STUDENT_CLASSES:
        if model_type in student_class.base_model_types:
            return student_class
        if model_type in student_class.refused_base_types:
            raise ValueError(student_class.refused_base_types[model_type])
    supported = sorted(t for c in STUDENT_CLASSES for t in c.base_model_types)
    raise ValueError(
        f"No PH-Reg student for '{model_type}' checkpoints; supported base model types: {supported}."
    )


def student_class_name_for(model_type: str) -> str:
    return student_class_for(model_type).__name__


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
