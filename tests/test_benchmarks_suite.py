"""`benchmarks/gpu_suite.sh`: its smoke mode (tiny sizes, CPU) prints every table and writes the log folder; an
existing log folder is refused untouched; without a GPU the full mode refuses to start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"
STEPS = ("trainer", "inference", "segmentation", "input_pipeline")

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils' timeout",
)


def run_suite(log_dir: Path, smoke: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("PHREG_GPU_SUITE_SMOKE", None)
    if smoke:
        env["PHREG_GPU_SUITE_SMOKE"] = "1"
    return subprocess.run(
        ["bash", str(SUITE), str(log_dir)], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.slow  # ~30 s on 2 busy CPU cores: five Python processes, each importing torch and transformers
def test_smoke_run_prints_every_table_and_writes_the_log_folder(tmp_path):
    log_dir = tmp_path / "runs" / "smoke"  # the parent is created too
    result = run_suite(log_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for row in (
        "(a) reference loop (teacher every step, per-view loops)",
        "(b) DistillTrainer, no cache",
        "(c) DistillTrainer, warm teacher cache",
        "(d) student forward+backward alone",
        "| res | batch | attn | tokens base/student |",
        "| student (16 registers) |",
        "| loader, 0 workers (baseline)",
        "== trainer_compile: skipped",
        "== summary",
    ):
        assert row in out, row
    assert "bf16 autocast" in out
    for step in STEPS:
        assert (log_dir / f"{step}.out").read_text().strip(), step
        assert (log_dir / f"{step}.err").is_file()
    summary = (log_dir / "summary.md").read_text()
    assert all(f"| {step} | ok |" in summary for step in STEPS), summary
    assert "mode: smoke" in (log_dir / "environment.txt").read_text()
    assert "(d) student forward+backward alone" in (log_dir / "trainer.out").read_text()


def test_an_existing_log_folder_is_refused_and_left_untouched(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "summary.md").write_text("an earlier run\n")
    result = run_suite(log_dir, timeout=60)
    assert result.returncode == 2
    assert f"{log_dir} already exists" in result.stderr and "never overwritten" in result.stderr
    assert [p.name for p in log_dir.iterdir()] == ["summary.md"]
    assert (log_dir / "summary.md").read_text() == "an earlier run\n"
    no_argument = subprocess.run(["bash", str(SUITE)], capture_output=True, text=True, timeout=60)
    assert no_argument.returncode == 2 and "usage: benchmarks/gpu_suite.sh LOG_DIR" in no_argument.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_full_suite_refuses_to_start_without_a_gpu(tmp_path):
    result = run_suite(tmp_path / "logs", smoke=False, timeout=120)
    assert result.returncode == 2
    assert "no CUDA GPU here" in result.stderr and "PHREG_GPU_SUITE_SMOKE=1" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_the_suite_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SUITE)], capture_output=True, timeout=30).returncode == 0
    assert os.access(SUITE, os.X_OK), "benchmarks/gpu_suite.sh should be executable"
