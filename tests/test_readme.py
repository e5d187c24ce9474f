"""README.md's printed samples match what their commands print (see `scripts/readme_samples.py`).

The commands run in-process, one after the other in one empty folder, as the README runs them (with
`FAST_OPTIONS` appended): the demo, `phreg push --dry_run`, `phreg eval`, `phreg visualize`. Every
number is masked before comparing (`shape`): training results vary slightly across platforms and thread counts,
and the script that regenerates the samples refreshes them; the text, the file lists and the table rows must match.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from phreg_hf import cli

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("matplotlib")
pytest.importorskip("skimage")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


readme_samples = _load("phreg_readme_samples", REPO / "scripts" / "readme_samples.py")
distill = _load("phreg_example_distill", REPO / "examples" / "distill.py")
# Appended to each sample's command to keep the suite fast: 2 steps, K = 2 teacher views, 8 measured images (the
# demo and `phreg eval` alike, so that they still measure the same images with the same views). Only numbers change
# (masked below); what is printed, and which files are written, does not.
FAST_OPTIONS = {
    "demo": ["--max_steps", "2", "--num_views", "2", "--num_eval_images", "8"],
    "eval": ["--num_views", "2", "--max_images", "8"],
    "visualize": ["--num_views", "2", "--max_images", "2"],
}


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """`(folder, {sample name: README text})` of every sample's command, run in one folder."""
    workdir = tmp_path_factory.mktemp("readme")
    previous = os.getcwd()
    os.chdir(workdir)
    texts = {}
    try:
        for sample in readme_samples.SAMPLES:
            with redirect_stdout(io.StringIO()) as stdout:
                fast = FAST_OPTIONS.get(sample.name, [])
                if sample.is_demo:
                    assert sample.argv[-1] == "examples/distill.py"  # no arguments: the demo
                    code = distill.main(fast)
                else:
                    code = cli.main([*sample.argv[1:], *fast])
            assert code == 0, (sample.name, stdout.getvalue())
            texts[sample.name] = sample.select(stdout.getvalue())
    finally:
        os.chdir(previous)
    return workdir, texts


def readme_blocks() -> dict[str, str]:
    return readme_samples.read_samples((REPO / "README.md").read_text(encoding="utf-8"))


def test_every_sample_has_its_block_in_the_readme():
    assert sorted(readme_blocks()) == sorted(sample.name for sample in readme_samples.SAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", [sample.name for sample in readme_samples.SAMPLES])
def test_readme_sample_matches_what_the_command_prints(printed, name):
    _, texts = printed
    readme, now = readme_samples.shape(readme_blocks()[name]), readme_samples.shape(texts[name])
    assert readme == now, (
        f"README.md's {name!r} sample drifted from what its command prints; run `python scripts/readme_samples.py`."
        f"\n--- README (numbers masked):\n{readme}\n--- printed now:\n{now}"
    )


def test_the_sample_check_ignores_runtimes_and_nothing_else():
    """`scripts/readme_samples.py --check` on another machine: "in 20.5 s" vs "in 53.8 s" is not a difference (a
    runtime depends on the machine and its load), any other character is."""
    readme = readme_blocks()
    demo = readme["demo"]
    assert readme_samples.RUNTIME.search(demo), "the demo sample prints its runtime"
    slower = readme_samples.RUNTIME.sub("in 53.8 s", demo)
    assert slower != demo
    assert readme_samples.changed_samples(readme, {"demo": slower}) == []
    other_number = demo.replace("400 steps", "401 steps")
    assert other_number != demo
    assert readme_samples.changed_samples(readme, {"demo": other_number, "eval": readme["eval"]}) == ["demo"]
    assert readme_samples.changed_samples({}, {"demo": demo}) == ["demo"]  # a missing block differs


def test_the_readme_picture_of_visualize_is_what_the_command_writes():
    """`scripts/readme_samples.py` copies the picture from the `phreg visualize` sample's output folder."""
    for target, source in readme_samples.FIGURES.items():
        assert f"]({target})" in (REPO / "README.md").read_text(encoding="utf-8")
        assert (REPO / target).is_file()
        sample = next(sample for sample in readme_samples.SAMPLES if sample.name == "visualize")
        assert source.split("/")[0] == sample.argv[sample.argv.index("--out") + 1]


def measure_values(table: str) -> list[list[str]]:
    """Per model (base, teacher, student), its values in the order of the measures, from either table layout."""
    lines = table.splitlines()
    if lines[0].startswith("measure"):  # the demo's layout: one row per measure, one column per model
        rows = [
            re.findall(r"\d+\.\d{4}|-(?=\s)", line) for line in lines[2:] if re.search(r"\d\.\d{4}", line)
        ]
        return [list(column) for column in zip(*rows, strict=True)]
    return [
        re.findall(r"\d+\.\d{4}|-(?=\s|$)", line)
        for line in lines
        if line.split()[0] in ("base", "teacher", "student")
    ]  # noqa: E501


def _tables(texts: dict[str, str]) -> tuple[str, str]:
    demo = texts["demo"].split("Artifact measures", 1)[1].split("\n", 1)[1]
    evaluated = texts["eval"].split("\n", 1)[1]
    return demo, evaluated


def test_the_demo_summary_and_phreg_eval_print_the_same_measures(printed):
    """Same 40 held-out tiles, same teacher views: one table, printed twice (and so in the README)."""
    _, texts = printed
    for source, num_images in ((texts, "8"), (readme_blocks(), "40")):
        demo, evaluated = _tables(source)
        assert measure_values(demo) == measure_values(evaluated)
        counts = [re.search(r"\((\d+) images at (\d+) px", table).groups() for table in (demo, evaluated)]
        assert counts[0] == counts[1] == (num_images, "112"), counts


def test_previews_are_named_after_their_source_images(printed):
    workdir, texts = printed
    heldout = sorted(p.stem for p in (workdir / "phreg-demo" / "demo_images" / "heldout").iterdir())
    previews = sorted(p.stem for p in (workdir / "phreg-demo" / "previews").glob("*.png"))
    assert previews == heldout[:4] and all("_tile" in name for name in previews)
    assert f"previews/{previews[0]}.png" in texts["push-dry-run"]
    assert "demo_base/" in texts["push-dry-run"].split("Not uploaded:")[1]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gitignore_covers_what_the_readme_commands_create(printed):
    workdir, _ = printed
    created = sorted(p.name + ("/" if p.is_dir() else "") for p in workdir.iterdir())
    assert created == sorted(readme_samples.CREATED_PATHS)  # the list checked below is complete
    for path in readme_samples.CREATED_PATHS:
        probe = path + "x" if path.endswith("/") else path  # a file inside each folder
        result = subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO, check=False)
        assert result.returncode == 0, f"{path} is not in .gitignore"
