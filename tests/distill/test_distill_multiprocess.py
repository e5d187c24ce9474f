"""Two CPU processes (`torchrun --nproc_per_node 2 -m phreg_hf.distill`): trains, syncs gradients, saves once,
shares one teacher cache.

The launched script runs the installed module form, `phreg_hf/distill/__main__.py` (what `-m phreg_hf.distill`
and `examples/distill.py` both run: `phreg_hf.distill.cli.distill_main`), wrapped (test-only) so that each rank
also dumps its final student weights, and rank 1 gets NaN teacher targets once: both ranks must then skip that step
together (the skip decision is shared) and still end with identical weights. The training folder holds an
unreadable file and the batch size is 1, so some micro-batch of some rank is empty: that rank must still
join the gradient sync.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig

from phreg_hf.constants import METRICS_FILE, TRAINING_SETTINGS_FILE
from phreg_hf.data import write_sample_images

LAUNCHED = textwrap.dedent(
    """
    import runpy
    import sys
    import torch
    from phreg_hf.distill import trainer as trainer_module

    dump_dir, inject_nan, argv = sys.argv[1], sys.argv[2] == "nan", sys.argv[3:]
    original_save, original_targets = trainer_module.DistillTrainer.save_outputs, trainer_module.DistillTrainer.targets_for_batch

    def save_outputs(self):
        result = original_save(self)
        state = self.accelerator.unwrap_model(self.student).state_dict()
        torch.save(state, f"{dump_dir}/rank{self.accelerator.process_index}.pt")
        return result

    # After the teacher cache (the demo's default), so that the NaN reaches one step only, not the cached target.
    def targets_for_batch(self, pixel_values, indices, batch=None):
        targets = original_targets(self, pixel_values, indices, batch)
        self.test_calls = getattr(self, "test_calls", 0) + 1
        if inject_nan and self.accelerator.process_index == 1 and self.test_calls == 2:
            targets = targets * float("nan")
        return targets

    trainer_module.DistillTrainer.save_outputs = save_outputs
    trainer_module.DistillTrainer.targets_for_batch = targets_for_batch
    sys.argv = [sys.argv[0], *argv]
    runpy.run_module("phreg_hf.distill", run_name="__main__", alter_sys=True)  # exits with its code
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_two_processes(tmp_path: Path, inject_nan: bool, *extra: str) -> tuple[Path, Path, str]:
    """torchrun two CPU processes of `-m phreg_hf.distill` on 6 photos + 1 unreadable file; (out, dumps, log)."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(write_sample_images(tmp_path / "all"))[:6]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((96, 96))
        image.save(images / f"{Path(path).stem}.png")
    (images / "broken.png").write_bytes(b"not an image")
    shutil.rmtree(tmp_path / "all")
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    dumps, out = tmp_path / "dumps", tmp_path / "out"
    dumps.mkdir()
    # torchrun: `accelerate launch --cpu --num_processes 2` starts a single process unless an MPI hostfile is
    # configured; torchrun (or `accelerate launch --multi_gpu`) starts two, which the trainer joins into a
    # gloo process group on a machine without GPUs.
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(script), str(dumps), "nan" if inject_nan else "-",
        "--train_dir", str(images), "--output_dir", str(out),
        "--num_register_tokens", "4", "--num_views", "4", "--per_device_train_batch_size", "1",
        "--max_steps", "6", "--checkpointing_steps", "3", "--learning_rate", "3e-3",
        "--final_learning_rate", "3e-4", "--report_to", "none", "--logging_steps", "2", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return out, dumps, log


def _assert_same_weights_on_both_ranks(out: Path, dumps: Path) -> None:
    rank0 = torch.load(dumps / "rank0.pt")
    rank1 = torch.load(dumps / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(saved[name], rank0[name]) for name in saved)


@pytest.mark.slow
def test_two_cpu_processes_train_sync_and_save_once(tmp_path):
    out, dumps, log = _launch_two_processes(tmp_path, inject_nan=True)

    # Saved once, by the main process only.
    assert log.count("Distilled synthetic planted-artifact dinov2") == 1, log[-4000:]
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        METRICS_FILE,
        TRAINING_SETTINGS_FILE,
    ):
        assert (out / name).exists(), name
    # The demo's synthetic base is saved beside the student, a stock model for `phreg eval --base`.
    assert AutoConfig.from_pretrained(out / "demo_base").model_type == "dinov2"
    assert (out / "demo_base" / "preprocessor_config.json").is_file()
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-3", "checkpoint-6"]
    assert sorted(p.name for p in (out / "checkpoint-6").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    assert not list(out.glob(".tmp*")) and not list(out.glob("*.tmp"))
    settings = json.loads((out / TRAINING_SETTINGS_FILE).read_text())
    assert settings["num_processes"] == 2 and settings["global_batch_size"] == 2
    assert (
        settings["global_steps"] == 6 and settings["skipped_steps"] == 1 and settings["optimizer_steps"] == 5
    )
    assert settings["skipped_images"] == 1  # the unreadable file, counted once however often it was met
    # One teacher cache (the demo's default) shared by both ranks: each writes its own shards and reads the
    # other's, so the teacher ran once per readable photo over the whole run.
    assert settings["teacher_images"] == 6
    cache = out / "teacher_cache"
    assert {p.name.split("-")[1] for p in cache.glob("targets-*.safetensors")} == {"rank0", "rank1"}

    # Gradients were synchronized: both ranks end with the same (trained) weights.
    _assert_same_weights_on_both_ranks(out, dumps)
