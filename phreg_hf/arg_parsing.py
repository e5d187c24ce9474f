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

Three fixes over the stock parser's `--help`:

- a help text that already states its default ("Default: 518 for DINOv2 ...", "(default: cuda if available)") does
  not get argparse's "(default: None)" appended a second time;
- the `--no_X` switch that `HfArgumentParser` adds for a boolean option X that defaults to True gets its own help
  ("Turn off --X ..."); the stock parser repeats X's help, so `--no_train_registers` read "Train the register tokens.";
- a boolean option is shown as the switch it is, `--X` (and `--no_X`), not `--X [X]`. The parser still takes
  what `HfArgumentParser` takes, `--X`, `--X true` and `--X false` (scripts written for transformers' examples
  pass values), only the help and usage lines change.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool


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


def is_switch(action: argparse.Action) -> bool:
    """A boolean option as `HfArgumentParser` builds it: `--X` alone means True, `--X true/false` also parse."""
    return (
        bool(action.option_strings)
        and action.nargs == "?"
        and action.const is True
        and action.type is string_to_bool
    )


@contextlib.contextmanager
def _shown_as_switches(actions: Sequence[argparse.Action]) -> Iterator[None]:
    """While help is formatted, boolean options take no value, so argparse prints `--X` instead of `--X [X]`."""
    switches = [action for action in actions if is_switch(action)]
    for action in switches:
        action.nargs = 0
    try:
        yield
    finally:
        for action in switches:
            action.nargs = "?"


class PhregArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose usage and help show boolean options as switches (`--X`, `--no_X`)."""

    def format_usage(self) -> str:
        with _shown_as_switches(self._actions):
            return super().format_usage()

    def format_help(self) -> str:
        with _shown_as_switches(self._actions):
            return super().format_help()


def make_parser(dataclass_types: Any, **kwargs) -> HfArgumentParser:
    """`HfArgumentParser(dataclass_types, **kwargs)` with `DefaultOnceHelpFormatter`, distinct `--no_X` help and
    boolean options shown as switches (`PhregArgumentParser`)."""
    kwargs.setdefault("formatter_class", DefaultOnceHelpFormatter)
    parser = PhregArgumentParser(dataclass_types, **kwargs)
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
    except BrokenPipeError:  # an OSError, but the reader went away: `cli.main` ends quietly
        raise
    except bad_input as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2, None, None


__all__ = [
    "BAD_INPUT_ERRORS",
    "DefaultOnceHelpFormatter",
    "PhregArgumentParser",
    "is_switch",
    "make_parser",
    "negated_help",
    "parse_cli",
    "run_cli",
]
