"""`--torch_compile` (phreg_hf/distill/compile.py): refused without CUDA; with it (faked here: `torch.compile` is
replaced by a recorder whose module wrapper has `_orig_mod`, as torch's `OptimizedModule`), the student's and the
teacher's forward passes go through the compiled code while checkpoints and the saved student keep plain keys."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from trainer_helpers import make_args, run, student_state

from phreg_hf.distill import compile as compile_module
from phreg_hf.distill.arguments import parse_distill_arguments
from phreg_hf.distill.checkpointing import list_checkpoints
from phreg_hf.distill.cli import distill_main


class FakeOptimizedModule(nn.Module):
    """What `torch.compile(module)` returns, as far as names go: the module under `_orig_mod`, so its own
    `state_dict()` has `_orig_mod.`-prefixed keys (a leak into a saved file would show)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self._orig_mod = module
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self._orig_mod(*args, **kwargs)


@pytest.fixture
def fake_compile(monkeypatch):
    """Pretend CUDA is in use and record every `torch.compile` call; returns the list of (target, compiled)."""
    calls = []

    def fake(target, **kwargs):
        if isinstance(target, nn.Module):
            compiled = FakeOptimizedModule(target)
        else:

            def compiled(*args, **kw):
                compiled.calls += 1
                return target(*args, **kw)

            compiled.calls = 0
        calls.append((target, compiled))
        return compiled

    monkeypatch.setattr(torch, "compile", fake)
    monkeypatch.setattr(compile_module, "cuda_in_use", lambda: True)
    return calls


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_torch_compile_is_refused_without_cuda(tmp_path, sample_images, capsys):
    with pytest.raises(ValueError, match=r"--torch_compile needs a CUDA GPU.*Drop --torch_compile"):
        make_args(tmp_path / "out", sample_images[0], torch_compile=True)
    with pytest.raises(ValueError, match="--torch_compile needs a CUDA GPU"):
        parse_distill_arguments(["--torch_compile", "--output_dir", str(tmp_path / "demo")])
    # The command line stops before any model is loaded, with the message and exit code 2.
    argv = ["--torch_compile", "--train_dir", str(sample_images[0]), "--output_dir", str(tmp_path / "cli")]
    assert distill_main(["--teacher", "facebook/dinov2-small", *argv], prog="phreg distill") == 2
    assert "phreg distill: error: --torch_compile needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    assert make_args(tmp_path / "out", sample_images[0]).torch_compile is False  # off by default


def _weight_keys(path) -> set[str]:
    return set(load_file(str(path)))


def test_compiled_student_and_teacher_train_and_save_plain_resumable_weights(
    tmp_path, sample_images, fake_compile
):
    settings = dict(max_steps=4, checkpointing_steps=2)
    trainer, result = run(tmp_path / "a", sample_images[0], torch_compile=True, **settings)

    # One compiled student (the module Accelerate prepared) and the teacher's get_patch_tokens; both ran.
    (student, compiled_student), (tokens_fn, compiled_tokens) = sorted(
        fake_compile, key=lambda call: not isinstance(call[0], nn.Module)
    )
    assert student is trainer.student and trainer.student_forward is compiled_student
    assert compiled_student.calls >= settings["max_steps"]
    assert tokens_fn.__self__ is trainer.teacher_model
    assert trainer.teacher_model.get_patch_tokens is compiled_tokens and compiled_tokens.calls > 0
    assert not isinstance(trainer.student, FakeOptimizedModule)
    assert result["settings"]["torch_compile"] is True

    # Checkpoints (save_state) and the saved student hold the student's own names, no `_orig_mod.`.
    plain = set(trainer.accelerator.unwrap_model(trainer.student).state_dict())
    checkpoints = list_checkpoints(tmp_path / "a")
    assert [c.name for c in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    for folder in checkpoints:
        assert _weight_keys(folder / "model.safetensors") == plain
    saved = _weight_keys(tmp_path / "a" / "model.safetensors")
    assert saved and not any("_orig_mod" in key for key in saved)
    expected = student_state(trainer)

    # A checkpoint of the compiled run resumes without --torch_compile (compile is no part of the fingerprint)
    # and ends with the same weights.
    fake_compile.clear()
    resumed, _ = run(tmp_path / "a", sample_images[0], resume_from_checkpoint=str(checkpoints[0]), **settings)
    assert not fake_compile and resumed.student_forward is resumed.student
    actual = student_state(resumed)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_cuda_machine_told_to_train_on_the_cpu_refuses_it_too(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    compile_module.check_torch_compile(True)  # CUDA in use: accepted
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # `accelerate launch --cpu`
    with pytest.raises(ValueError, match="--torch_compile needs a CUDA GPU"):
        compile_module.check_torch_compile(True)
    compile_module.check_torch_compile(False)  # off: nothing to check
