"""The package layout: which subpackage may import which, no import cycles, and the 0.1 module paths as aliases.

Imports are read from the source (every `import`, also those inside functions), so a wrong-way import is caught
even where no test runs the function that holds it, and a stale relative import left by a move is caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import phreg_hf
from phreg_hf import _moved_modules

PACKAGE_DIR = Path(phreg_hf.__file__).resolve().parent
SUBPACKAGES = ("models", "evaluate", "hub", "distill", "demos")
# The top-level modules every concern shares; they import each other and models/ (the bottom layer).
SHARED = (
    "arg_parsing",
    "constants",
    "data",
    "file_checks",
    "launch",
    "seeding",
    "synthetic",
    "synthetic_clip",
    "teacher",
)
# What each part of the package may import, besides itself. `models/` is the code a checkpoint carries: nothing else.
ALLOWED = {
    "models": set(),
    "shared": {"models"},
    "evaluate": {"models", "shared"},
    "hub": {"models", "shared"},
    "distill": {"models", "shared", "evaluate", "hub"},
    "demos": {"models", "shared", "evaluate", "hub", "distill"},
}


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        names.append(".".join(("phreg_hf", *parts)).removesuffix(".__init__"))
    return names


def module_path(name: str) -> Path | None:
    if name == "phreg_hf":
        return PACKAGE_DIR / "__init__.py"
    relative = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / relative.with_suffix(".py"), PACKAGE_DIR / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(name: str) -> set[str]:
    """The phreg_hf modules `name` imports anywhere in its source, as absolute names."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "phreg_hf")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "phreg_hf":
                target = node.module
            else:
                continue
            # `from . import data` names a module; `from .data import X` names attributes of one.
            submodules = [
                f"{target}.{alias.name}" for alias in node.names if module_path(f"{target}.{alias.name}")
            ]
            found.update(submodules or [target])
    return found


def part_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[1] in SUBPACKAGES:
        return parts[1]
    if len(parts) == 2 and parts[1] in SUBPACKAGES:
        return parts[1]
    if len(parts) == 2 and parts[1] in SHARED:
        return "shared"
    return "top"  # phreg_hf/__init__.py, cli.py, _moved_modules.py: may import anything


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name) for name in module_names()}


def test_every_import_names_an_existing_module():
    missing = {
        name: sorted(target for target in targets if module_path(target) is None)
        for name, targets in import_graph().items()
    }
    assert not {name: targets for name, targets in missing.items() if targets}


def test_imports_run_one_way():
    wrong = []
    for name, targets in import_graph().items():
        part = part_of(name)
        if part == "top":
            continue
        for target in targets:
            target_part = part_of(target)
            if target_part != part and target_part not in ALLOWED[part]:
                wrong.append(
                    f"{name} imports {target} ({part} may import {sorted(ALLOWED[part]) or 'nothing'})"
                )
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """The rule above can fail: a models file that imports distill is reported."""
    fake_package = tmp_path / "phreg_hf"
    for path in PACKAGE_DIR.rglob("*.py"):
        target = fake_package / path.relative_to(PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    bad = fake_package / "models" / "modeling_phreg.py"
    bad.write_text(bad.read_text(encoding="utf-8") + "\n\ndef f():\n    from ..distill import trainer\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", fake_package)
    with pytest.raises(
        AssertionError, match="phreg_hf.models.modeling_phreg imports phreg_hf.distill.trainer"
    ):
        test_imports_run_one_way()


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ is its own node; `from .x import y` inside a package does not make a cycle with it.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if target == "phreg_hf" or (
                name.startswith(target + ".") and module_path(target).name == "__init__.py"
            ):
                continue  # a module's own package (imported first by Python anyway)
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if state.get(target) is None:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in graph:
        if state.get(name) is None:
            cycle = visit(name)
            assert cycle is None, " -> ".join(cycle)


def test_models_files_are_exactly_the_checkpoint_code():
    """`models/` holds the files `save_pretrained` copies, and they import only each other (relatively)."""
    files = sorted(path.name for path in (PACKAGE_DIR / "models").glob("*.py") if path.name != "__init__.py")
    assert files == [
        "clip_dense.py",
        "configuration_phreg.py",
        "configuration_phreg_ttr.py",
        "modeling_phreg.py",
        "modeling_phreg_backbone.py",
        "modeling_phreg_clip.py",
        "modeling_phreg_dinov3.py",
        "modeling_phreg_registers.py",
        "modeling_phreg_siglip.py",
        "modeling_phreg_ttr.py",
        "pipeline_phreg_segmentation.py",
    ]
    for file in files:
        tree = ast.parse((PACKAGE_DIR / "models" / file).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module, (
                    f"{file}: `from {'.' * node.level}{node.module or ''}`"
                )


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_each_subpackage_imports_and_says_what_it_holds(subpackage):
    module = __import__(f"phreg_hf.{subpackage}", fromlist=["_"])
    assert module.__doc__ and "Imports" in module.__doc__


def test_old_module_paths_are_the_new_modules_with_one_warning_each():
    """In a fresh process (no module imported yet): every 0.1 path imports the moved module itself, by `import`
    and by attribute, and warns once, naming the new path."""
    code = """
import importlib, warnings
from phreg_hf._moved_modules import MOVED_MODULES
warnings.simplefilter("always")
for old_name, new_name in MOVED_MODULES.items():
    with warnings.catch_warnings(record=True) as caught:
        old = importlib.import_module("phreg_hf." + old_name)
        again = importlib.import_module("phreg_hf." + old_name)
        import phreg_hf
        attribute = getattr(phreg_hf, old_name)
    new = importlib.import_module(new_name)
    assert old is new is again is attribute, (old_name, old, new)
    assert new.__spec__.name == new_name, new.__spec__.name
    moved = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(moved) == 1, (old_name, [str(w.message) for w in caught])
    assert new_name in str(moved[0].message), moved[0].message
print(len(MOVED_MODULES))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout) == len(_moved_modules.MOVED_MODULES) == 26


def test_from_import_of_an_old_path_and_the_hub_module_api():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from phreg_hf.trainer import DistillTrainer  # noqa: PLC0415 - the old path under test
    from phreg_hf.distill.trainer import DistillTrainer as moved
    from phreg_hf.hub import push_main, render_model_card
    from phreg_hf.hub.push import push_main as push_module_main
    from phreg_hf.hub.push import render_model_card as push_module_render

    assert DistillTrainer is moved
    assert push_main is push_module_main and render_model_card is push_module_render
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        phreg_hf.not_a_module  # noqa: B018
