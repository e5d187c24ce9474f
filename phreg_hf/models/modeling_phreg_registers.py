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
"""The register mechanism every PH-Reg student shares ([`PhregRegisterMixin`]) and the registry of student classes.

A student is a stock transformers backbone plus `num_register_tokens` learnable tokens inserted after the
position embeddings. The mixin owns everything that does not depend on the backbone: inserting the registers,
running the blocks, pooling, building a student from its base (`from_base`), saving the code files a checkpoint
carries, and the parts PH-Reg may train. Each backbone's adapter (`modeling_phreg.py` for ViT, DINOv2 and CLIP
vision; `modeling_phreg_siglip.py`, `modeling_phreg_dinov3.py`) says where its modules live and registers its class
with `register_student_class`.

This file imports only transformers, torch and ``.configuration_phreg``: it travels with a saved checkpoint for
``AutoModel.from_pretrained(path, trust_remote_code=True)``.
"""

import os
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

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


# Every student class, by the base model types it takes; each adapter file adds its own with
# `register_student_class` (they import this file, so it cannot import them).
STUDENT_CLASSES: list[type] = []


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


__all__ = [
    "BACKBONE_MODULE",
    "PhregRegisterMixin",
    "STUDENT_CLASSES",
    "TRAINABLE_PARTS",
    "backbone_file",
    "check_clip_config_has_towers",
    "config_class_name_for",
    "copy_backbone_file",
    "register_student_class",
    "student_class_for",
    "student_class_name_for",
]
