"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`, `BackboneTesterMixin`) on every
student and backbone class, with 0 and 4 registers.

The test code is transformers' (the sdist of the installed version, fetched by `transformers_common_tests`);
the small `StudentTester` below is ours. Each skipped test says, next to it, why it does not apply.
"""

import unittest

import pytest
import torch

import phreg_hf
from phreg_hf import (
    PhregCLIPVisionBackbone,
    PhregCLIPVisionModel,
    PhregDinov2Backbone,
    PhregDinov2Model,
    PhregDinov2WithRegistersBackbone,
    PhregDinov2WithRegistersModel,
    PhregDinov3ViTBackbone,
    PhregDinov3ViTModel,
    PhregSiglipVisionBackbone,
    PhregSiglipVisionModel,
    PhregViTBackbone,
    PhregViTModel,
)

try:
    import transformers_common_tests

    common, config_common, backbone_common = transformers_common_tests.load()
except transformers_common_tests.Unavailable as error:
    pytest.skip(f"transformers' common tests are unavailable: {error}", allow_module_level=True)
except ImportError as error:  # a test dependency of transformers' tests, e.g. `parameterized`
    pytest.skip(
        f"transformers' common tests need {error.name!r}: pip install -e '.[dev]'", allow_module_level=True
    )

# About 2.5 min of CPU on 2 cores (12 student classes x ~100 common tests, 12 backbone classes).
pytestmark = pytest.mark.slow

# (model class, backbone class, extra config arguments, tokens the base puts before the patches)
STUDENTS = {
    "dinov2": (PhregDinov2Model, PhregDinov2Backbone, {}, 1),
    # With a mask token, so that the common tests' bool_masked_pos inputs exercise it.
    "vit": (PhregViTModel, PhregViTBackbone, {"intermediate_size": 37, "use_mask_token": True}, 1),
    "clip": (PhregCLIPVisionModel, PhregCLIPVisionBackbone, {"intermediate_size": 37}, 1),
    "dinov2_with_registers": (
        PhregDinov2WithRegistersModel,
        PhregDinov2WithRegistersBackbone,
        {"num_base_register_tokens": 2},
        1 + 2,
    ),
    # No CLS: the registers come first, then the patches.
    "siglip": (PhregSiglipVisionModel, PhregSiglipVisionBackbone, {"intermediate_size": 37}, 0),
    # With a head size of 16 (4 rotary frequencies per axis) and 2 registers of its own.
    "dinov3": (
        PhregDinov3ViTModel,
        PhregDinov3ViTBackbone,
        {"intermediate_size": 37, "num_base_register_tokens": 2},
        1 + 2,
    ),
}


NO_LOSS = (
    "Needs a model with a head that returns a loss. transformers skips it for its own base models and backbones by "
    "looking their class names up in MODEL_MAPPING_NAMES, a table custom classes cannot join. Training through the "
    "students (and gradient checkpointing) is tested in test_modeling.py, test_trainer.py and test_backbone.py."
)


class StudentTester:
    """What ModelTesterMixin asks of a model tester, for one student class (tiny config, random pixels)."""

    def __init__(self, parent, model_class, extra_config, num_base_prefix_tokens, num_register_tokens):
        self.parent = parent
        self.config_class = model_class.config_class
        self.extra_config = extra_config
        self.num_register_tokens = num_register_tokens
        self.batch_size = 2
        self.image_size = 16
        self.patch_size = 4
        self.num_channels = 3
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.is_training = True
        num_patches = (self.image_size // self.patch_size) ** 2
        self.seq_length = num_base_prefix_tokens + num_register_tokens + num_patches
        # bool_masked_pos flags patches only (no CLS, no registers): how many, and how many are masked.
        self.mask_length = num_patches
        self.num_masks = num_patches // 2

    def get_config(self):
        return self.config_class(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_register_tokens=self.num_register_tokens,
            **self.extra_config,
        )

    def prepare_config_and_inputs(self):
        shape = [self.batch_size, self.num_channels, self.image_size, self.image_size]
        return self.get_config(), common.floats_tensor(shape)

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class StudentModelTestMixin(common.ModelTesterMixin):
    student = "dinov2"
    num_register_tokens = 0
    # Feature extractors: no token embeddings to resize (the "input embeddings" are the patch projection).
    test_resize_embeddings = False

    def setUp(self):
        model_class, _, extra, prefix = STUDENTS[self.student]
        self.model_tester = StudentTester(self, model_class, extra, prefix, self.num_register_tokens)
        self.config_tester = config_common.ConfigTester(
            self,
            config_class=model_class.config_class,
            has_text_modality=False,
            hidden_size=37,
            num_attention_heads=1,  # CLIP checks that the hidden size is a multiple of the heads
            num_register_tokens=self.num_register_tokens,
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_output_shapes(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = self.all_model_classes[0](config).eval()
        with torch.no_grad():
            outputs = model(**inputs)
        tester = self.model_tester
        assert outputs.last_hidden_state.shape == (tester.batch_size, tester.seq_length, tester.hidden_size)
        grid = tester.image_size // tester.patch_size
        assert model.get_feature_map(inputs["pixel_values"]).shape == (tester.batch_size, 32, grid, grid)

    def test_model_get_set_embeddings(self):
        # The common test expects token embeddings (nn.Embedding); an image model's input embeddings are its patch
        # embeddings, a module with a conv projection, as in transformers' own DINOv2/ViT tests.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            assert isinstance(model.get_input_embeddings(), torch.nn.Module)
            assert model.get_output_embeddings() is None

    @unittest.skip(reason=NO_LOSS)
    def test_training(self):
        pass

    @unittest.skip(reason=NO_LOSS)
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason=NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason=NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip(reason="Image models take pixel_values only: there are no inputs_embeds.")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="Image models take pixel_values only: there are no inputs_embeds.")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(
        reason="The blocks are transformers' ViT/DINOv2/CLIP/SigLIP/DINOv3 layers, which do not chunk feed-forwards."
    )
    def test_feed_forward_chunking(self):
        pass


SAME_AS_KEPT_VARIANT = (
    "Images have no padding and no attention mask, so every padding-side / attention-mask variant of this test runs "
    "the same computation as its pad_right_no_attn_mask variant, which runs (for fp16, fp32 and bf16, and with "
    "output_attentions); the _sdpa_kernels variants only pick CUDA kernels."
)
for _name in dir(common.ModelTesterMixin):
    if _name.startswith("test_eager_matches_sdpa_inference_") and not _name.endswith(
        ("_pad_right_no_attn_mask", "_output_attentions")
    ):
        setattr(StudentModelTestMixin, _name, unittest.skip(reason=SAME_AS_KEPT_VARIANT)(lambda self: None))


class StudentBackboneTestMixin(backbone_common.BackboneTesterMixin):
    student = "dinov2"
    num_register_tokens = 0
    # As transformers' own DINOv2 backbone tests: the attention outputs are tested by the model tests above.
    has_attentions = False

    def setUp(self):
        model_class, _, extra, prefix = STUDENTS[self.student]
        self.model_tester = StudentTester(self, model_class, extra, prefix, self.num_register_tokens)


def _make_test_classes():
    classes = {}
    for student, (model_class, backbone_class, _, _) in STUDENTS.items():
        for num_register_tokens in (0, 4):
            suffix = f"{model_class.__name__}_{num_register_tokens}Registers"
            attributes = {"student": student, "num_register_tokens": num_register_tokens}
            classes[f"Test{suffix}"] = type(
                f"Test{suffix}",
                (StudentModelTestMixin, unittest.TestCase),
                # The backbone runs the common model tests once (with registers), to keep the runtime modest.
                {
                    **attributes,
                    "all_model_classes": (model_class, backbone_class)[: 1 + bool(num_register_tokens)],
                },
            )
            backbone_name = f"Test{backbone_class.__name__}_{num_register_tokens}Registers"
            classes[backbone_name] = type(
                backbone_name,
                (StudentBackboneTestMixin, unittest.TestCase),
                {
                    **attributes,
                    "all_model_classes": (backbone_class,),
                    "config_class": model_class.config_class,
                },
            )
    return classes


globals().update(_make_test_classes())
assert phreg_hf  # the import registers the Auto classes that some common tests go through
