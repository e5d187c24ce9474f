"""Shared fixtures: tiny random-init stock backbones (hidden 32, 2 layers), built from configs, and a recorder
standing in for the Hub (`FakeHub`), which these machines cannot reach."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

# Tiny models run faster on one thread than on two busy ones (OpenMP threads of several processes on 2 shared cores
# oversubscribe them: a 0.5 s test took 52 s under load). Set before torch is imported, so that the processes the
# tests start (torchrun, the examples, the benchmarks) inherit it too; an OMP_NUM_THREADS of the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from huggingface_hub import CommitInfo, HfApi, ModelCardData, RepoUrl
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    SiglipVisionConfig,
    SiglipVisionModel,
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
    elif model_type == "siglip_vision_model":
        config = SiglipVisionConfig(**TINY, intermediate_size=64)
        model_class = SiglipVisionModel
    elif model_type == "dinov3_vit":  # with the 4 registers of the released DINOv3 ViTs
        config = DINOv3ViTConfig(**TINY, intermediate_size=64, num_register_tokens=4)
        model_class = DINOv3ViTModel
    else:
        raise ValueError(model_type)
    config._attn_implementation = attn_implementation
    return model_class(config).eval()


BACKBONES = ("dinov2", "vit", "clip_vision_model")
# The newer towers (SigLIP, DINOv3): tested in their own files and in the remote-code / Hub-id loading tests, not
# through every test that takes `backbone`, to keep the suite fast.
NEWER_BACKBONES = ("siglip_vision_model", "dinov3_vit")


@pytest.fixture(params=BACKBONES)
def backbone(request) -> str:
    return request.param


def run_without_phreg(code: str, cwd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run Python code in a fresh process that cannot import phreg_hf (as a user who never installed it), offline;
    `env` adds environment variables (e.g. HF_HOME)."""
    prelude = "import sys\nsys.modules['phreg_hf'] = None  # any `import phreg_hf` now fails\n"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})}
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


class FakeHub:
    """Records what would reach the Hub; `fail_commit` / `fail_repo` make that call raise."""

    def __init__(self, monkeypatch, license: str | None = "apache-2.0"):
        self.calls: list[str] = []
        self.commits: list[dict] = []
        self.fail_commit: BaseException | None = None
        self.fail_repo: BaseException | None = None
        self.license = license
        for name in ("create_repo", "create_branch", "create_commit", "model_info"):
            monkeypatch.setattr(HfApi, name, getattr(self, name))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append("create_repo")
        if self.fail_repo is not None:
            raise self.fail_repo
        assert kwargs["exist_ok"] is True
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        self.calls.append("create_branch")

    def model_info(self, repo_id, **kwargs):
        self.calls.append("model_info")
        return types.SimpleNamespace(card_data=ModelCardData(license=self.license))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append("create_commit")
        if self.fail_commit is not None:
            raise self.fail_commit
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        assert len(files) == len(operations), "a path uploaded twice"
        self.commits.append({"repo_id": repo_id, "files": files, **kwargs})
        oid = hashlib.sha1(repr(sorted(files)).encode()).hexdigest()
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid=oid,
        )


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    return FakeHub(monkeypatch)


def write_small_sample_images(root: Path) -> tuple[Path, Path]:
    """(train folder, held-out folder) from scikit-image's sample photos: every other photo trains (as a small
    96 px thumbnail, fast to decode), the others are held out as 2 x 2 tiles (more images for the position
    measure, whose floor is about 1 / number of images)."""
    from phreg_hf.data import write_sample_images

    written = sorted(Path(p) for p in write_sample_images(root / "all"))
    assert len(written) >= 10, "scikit-image should ship at least 10 sample photos"
    train, heldout = root / "train", root / "heldout"
    train.mkdir()
    heldout.mkdir()
    for i, path in enumerate(written):
        image = Image.open(path).convert("RGB")
        if i % 2 == 0:
            image.thumbnail((96, 96))
            image.save(train / f"{path.stem}.png")
            continue
        width, height = image.size
        for row in range(2):
            for col in range(2):
                box = (col * width // 2, row * height // 2, (col + 1) * width // 2, (row + 1) * height // 2)
                tile = image.crop(box)
                tile.thumbnail((128, 128))
                tile.save(heldout / f"{path.stem}_{row}{col}.png")
    return train, heldout


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> tuple[Path, Path]:
    return write_small_sample_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_clip_folders(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny stock CLIP folder with its processor, 64 px / patch 8, and a PH-Reg CLIP student of it with 2
    registers saved as the trainer saves one: with the segmentation pipeline and the processor)."""
    from phreg_hf import PhregCLIPModel
    from phreg_hf.evaluate.segmentation import save_pretrained_with_pipeline
    from phreg_hf.synthetic_clip import build_tiny_clip_processor, save_planted_artifact_clip

    root = tmp_path_factory.mktemp("tiny_clip")
    save_planted_artifact_clip(root / "base", image_size=64, patch_size=8)
    student = PhregCLIPModel.from_base(str(root / "base"), 2)
    save_pretrained_with_pipeline(student, root / "student", build_tiny_clip_processor(64))
    return root / "base", root / "student"
