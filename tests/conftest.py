"""Shared fixtures: tiny random-init stock backbones (hidden 32, 2 layers), built from configs, no Hub."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTModel,
)

IMAGE_SIZE = 56
PATCH_SIZE = 8
TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE
)


def make_base(model_type: str, attn_implementation: str = "eager", seed: int = 0):
    """A tiny stock transformers model of the given type, in eval mode."""
    torch.manual_seed(seed)
    if model_type == "dinov2":
        config = Dinov2Config(**TINY)
        model_class = Dinov2Model
    elif model_type == "vit":
        config = ViTConfig(**TINY, intermediate_size=64)
        model_class = ViTModel
    elif model_type == "clip_vision_model":
        config = CLIPVisionConfig(**TINY, intermediate_size=64)
        model_class = CLIPVisionModel
    else:
        raise ValueError(model_type)
    config._attn_implementation = attn_implementation
    return model_class(config).eval()


BACKBONES = ("dinov2", "vit", "clip_vision_model")


@pytest.fixture(params=BACKBONES)
def backbone(request) -> str:
    return request.param


def run_without_phreg(code: str, cwd: str) -> subprocess.CompletedProcess:
    """Run Python code in a fresh process that cannot import phreg_hf (as a user who never installed it)."""
    prelude = "import sys\nsys.modules['phreg_hf'] = None  # any `import phreg_hf` now fails\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result
