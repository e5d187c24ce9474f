"""Training runs shared by the trainer, cache, fault, evaluation and picture tests: a tiny planted-artifact base and
the arguments of a short run (4 registers, 4 views, 4 steps)."""

from __future__ import annotations

from pathlib import Path

import torch

from phreg_hf.distill.trainer import DistillArguments, DistillTrainer
from phreg_hf.synthetic import build_planted_artifact_model

TINY_PLANTED = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=8)


def tiny_planted(model_type: str = "dinov2", seed: int = 0):
    return build_planted_artifact_model(model_type, seed=seed, **TINY_PLANTED)


def make_args(output_dir: Path | None, train_dir: Path | None, **overrides) -> DistillArguments:
    settings = dict(
        train_dir=str(train_dir) if train_dir is not None else None,
        output_dir=str(output_dir) if output_dir is not None else None,
        num_register_tokens=4,
        num_views=4,
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=3e-3,
        final_learning_rate=3e-4,
        checkpointing_steps=0,
        report_to="none",
        num_eval_images=8,
        num_preview_images=0,
        logging_steps=1,
    )
    settings.update(overrides)
    return DistillArguments(**settings)


def run(output_dir: Path, train_dir: Path, base=None, **overrides) -> tuple[DistillTrainer, dict]:
    trainer = DistillTrainer(make_args(output_dir, train_dir, **overrides), base_model=base or tiny_planted())
    return trainer, trainer.train()


def student_state(trainer: DistillTrainer) -> dict[str, torch.Tensor]:
    student = trainer.accelerator.unwrap_model(trainer.student)
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Arguments


class Crash(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# The whole tool chain on a saved planted-artifact base (the SigLIP and DINOv3 students)
REPO = Path(__file__).resolve().parents[1]


def run_example_distill(argv: list) -> int:
    """`examples/distill.py`'s `main(argv)`, in this process (the script is no module of the package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("phreg_example_distill", REPO / "examples" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def distill_planted_and_run_the_tools(root: Path, model_type: str, train: Path, heldout: Path) -> dict:
    """Save a tiny planted `model_type` base, distill it for 2 steps through `examples/distill.py --teacher FOLDER`
    (teacher cache on), then run `phreg eval`, `phreg visualize`, `phreg probe` and `phreg push --dry_run` on the
    result; returns the folders, the run's settings and the rendered card."""
    import json

    from phreg_hf.cli import main as phreg_main
    from phreg_hf.constants import TRAINING_SETTINGS_FILE
    from phreg_hf.demos.probe_demo import write_shapes_dataset
    from phreg_hf.synthetic import save_planted_artifact_model

    def phreg(*argv) -> int:
        return phreg_main([str(a) for a in argv])

    base, out = root / "base", root / "student"
    save_planted_artifact_model(base, model_type, **TINY_PLANTED)
    argv = ["--teacher", base, "--train_dir", train, "--eval_images", heldout, "--output_dir", out]
    argv += [
        "--num_register_tokens",
        4,
        "--num_views",
        2,
        "--per_device_train_batch_size",
        4,
        "--max_steps",
        2,
    ]
    argv += ["--learning_rate", 3e-3, "--final_learning_rate", 3e-4, "--checkpointing_steps", 0]
    argv += ["--teacher_cache", root / "cache", "--num_eval_images", 4, "--num_preview_images", 0]
    argv += ["--report_to", "none"]
    assert run_example_distill(argv) == 0
    compare = ["--base", base, "--student", out]
    assert phreg("eval", *compare, "--images", heldout, "--num_views", 2, "--max_images", 4) == 0
    assert phreg("visualize", *compare, "--images", heldout, "--out", root / "viz", "--max_images", 1) == 0
    images, masks = write_shapes_dataset(root / "shapes", num_images=4, size=TINY_PLANTED["image_size"])
    probe = ["--task", "segmentation", *compare, "--images", images, "--masks", masks, "--crop_size", 48]
    assert phreg("probe", *probe, "--max_steps", 2, "--out", root / "probe.json") == 0
    assert phreg("push", out, "alice/student-phreg", "--dry_run", "--license", "apache-2.0") == 0
    return {
        "base": base,
        "student": out,
        "settings": json.loads((out / TRAINING_SETTINGS_FILE).read_text()),
        "probe": json.loads((root / "probe.json").read_text()),
        "pictures": sorted((root / "viz").glob("*.png")),
        "card": (out / "README.md").read_text(),
    }
