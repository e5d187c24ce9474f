"""What the project ships and cites: the LICENSE pyproject names (in the wheel too), the method document every
citation points at, and no path in the README or the code that the project does not have."""

from __future__ import annotations

import glob
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The project's own top-level folders: a path starting with one of them names a file of the project.
PROJECT_FOLDERS = ("phreg_hf", "examples", "benchmarks", "scripts", "docs", "tests", "model_cards", ".ci")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".json"}
# Saved by 0.1.0 and kept byte for byte (tests/models/test_checkpoints_from_0_1.py loads them as users' folders
# are): their docstrings are history, not citations the project makes now.
FROZEN = REPO / "tests" / "fixtures"


def project_text_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    for folder in PROJECT_FOLDERS:
        for path in sorted((REPO / folder).rglob("*")):
            if not path.is_file() or FROZEN in path.parents or "__pycache__" in path.parts:
                continue
            if path.suffix in TEXT_SUFFIXES or path.parent.name == ".ci":
                files.append(path)
    return files


def test_license_is_the_apache_2_text_pyproject_names():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # (tomllib is Python 3.11+)
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]', pyproject, re.M)
    assert re.search(r'^demo = \["scikit-image[^"]*"', pyproject, re.M)  # the offline demos' extra
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build")
def test_the_wheel_ships_the_license(tmp_path):
    """Built offline with the installed setuptools (no build isolation), from a copy of the sources."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates license-files (77)")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "phreg_hf", source / "phreg_hf", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source)]
    result = subprocess.run(
        command + ["-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        licenses = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        assert licenses, names
        assert archive.read(licenses[0]) == (REPO / "LICENSE").read_bytes()
        assert "phreg_hf/distill/__main__.py" in names  # `python -m phreg_hf.distill` works from the wheel
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "Provides-Extra: demo" in metadata


def test_nothing_cites_a_file_outside_the_project():
    """The method is `docs/method.md`; the team's notes outside the repository are not the users'."""
    outside = re.compile(
        "|".join(re.escape(name) for name in ("METHOD" + ".md", "../" + "shared", "/work/" + "shared"))
    )
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in project_text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, "\n".join(found)
    assert (REPO / "docs" / "method.md").is_file()


def _missing_paths(text: str, folders: tuple[str, ...]) -> list[str]:
    alternatives = "|".join(re.escape(folder) for folder in folders)
    pattern = re.compile(rf"(?<![\w./$-])((?:{alternatives})/[\w./*-]*[\w*])")
    return sorted({path for path in pattern.findall(text) if not glob.glob(str(REPO / path))})


def test_every_project_path_the_readme_and_the_code_name_exists():
    """A path into the project's own folders (`docs/method.md`, `phreg_hf/distill/demo.py`, a picture) must be
    there. Paths of what commands write (`phreg-demo/...`, `OUTPUT_DIR/...`) start elsewhere and are not checked."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`([^`\s]+)`", readme)) | set(re.findall(r"\]\(([^)\s]+)\)", readme))
    missing = {
        "README.md": sorted(
            p for p in cited if p.split("/")[0] in PROJECT_FOLDERS and not glob.glob(str(REPO / p))
        )
    }
    # Elsewhere (docstrings, comments, help texts): paths into the package and the scripts. Not tests/: the
    # transformers test helpers name transformers' own tests/ folders.
    for path in project_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        folders = PROJECT_FOLDERS if path.name in ("README.md", "pyproject.toml") else PROJECT_FOLDERS[:5]
        missing.setdefault(str(path.relative_to(REPO)), []).extend(_missing_paths(text, folders))
    missing = {name: paths for name, paths in missing.items() if paths}
    assert not missing, missing


def test_the_path_check_can_fail():
    absent = "docs/" + "no_such_file.md"  # spelled in two pieces, so that this file does not cite it
    assert _missing_paths(f"see `docs/method.md` and {absent}.", PROJECT_FOLDERS) == [absent]
