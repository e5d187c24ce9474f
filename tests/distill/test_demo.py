"""The offline demo's command line (`examples/distill.py` without --teacher) and the launch checks.

Its settings stay the defaults whatever else is passed, each stays overridable, and the banner says so; an
`accelerate launch --num_processes N` that started fewer processes is named, with the way to get N.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phreg_hf.distill.arguments import DistillArguments, parse_distill_arguments
from phreg_hf.distill.demo import DEMO_DEFAULTS, DEMO_OUTPUT_DIR, demo_banner
from phreg_hf.launch import process_count_warning, requested_processes

REPO = Path(__file__).resolve().parents[2]


def test_no_arguments_is_the_demo_with_its_settings():
    args = parse_distill_arguments([])
    assert args.is_demo and args.output_dir is None
    for name, value in DEMO_DEFAULTS.items():
        assert getattr(args, name) == value, name
    assert args.teacher_cache == str(Path(DEMO_OUTPUT_DIR) / "teacher_cache")


def test_demo_settings_survive_other_arguments_and_each_can_be_overridden(tmp_path):
    args = parse_distill_arguments(["--output_dir", str(tmp_path / "x"), "--num_views", "4"])
    for name, value in DEMO_DEFAULTS.items():
        assert getattr(args, name) == value, name  # not the reference 1e-4 / 10 epochs
    assert args.num_views == 4
    assert args.teacher_cache == str(tmp_path / "x" / "teacher_cache")  # inside the chosen output folder

    args = parse_distill_arguments(
        ["--output_dir", "y", "--learning_rate", "1e-3", "--max_steps", "7", "--teacher_cache", "c"]
    )
    assert (args.learning_rate, args.max_steps, args.teacher_cache) == (1e-3, 7, "c")
    assert args.final_learning_rate == DEMO_DEFAULTS["final_learning_rate"]
    banner = demo_banner(args)
    assert "--learning_rate 0.001 (demo default 0.003)" in banner
    assert "--max_steps 7 (demo default 400)" in banner
    assert "--final_learning_rate 0.0003," in banner  # kept, so not marked
    assert "SYNTHETIC" in banner and "--teacher facebook/dinov2-base" in banner


def test_with_a_teacher_every_default_is_the_reference_one(tmp_path):
    args = parse_distill_arguments(
        ["--teacher", "facebook/dinov2-base", "--train_dir", str(tmp_path), "--output_dir", "o"]
    )
    reference = DistillArguments(teacher="t", train_dir=str(tmp_path), output_dir="o")
    for name in [*DEMO_DEFAULTS, "teacher_cache"]:
        assert getattr(args, name) == getattr(reference, name), name
    assert args.teacher_cache is None
    # Batch and learning rates depend on the model (CLIP dense runs have their own); the trainer fills them.
    args.resolve_defaults(clip_dense=False)
    assert (args.per_device_train_batch_size, args.learning_rate, args.final_learning_rate) == (8, 1e-4, 5e-6)
    args.learning_rate = args.final_learning_rate = args.per_device_train_batch_size = None
    args.resolve_defaults(clip_dense=True)
    assert (args.per_device_train_batch_size, args.learning_rate, args.final_learning_rate) == (
        16,
        3e-4,
        1e-5,
    )


@pytest.mark.parametrize(
    "launcher, requested",
    [
        (["/usr/bin/python3", "/usr/local/bin/accelerate", "launch", "--num_processes", "2", "d.py"], 2),
        (["python", "-m", "accelerate.commands.launch", "--num-processes=3", "d.py", "--x"], 3),
        (["accelerate", "launch", "d.py", "--num_processes", "2"], None),  # the script's own option
        (["torchrun", "--nproc_per_node", "2", "d.py"], None),
        (["bash"], None),
        # The module form: `-m` ends the launcher's options; what follows is the module and its own options.
        (["accelerate", "launch", "--num_processes", "2", "-m", "phreg_hf.distill"], 2),
        (["accelerate", "launch", "-m", "phreg_hf.distill", "--num_processes", "2"], None),
        (["accelerate", "launch", "--module", "phreg_hf.distill", "--num_processes=2"], None),
        (["accelerate", "launch", "/usr/local/bin/phreg", "distill", "--num_processes", "2"], None),
    ],
)
def test_requested_processes_are_read_from_the_launcher(launcher, requested):
    assert requested_processes(launcher) == requested


def test_fewer_processes_than_requested_are_named_with_the_fix():
    launcher = ["accelerate", "launch", "--num_processes", "2", "examples/distill.py"]
    message = process_count_warning(1, launcher)
    assert "--num_processes 2 but only 1 process(es) run" in message
    assert (
        "accelerate launch --multi_gpu --num_processes 2" in message
        and "torchrun --nproc_per_node 2" in message
    )
    assert process_count_warning(2, launcher) is None
    assert process_count_warning(1, ["python", "examples/distill.py"]) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", [[str(REPO / "examples" / "distill.py")], ["-m", "phreg_hf.distill"]], ids=["script", "module"]
)
def test_accelerate_launch_with_the_shipped_config_is_quiet_and_names_a_lost_process(script, tmp_path):
    """Through the real `accelerate launch`, of the example script and of the installed module alike: the shipped
    config silences its notices about unset options, and `--num_processes 2` (one process on a CPU machine) is
    named. `--help` stops before any model is built."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "examples" / "accelerate_config.yaml"),
        "--num_processes", "2", *script, "--help",
    ]  # fmt: skip
    # Not in the repository: `-m phreg_hf.distill` must come from the installed (here: PYTHONPATH) package.
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "were not passed to `accelerate launch`" not in result.stderr
    assert "asked for --num_processes 2 but only 1 process(es) run" in result.stderr
    assert "--teacher TEACHER" in result.stdout


def test_examples_distill_is_a_thin_entry_point_of_the_package(monkeypatch):
    """`examples/distill.py`, `phreg distill` and `python -m phreg_hf.distill` run one function."""
    import importlib.util

    from phreg_hf.distill import cli as distill_cli

    spec = importlib.util.spec_from_file_location(
        "phreg_example_distill_thin", REPO / "examples" / "distill.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    calls = []
    monkeypatch.setattr(example, "distill_main", lambda argv, prog: calls.append((argv, prog)) or 0)
    assert example.main(["--max_steps", "1"]) == 0 and calls == [(["--max_steps", "1"], None)]
    assert spec.loader.get_source(spec.name).count("from phreg_hf.distill.cli import distill_main") == 1
    assert distill_cli.distill_main.__module__ == "phreg_hf.distill.cli"
    assert (REPO / "phreg_hf" / "distill" / "__main__.py").read_text().count(
        "distill_main(prog=MODULE_PROG)"
    ) == 1


def test_the_demo_without_scikit_image_says_what_to_install_in_one_line(monkeypatch, tmp_path, capsys):
    """scikit-image missing (its import fails): one `error:` line naming the [demo] extra, before any model is
    built, and no traceback. `--train_dir` needs no scikit-image."""
    from phreg_hf import cli, data

    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` now raises ImportError
    with pytest.raises(data.SampleImagesUnavailable) as caught:
        data.sample_image_paths()
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one traceback, not two
    assert cli.main(["distill", "--output_dir", str(tmp_path / "demo")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phreg distill: error: "), captured.err
    assert 'pip install "phreg-hf[demo]"' in lines[0] and "--train_dir" in lines[0]
    assert "Traceback" not in captured.err and not (tmp_path / "demo").exists()
    args = parse_distill_arguments(["--train_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    from phreg_hf.distill.cli import _check_demo_images

    _check_demo_images(args)  # the demo's model on your own images: nothing to install
