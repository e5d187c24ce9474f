# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""`HfArgumentParser` with help text that reads right, and the parse-run-report frame of every `phreg` subcommand.

Two fixes over the stock parser's `--help`:

- a help text that already states its default ("Default: 518 for DINOv2 ...", "(default: cuda if available)") does
  not get argparse's "(default: None)" appended a second time;
- the `--no_X` switch that `HfArgumentParser` adds for a boolean option X that defaults to True gets its own help
  ("Turn off --X ..."); the stock parser repeats X's help, so `--no_train_registers` read "Train the register tokens."
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from transformers import HfArgumentParser


class DefaultOnceHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`ArgumentDefaultsHelpFormatter` that leaves out "(default: ...)" when the help text already says "default" and
    for required options."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if "default" in help_text.lower() or action.required:  # a required option has no default to show
            return help_text
        return super()._get_help_string(action)


def negated_help(option: str, help_text: str | None) -> str:
    """Help of the `--no_X` switch of a boolean option `--X` that is on by default."""
    text = (help_text or "").strip().rstrip(".")
    text = text[:1].lower() + text[1:]
    return (
        f"Turn off --{option} (on by default: {text})." if text else f"Turn off --{option} (on by default)."
    )


def make_parser(dataclass_types: Any, **kwargs) -> HfArgumentParser:
    """`HfArgumentParser(dataclass_types, **kwargs)` with `DefaultOnceHelpFormatter` and distinct `--no_X` help."""
    kwargs.setdefault("formatter_class", DefaultOnceHelpFormatter)
    parser = HfArgumentParser(dataclass_types, **kwargs)
    positive_help = {
        action.dest: action.help
        for action in parser._actions
        if action.option_strings and not action.option_strings[0].startswith("--no_")
    }
    for action in parser._actions:
        # HfArgumentParser names the complement of a True-by-default boolean `--no_<field>` (dest <field>).
        if action.option_strings and action.option_strings[0] == f"--no_{action.dest}":
            action.help = negated_help(action.dest, positive_help.get(action.dest))
    return parser


# Errors that mean bad input (a missing folder, a bad value, an unreadable file): exit code 2, message on stderr.
BAD_INPUT_ERRORS = (FileNotFoundError, ValueError, OSError)


def parse_cli(dataclass_type, argv: Sequence[str], prog: str, description: str):
    """Parse `argv` into one options dataclass with `make_parser`; returns it, or an exit code for --help and
    usage errors (argparse has printed the message)."""
    parser = make_parser(dataclass_type, prog=prog, description=description)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return args


def run_cli(
    dataclass_type,
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    work: Callable[[Any], Any],
    bad_input: tuple[type[BaseException], ...] = BAD_INPUT_ERRORS,
) -> tuple[int | None, Any, Any]:
    """Parse `argv` (default: `sys.argv[1:]`) and run `work(args)`: the frame of every `phreg` subcommand.

    Returns `(None, args, result)` when the work is done, else `(exit code, None, None)`: the code argparse gave
    for --help / a usage error, or 2 for bad input (`bad_input` errors, printed as `prog: error: ...`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_cli(dataclass_type, argv, prog, description)
        if isinstance(args, int):
            return args, None, None
        return None, args, work(args)
    except bad_input as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2, None, None


__all__ = [
    "BAD_INPUT_ERRORS",
    "DefaultOnceHelpFormatter",
    "make_parser",
    "negated_help",
    "parse_cli",
    "run_cli",
]
