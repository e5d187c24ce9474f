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
"""`HfArgumentParser` with help text that reads right: what `examples/distill.py`, `phreg eval` and `phreg visualize`
parse their options with.

Two fixes over the stock parser's `--help`:

- a help text that already states its default ("Default: 518 for DINOv2 ...", "(default: cuda if available)") does
  not get argparse's "(default: None)" appended a second time;
- the `--no_X` switch that `HfArgumentParser` adds for a boolean option X that defaults to True gets its own help
  ("Turn off --X ..."); the stock parser repeats X's help, so `--no_train_registers` read "Train the register tokens."
"""

from __future__ import annotations

import argparse
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


__all__ = ["DefaultOnceHelpFormatter", "make_parser", "negated_help"]
