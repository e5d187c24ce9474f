#!/usr/bin/env python
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
"""Regenerate the printed samples in README.md by running the commands that print them.

    python scripts/readme_samples.py           # run the README's commands in a fresh folder, rewrite README.md
    python scripts/readme_samples.py --check   # run them, rewrite nothing, exit 1 if a sample differs

Each sample in README.md is the fenced block right after a `<!-- sample: NAME -->` line; `SAMPLES` says which
command prints it. The commands run as a new user runs them, one after the other in one empty folder (the demo
first: the others read its output folder), from this checkout (PYTHONPATH). It takes a few minutes on 2 shared
CPU cores (5 min 46 s measured at a load average of 13). A rewrite also copies the README's picture of `phreg visualize` (`FIGURES`) from what the command wrote.

`--check` compares with the runtimes masked (`mask_runtimes`: "in 20.5 s" reads "in # s"): a runtime is a fact of
the machine and its load, not of the code, and differs on every run; every other character must match.

`tests/test_readme.py` runs the same commands (shortened, in-process) on every test run and compares them to
README.md with every number masked: the text, the file lists, the table rows must match; the numbers come from this
script, because training results vary a little across platforms and thread counts, and a 400-step demo is too slow
for the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(r"^<!-- sample: (?P<name>[\w-]+) -->\n```[^\n]*\n(?P<body>.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Sample:
    """A README sample: the command a user types (`argv`, shown with `$ ` when `show_command`) and which part of
    its standard output the README shows (from the first line starting with `keep_from`, else all of it)."""

    name: str
    argv: tuple[str, ...]
    show_command: bool = False
    keep_from: str | None = None

    @property
    def is_demo(self) -> bool:
        return self.argv[:2] == ("accelerate", "launch")

    def command_line(self) -> str:
        return " ".join(self.argv)

    def select(self, stdout: str) -> str:
        """The README text of this sample, from the command's standard output."""
        lines = stdout.strip("\n").splitlines()
        if self.keep_from is not None:
            starts = [i for i, line in enumerate(lines) if line.startswith(self.keep_from)]
            if not starts:
                raise ValueError(f"sample {self.name}: no line starts with {self.keep_from!r} in:\n{stdout}")
            lines = lines[starts[-1] :]
        text = "\n".join(line.rstrip() for line in lines)
        return f"$ {self.command_line()}\n{text}" if self.show_command else text


DEMO_OUTPUT = "phreg-demo"
# `phreg eval` and `phreg visualize` compare the demo's base and student on its held-out tiles.
DEMO_COMPARISON = (
    "--base",
    f"{DEMO_OUTPUT}/demo_base",
    "--student",
    DEMO_OUTPUT,
    "--images",
    f"{DEMO_OUTPUT}/demo_images/heldout",
)
SAMPLES = (
    Sample(
        "demo",
        ("accelerate", "launch", "--config_file", "examples/accelerate_config.yaml", "examples/distill.py"),
        keep_from="Distilled ",
    ),
    Sample("push-dry-run", ("phreg", "push", DEMO_OUTPUT, "alice/dinov2-demo-phreg", "--dry_run")),
    Sample(
        "eval",
        ("phreg", "eval", *DEMO_COMPARISON, "--out", "report.json"),
        show_command=True,
    ),  # fmt: skip
    Sample(
        "visualize",
        ("phreg", "visualize", *DEMO_COMPARISON, "--out", "pictures"),
        show_command=True,
    ),  # fmt: skip
)
# Files and folders the samples' commands create in the folder they run in (all ignored by .gitignore).
CREATED_PATHS = (f"{DEMO_OUTPUT}/", "report.json", "pictures/")
# README pictures: repository path -> the file a sample's command wrote (relative to the folder they ran in).
# camera_tile00 is the first held-out tile, and all three planted artifacts show in its base norm map.
FIGURES = {"docs/images/visualize_example.png": "pictures/camera_tile00.png"}
# A runtime as the commands print it ("... -> phreg-demo in 20.5 s (400 steps ..."): masked by `--check`.
RUNTIME = re.compile(r"\bin \d+(?:\.\d+)? s\b")


def read_samples(readme_text: str) -> dict[str, str]:
    """`{name: block text}` of every `<!-- sample: NAME -->` block of the README."""
    return {match["name"]: match["body"].rstrip("\n") for match in MARKER.finditer(readme_text)}


def replace_samples(readme_text: str, texts: dict[str, str]) -> str:
    """The README with the blocks of `texts` replaced (others unchanged)."""

    def substitute(match: re.Match) -> str:
        name = match["name"]
        if name not in texts:
            return match[0]
        fence = match[0].split("\n", 2)[1]
        return f"<!-- sample: {name} -->\n{fence}\n{texts[name]}\n```"

    return MARKER.sub(substitute, readme_text)


def mask_runtimes(text: str) -> str:
    """The text with every runtime ("in 20.5 s") read as "in # s"."""
    return RUNTIME.sub("in # s", text)


def changed_samples(current: dict[str, str], texts: dict[str, str]) -> list[str]:
    """Names of the samples in `texts` whose README block `current` differs from it, runtimes masked."""
    return [
        name
        for name, text in texts.items()
        if name not in current or mask_runtimes(current[name]) != mask_runtimes(text)
    ]


def shape(text: str) -> str:
    """The text with every number masked and runs of spaces collapsed: what must match whatever the platform."""
    return "\n".join(" ".join(re.sub(r"\d+(\.\d+)?", "#", line).split()) for line in text.splitlines())


def _subprocess_argv(sample: Sample) -> list[str]:
    """The sample's command for this checkout: `accelerate launch` / `phreg` through this Python, and the
    README's repository-relative paths (examples/...) made absolute, since the commands run in another folder."""
    words = [str(REPO / word) if word.startswith("examples/") else word for word in sample.argv]
    if sample.is_demo:
        return [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
    return [sys.executable, "-m", "phreg_hf.cli", *words[1:]]


def copy_figures(workdir: Path) -> list[str]:
    """Copy each of `FIGURES` from what the commands wrote in `workdir` into the repository; returns the paths."""
    copied = []
    for target, source in FIGURES.items():
        if not (workdir / source).is_file():
            raise FileNotFoundError(f"{source} was not written by the README's commands in {workdir}.")
        shutil.copyfile(workdir / source, REPO / target)
        copied.append(target)
    return copied


def run_samples(workdir: Path) -> dict[str, str]:
    """Run every sample's command in `workdir`, in order; returns `{name: README text}`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    texts = {}
    for sample in SAMPLES:
        print(f"$ {sample.command_line()}", file=sys.stderr, flush=True)
        result = subprocess.run(
            _subprocess_argv(sample), cwd=workdir, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{sample.command_line()} failed:\n{result.stderr[-4000:]}")
        texts[sample.name] = sample.select(result.stdout)
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Only report samples that differ (exit 1).")
    parser.add_argument("--workdir", help="Run in this (empty) folder instead of a temporary one.")
    args = parser.parse_args(argv)
    readme_text = README.read_text(encoding="utf-8")
    missing = [sample.name for sample in SAMPLES if sample.name not in read_samples(readme_text)]
    if missing:
        print(f"README.md has no `<!-- sample: NAME -->` block for {missing}.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="phreg-readme-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        texts = run_samples(workdir)
        figures = [] if args.check else copy_figures(workdir)
    current = read_samples(readme_text)
    changed = changed_samples(current, texts)
    if args.check:
        for name in changed:
            print(f"--- README sample {name!r} differs; now:\n{texts[name]}\n", file=sys.stderr)
        print(f"{len(changed)} of {len(texts)} README samples differ (runtimes not compared).")
        return 1 if changed else 0
    README.write_text(replace_samples(readme_text, texts), encoding="utf-8")
    print(f"Rewrote {len(changed)} of {len(texts)} README samples: {', '.join(changed) or 'none changed'}.")
    print(f"Copied {', '.join(figures)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
