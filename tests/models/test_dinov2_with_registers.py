"""Bases that already have registers (`Dinov2WithRegistersModel`): exactness, token order, training, eval, card."""

import json

import pytest
import torch
from conftest import TINY, run_without_phreg, write_small_sample_images
from trainer_helpers import make_args
from transformers import (
    AutoModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    Dinov2WithRegistersModel,
)

from phreg_hf import PhregDinov2WithRegistersModel, student_from_base
from phreg_hf.distill.trainer import DistillTrainer, build_demo_image_processor
from phreg_hf.evaluate.artifacts import eval_main
from phreg_hf.evaluate.visualization import visualize_main
from phreg_hf.hub import push_main

NUM_BASE_REGISTERS = 3


def make_base(attn_implementation="eager", seed=0) -> Dinov2WithRegistersModel:
    torch.manual_seed(seed)
    config = Dinov2WithRegistersConfig(**TINY, num_register_tokens=NUM_BASE_REGISTERS)
    config._attn_implementation = attn_implementation
    base = Dinov2WithRegistersModel(config).eval()
    with torch.no_grad():  # the stock init zeroes them; pretrained registers are not zero
        base.embeddings.register_tokens.normal_()
    return base


def pixels(height=56, width=56, batch=2):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("size", [(56, 56), (40, 72)])
def test_zero_new_registers_reproduce_the_base_exactly(attn_implementation, size):
    base = make_base(attn_implementation)
    student = student_from_base(base, 0).eval()
    assert type(student) is PhregDinov2WithRegistersModel
    assert student.config.num_base_register_tokens == NUM_BASE_REGISTERS and student.num_prefix_tokens == 4
    x = pixels(*size)  # 40x72: position embeddings interpolated (with antialias) on both sides
    kwargs = dict(output_hidden_states=True, output_attentions=attn_implementation == "eager")
    with torch.no_grad():
        want, got = base(x, **kwargs), student(x, **kwargs)
    assert torch.equal(want.last_hidden_state, got.last_hidden_state)
    assert torch.equal(want.pooler_output, got.pooler_output)
    for a, b in zip(want.hidden_states, got.hidden_states, strict=True):
        assert torch.equal(a, b)
    if kwargs["output_attentions"]:
        for a, b in zip(want.attentions, got.attentions, strict=True):
            assert torch.equal(a, b)


def test_new_registers_come_after_the_base_registers_which_stay_frozen():
    base = make_base()
    student = student_from_base(base, 5).eval()
    assert student.config.num_register_tokens == 5
    assert torch.equal(student.embeddings.register_tokens, base.embeddings.register_tokens)
    x = pixels()
    with torch.no_grad():
        layer_input = student(x, output_hidden_states=True).hidden_states[0]
        base_input = base(x, output_hidden_states=True).hidden_states[0]
    # [CLS, base registers (positions unchanged), PH-Reg registers, patches]
    assert torch.equal(layer_input[:, :4], base_input[:, :4])
    assert torch.equal(layer_input[:, 4:9], student.register_tokens.expand(2, -1, -1))
    assert torch.equal(layer_input[:, 9:], base_input[:, 4:])
    assert student.get_feature_map(x).shape == (2, 32, 7, 7)
    # PH-Reg trains its own registers only: the base's are no trainable part.
    trainable = {id(p) for group in student.trainable_parameter_groups().values() for p in group}
    assert (
        id(student.register_tokens) in trainable and id(student.embeddings.register_tokens) not in trainable
    )


def test_built_from_a_classifier_checkpoint_too():
    classifier = Dinov2WithRegistersForImageClassification(make_base().config)
    student = student_from_base(classifier, 2)
    assert torch.equal(
        student.embeddings.register_tokens, classifier.dinov2_with_registers.embeddings.register_tokens
    )


def test_stock_export_holds_both_register_sets_and_matches_at_every_size(tmp_path):
    student = student_from_base(make_base(), 4).eval()
    exported = student.to_dinov2_with_registers()
    assert type(exported) is Dinov2WithRegistersModel and exported.config.num_register_tokens == 3 + 4
    for size in [(56, 56), (40, 72)]:
        with torch.no_grad():
            torch.testing.assert_close(
                exported(pixels(*size)).last_hidden_state,
                student(pixels(*size)).last_hidden_state,
                rtol=0,
                atol=0,
            )


def test_save_load_and_remote_code(tmp_path):
    student = student_from_base(make_base(), 4).eval()
    student.save_pretrained(tmp_path / "student")
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["num_register_tokens"] == 4 and config["num_base_register_tokens"] == 3
    loaded = AutoModel.from_pretrained(tmp_path / "student", attn_implementation="eager").eval()
    x = pixels()
    with torch.no_grad():
        want = student(x).last_hidden_state
        assert torch.equal(loaded(x).last_hidden_state, want)
    torch.save(x, tmp_path / "x.pt")
    run_without_phreg(
        """
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("student", trust_remote_code=True, attn_implementation="eager").eval()
        assert type(model).__name__ == "PhregDinov2WithRegistersModel"
        with torch.no_grad():
            torch.save(model(torch.load("x.pt")).last_hidden_state, "out.pt")
        """,
        cwd=str(tmp_path),
    )
    assert torch.equal(torch.load(tmp_path / "out.pt"), want)


@pytest.mark.slow
def test_train_eval_visualize_and_card_with_a_registers_base(tmp_path, capsys):
    """The whole tool chain on a local Dinov2WithRegisters checkpoint (`--teacher FOLDER`)."""
    train, heldout = write_small_sample_images(tmp_path / "images")
    base = make_base()
    base.save_pretrained(tmp_path / "base")
    build_demo_image_processor(56).save_pretrained(tmp_path / "base")
    args = make_args(
        tmp_path / "out",
        train,
        teacher=str(tmp_path / "base"),
        max_steps=3,
        eval_images=str(heldout),
        resolution=56,
    )
    trainer = DistillTrainer(args)
    result = trainer.train()
    assert result["settings"]["base_model_type"] == "dinov2_with_registers"
    assert result["settings"]["model_type"] == "phreg_dinov2_with_registers"
    student = AutoModel.from_pretrained(tmp_path / "out")
    assert type(student) is PhregDinov2WithRegistersModel and student.config.num_register_tokens == 4
    # The base's own registers were frozen; PH-Reg's new ones trained.
    assert torch.equal(student.embeddings.register_tokens, base.embeddings.register_tokens)
    assert not torch.equal(student.register_tokens, student_from_base(base, 4).register_tokens)

    compare = ["--base", tmp_path / "base", "--student", tmp_path / "out", "--images", heldout]
    assert eval_main([str(a) for a in compare]) == 0
    assert "student" in capsys.readouterr().out
    argv = [
        "--base",
        tmp_path / "base",
        "--student",
        tmp_path / "out",
        "--images",
        heldout,
        "--out",
        tmp_path / "viz",
    ]
    assert visualize_main([str(a) for a in argv + ["--max_images", "1"]]) == 0
    assert len(list((tmp_path / "viz").glob("*.png"))) == 1

    argv = [str(tmp_path / "out"), "alice/dinov2-reg-phreg", "--dry_run", "--export_dinov2_with_registers"]
    argv += ["--license", "apache-2.0"]
    assert push_main(argv) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`[CLS, base_register_1 .. base_register_3, register_1 .. register_4, patches]`" in card
    assert "(batch, 1 + 3 + 4 + patches, 32)" in card and "DINOv2 with registers" in card
