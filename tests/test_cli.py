"""The `phreg` command itself: `--version`, an aligned subcommand list that includes the main job (`distill`),
quiet exits into closed pipes, and boolean options shown as switches while still parsing `--X true/false`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hub_helpers import save_run_folder

from phreg_hf import cli
from phreg_hf.arg_parsing import make_parser
from phreg_hf.constants import VERSION

REPO = Path(__file__).resolve().parents[1]


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"phreg-hf {VERSION}"


def test_help_lists_every_subcommand_in_one_aligned_column(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  ") and line.split()[0] in cli.SUBCOMMANDS]
    assert [row.split()[0] for row in rows] == list(cli.SUBCOMMANDS)
    assert "distill" in cli.SUBCOMMANDS and "--version" in out
    # Where each help text starts: one column, whatever the length of the subcommand's name.
    starts = {re.match(r"  \S+\s+", row).end() for row in rows}
    assert len(starts) == 1, rows


def test_phreg_distill_is_the_main_job(capsys):
    assert cli.main(["distill", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: phreg distill") and "--teacher TEACHER" in out


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def _run_into_a_closed_pipe(argv: list[str]) -> tuple[int, str]:
    """Run `phreg ARGV` with its stdout a pipe whose reader is already gone; (exit code, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "phreg_hf.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    process.stdout.close()  # the only reader: every write of the command now fails with EPIPE
    stderr = process.stderr.read().decode()
    return process.wait(timeout=300), stderr


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`phreg push ... --dry_run | head -2`, the reader gone before the command writes: no traceback, exit code
    141 (a shell's code for SIGPIPE). One subprocess: importing phreg_hf costs seconds of CPU."""
    folder = tmp_path / "run"
    save_run_folder(folder, training_state=False)
    code, stderr = _run_into_a_closed_pipe(["push", str(folder), "alice/x", "--dry_run", "--license", "mit"])
    assert code == cli.BROKEN_PIPE_EXIT_CODE, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert (folder / "README.md").is_file()  # the work itself was done


@dataclass
class SwitchArguments:
    cache: bool = field(default=False, metadata={"help": "Use the cache."})
    train_registers: bool = field(default=True, metadata={"help": "Train the registers."})
    steps: int = field(default=3, metadata={"help": "Steps."})


def test_boolean_options_show_as_switches_and_still_take_values():
    parser = make_parser(SwitchArguments, prog="x")
    text = parser.format_help() + parser.format_usage()
    assert "[CACHE]" not in text and "[TRAIN_REGISTERS]" not in text
    assert "[--cache]" in text and "[--train_registers]" in text and "[--no_train_registers]" in text
    assert "--steps STEPS" in text  # options with values keep their placeholder
    for argv, expected in [
        ([], (False, True)),
        (["--cache", "--no_train_registers"], (True, False)),
        (["--cache", "true", "--train_registers", "false"], (True, False)),  # HfArgumentParser's value form
        (["--cache", "no", "--train-registers", "yes"], (False, True)),
    ]:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        assert (args.cache, args.train_registers) == expected, argv
    with pytest.raises(SystemExit):  # still a usage error, not a silent True
        parser.parse_args_into_dataclasses(args=["--cache", "maybe"])


def test_phreg_push_help_shows_its_switches(capsys):
    assert cli.main(["push", "--help"]) == 0
    out = capsys.readouterr().out
    assert "[--dry_run]" in out and "[DRY_RUN]" not in out
