"""Loading saved students where phreg_hf is not installed: trust_remote_code, the stock DINOv2 export, pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import BACKBONES, IMAGE_SIZE, NEWER_BACKBONES, make_base, run_without_phreg
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import BitImageProcessor, pipeline

from phreg_hf import PhregDinov2Model, student_from_base


def image_processor():
    return BitImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


@pytest.fixture(scope="module")
def saved_students(tmp_path_factory):
    """One folder per backbone (trust_remote_code) plus the stock dinov2_with_registers export; the SigLIP and
    DINOv3 students also with their backbone feature maps."""
    root = tmp_path_factory.mktemp("students")
    inputs = {"native": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE), "other": torch.randn(1, 3, 40, 72)}
    save_file(inputs, root / "inputs.safetensors")
    expected = {}
    for backbone in (*BACKBONES, *NEWER_BACKBONES):
        student = student_from_base(make_base(backbone, "eager"), 4).eval()
        student.save_pretrained(root / backbone)
        image_processor().save_pretrained(root / backbone)
        with torch.no_grad():
            for name, x in inputs.items():
                expected[f"{backbone}/{name}"] = student(x).last_hidden_state
            if backbone in NEWER_BACKBONES:
                expected[f"{backbone}/feature_map"] = student.get_feature_map(inputs["native"])
        if backbone == "dinov2":
            student.to_dinov2_with_registers().save_pretrained(root / "stock")
            expected["stock/native"] = expected["dinov2/native"]
    return root, expected


def test_trust_remote_code_and_stock_export_load_without_phreg(saved_students):
    root, expected = saved_students
    stock_config = json.loads((root / "stock" / "config.json").read_text())
    assert stock_config["model_type"] == "dinov2_with_registers" and "auto_map" not in stock_config
    assert not (root / "stock" / "modeling_phreg.py").exists()

    run_without_phreg(
        f"""
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoBackbone, AutoModel
        from transformers.models.auto import auto_factory
        # transformers 5.24 asks the Hub whether a name is a repository before loading a backbone; say yes (see
        # test_backbone.py's hub_reachable fixture).
        auto_factory.hf_api = lambda: type("Hub", (), {{"repo_exists": lambda self, _: True}})()
        inputs = load_file("inputs.safetensors")
        outputs = {{}}
        for backbone in {[*BACKBONES, *NEWER_BACKBONES]!r}:
            model = AutoModel.from_pretrained(backbone, trust_remote_code=True, attn_implementation="eager").eval()
            assert "transformers_modules" in type(model).__module__, type(model).__module__
            with torch.no_grad():
                for name, x in inputs.items():
                    outputs[f"{{backbone}}/{{name}}"] = model(x).last_hidden_state
            if backbone in {list(NEWER_BACKBONES)!r}:
                # Their backbone form lives in the model's own file, which travels with it.
                features = AutoBackbone.from_pretrained(
                    backbone, trust_remote_code=True, attn_implementation="eager", out_indices=[-1]
                ).eval()
                assert type(features).__name__.endswith("Backbone"), type(features).__name__
                with torch.no_grad():
                    outputs[f"{{backbone}}/feature_map"] = features(inputs["native"]).feature_maps[-1]
        stock = AutoModel.from_pretrained("stock", attn_implementation="eager").eval()  # no remote code
        assert type(stock).__name__ == "Dinov2WithRegistersModel"
        with torch.no_grad():
            outputs["stock/native"] = stock(inputs["native"]).last_hidden_state
            outputs["stock/other"] = stock(inputs["other"]).last_hidden_state
        save_file(outputs, "outputs.safetensors")
        """,
        cwd=str(root),
    )
    outputs = load_file(root / "outputs.safetensors")
    for key, want in expected.items():
        if key.startswith("stock"):
            # Same weights and architecture; at the native size no interpolation happens on either side.
            torch.testing.assert_close(outputs[key], want, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(outputs[key], want), key
    # Away from the native size the stock class interpolates position embeddings with antialiasing: the
    # outputs differ, as the export's docstring says.
    student_other = expected["dinov2/other"]
    assert not torch.allclose(outputs["stock/other"], student_other, atol=1e-4)


def test_image_feature_extraction_pipeline(saved_students):
    root, _ = saved_students
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    extractor = pipeline("image-feature-extraction", model=str(root / "dinov2"))
    features = np.array(extractor(image))
    assert features.shape == (1, 1 + 4 + 49, 32)
    student = PhregDinov2Model.from_pretrained(root / "dinov2").eval()
    pixel_values = image_processor()(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = student(pixel_values).last_hidden_state
    np.testing.assert_allclose(features, want.numpy(), atol=1e-5)
    pooled = np.array(extractor(image, pool=True))
    assert pooled.shape == (1, 32)


def test_pipeline_with_remote_code_only(saved_students):
    root, _ = saved_students
    result = run_without_phreg(
        """
        import numpy as np
        from PIL import Image
        from transformers import pipeline
        extractor = pipeline("image-feature-extraction", model="clip_vision_model", trust_remote_code=True)
        print(np.array(extractor(Image.new("RGB", (64, 80), "white"))).shape)
        """,
        cwd=str(root),
    )
    assert result.stdout.strip().endswith("(1, 54, 32)")
