"""Loading a pushed student by its Hub id, verbatim: `AutoModel.from_pretrained("org/dinov2-phreg", ...)`.

The Hub cannot be reached here, so the test takes what a push uploads (the commit `FakeHub` intercepts), lays it
out as the Hugging Face cache holds a download of `org/dinov2-phreg` (`models--org--dinov2-phreg/refs/main` naming a
commit, `snapshots/<commit>/` holding its files), and in a fresh process with `HF_HUB_OFFLINE=1` and phreg_hf not
importable loads it exactly as a Hub user would: `AutoModel` with `trust_remote_code=True`, the
`image-feature-extraction` pipeline, the image processor, and (DINOv2) the stock export without remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_base, run_without_phreg
from hub_helpers import image_processor
from PIL import Image
from safetensors.torch import load_file, save_file

from phreg_hf import student_from_base
from phreg_hf.hub import push as hub

REPOS = {
    "dinov2": "org/dinov2-phreg",
    "clip_vision_model": "org/clip-phreg",
    "siglip_vision_model": "org/siglip-phreg",
    "dinov3_vit": "org/dinov3-phreg",
}


def write_cache_snapshot(hub_cache: Path, repo_id: str, commit_oid: str, files: dict[str, bytes]) -> Path:
    """Lay out `files` as huggingface_hub's cache holds a download of `repo_id` at `commit_oid` (on main)."""
    repo_dir = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit_oid)
    snapshot = repo_dir / "snapshots" / commit_oid
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    return snapshot


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """Push a DINOv2 student (with the stock export), a CLIP, a SigLIP and a DINOv3 student through
    `push_folder_to_hub`, intercept the commits, and write them into a fresh Hugging Face cache; returns the folders
    and expected outputs."""
    root = tmp_path_factory.mktemp("hub_id")
    hub_cache = root / "hf_home" / "hub"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    image.save(root / "image.png")
    pixel_values = image_processor()(image, return_tensors="pt")["pixel_values"]
    save_file({"pixel_values": pixel_values}, root / "inputs.safetensors")
    expected = {}
    monkeypatch = pytest.MonkeyPatch()
    try:
        from conftest import FakeHub

        fake_hub = FakeHub(monkeypatch)
        for backbone, repo_id in REPOS.items():
            student = student_from_base(make_base(backbone), 4).eval()
            folder = root / backbone
            student.save_pretrained(folder)
            image_processor().save_pretrained(folder)
            result = hub.push_folder_to_hub(
                folder, repo_id, license="apache-2.0", export_dinov2_with_registers=backbone == "dinov2"
            )
            commit = fake_hub.commits[-1]
            assert commit["repo_id"] == repo_id
            write_cache_snapshot(hub_cache, repo_id, result.commit.oid, commit["files"])
            with torch.no_grad():
                expected[backbone] = student(pixel_values).last_hidden_state
    finally:
        monkeypatch.undo()
    save_file(expected, root / "expected.safetensors")
    return root


@pytest.mark.slow
def test_pushed_students_load_by_hub_id_offline_without_phreg(pushed):
    env = {"HF_HOME": str(pushed / "hf_home")}  # the cache above; remote code is copied under it too
    run_without_phreg(
        f"""
        import json
        import numpy as np
        import torch
        from PIL import Image
        from safetensors.torch import load_file, save_file
        from transformers import AutoImageProcessor, AutoModel, pipeline

        repos = {REPOS!r}
        inputs = load_file("inputs.safetensors")["pixel_values"]
        image = Image.open("image.png")
        outputs, report = {{}}, {{}}
        for backbone, repo_id in repos.items():
            model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
            processor = AutoImageProcessor.from_pretrained(repo_id)
            extractor = pipeline("image-feature-extraction", model=repo_id, trust_remote_code=True)
            with torch.no_grad():
                outputs[backbone] = model(inputs).last_hidden_state
                outputs[backbone + "/processor"] = processor(image, return_tensors="pt")["pixel_values"]
            outputs[backbone + "/pipeline"] = torch.tensor(np.array(extractor(image)), dtype=torch.float32)
            report[backbone] = [type(model).__module__, type(model).__name__, type(extractor.model).__name__]
        # The stock export: no remote code at all.
        stock = AutoModel.from_pretrained(repos["dinov2"], subfolder="dinov2_with_registers").eval()
        report["stock"] = [type(stock).__module__, type(stock).__name__]
        with torch.no_grad():
            outputs["stock"] = stock(inputs).last_hidden_state
        save_file(outputs, "outputs.safetensors")
        open("report.json", "w").write(json.dumps(report))
        """,
        cwd=str(pushed),
        env=env,
    )
    report = json.loads((pushed / "report.json").read_text())
    outputs = load_file(pushed / "outputs.safetensors")
    expected = load_file(pushed / "expected.safetensors")
    pixel_values = load_file(pushed / "inputs.safetensors")["pixel_values"]
    for backbone, class_name in (
        ("dinov2", "PhregDinov2Model"),
        ("clip_vision_model", "PhregCLIPVisionModel"),
        ("siglip_vision_model", "PhregSiglipVisionModel"),
        ("dinov3_vit", "PhregDinov3ViTModel"),
    ):
        module, name, pipeline_model = report[backbone]
        assert module.startswith("transformers_modules.") and name == class_name == pipeline_model
        # Loaded verbatim, i.e. with the default attention kernel (sdpa) where the student ran eager: equal up to
        # float rounding.
        torch.testing.assert_close(outputs[backbone], expected[backbone], atol=1e-5, rtol=1e-5)
        assert torch.equal(outputs[backbone + "/processor"], pixel_values), backbone  # the uploaded processor
        torch.testing.assert_close(outputs[backbone + "/pipeline"], expected[backbone], atol=1e-5, rtol=1e-5)
    assert report["stock"] == [
        "transformers.models.dinov2_with_registers.modeling_dinov2_with_registers",
        "Dinov2WithRegistersModel",
    ]
    torch.testing.assert_close(outputs["stock"], expected["dinov2"], atol=1e-5, rtol=1e-5)
