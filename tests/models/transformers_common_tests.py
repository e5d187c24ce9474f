"""Fetch transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) for the installed version.

The tests are not part of the transformers wheel, and must not be copied into this repository: they are taken
from the source distribution of exactly the installed version, downloaded with pip at test time and cached
under the system temp folder (`$TMPDIR/phreg-hf-transformers-tests/<version>`), so a second run needs no
network. The sdist ships only the top-level `tests/*.py` files, and `test_modeling_common.py` /
`test_configuration_common.py` import three helpers from sub-folders that it lacks; `write_stubs` provides them,
and says what each stands for.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

# The extracted tests become this package (not `tests`, which would clash with this repository's tests folder).
PACKAGE = "transformers_sdist_tests"
FILES = ("test_modeling_common.py", "test_configuration_common.py", "test_backbone_common.py")

STUBS = {
    "__init__.py": "",
    # ModelTesterMixin inherits ExportTesterMixin (torch.export tests, tests/exporters/ in the git repository
    # only). An empty stand-in: the export tests do not run here.
    "exporters/__init__.py": "",
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    # Only used to check that generative models' testers inherit it; the students do not generate.
    "generation/__init__.py": "",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # ConfigTester's `check_config_arguments_init` sets these generic config arguments to non-default values and
    # checks they are kept. The original dict (tests/utils/, not in the sdist) lists the same fields: here one
    # non-default value for each field of this version's PreTrainedConfig.
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "architectures": ["BertModel"],\n'
        '    "output_hidden_states": True,\n'
        '    "return_dict": False,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": 0},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


class Unavailable(Exception):
    """The common tests could not be fetched (no network and no cache); the message says why."""


def cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "phreg-hf-transformers-tests" / transformers.__version__


def fetch(root: Path) -> None:
    """Download the sdist of the installed transformers and extract `tests/*.py` into `root/PACKAGE`."""
    version = transformers.__version__
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=root.parent))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--quiet",
                "--retries",
                "1",
            ]
            + ["--dest", str(staging), f"transformers=={version}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        archives = list(staging.glob(f"transformers-{version}.tar.gz"))
        if result.returncode != 0 or not archives:
            raise Unavailable(
                f"pip could not download the transformers {version} source distribution (network?): "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        package = staging / "extracted" / PACKAGE
        package.mkdir(parents=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts  # transformers-<version>/tests/<file>.py
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (package / parts[2]).write_bytes(archive.extractfile(member).read())
        missing = [name for name in FILES if not (package / name).exists()]
        if missing:
            raise Unavailable(f"The transformers {version} sdist holds no tests/{missing[0]}.")
        for name, text in STUBS.items():
            target = package / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_text(text)
        root.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(package, root / PACKAGE)  # atomic: a concurrent run sees all files or none
        except OSError:
            if not (root / PACKAGE / FILES[0]).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load() -> tuple[ModuleType, ModuleType, ModuleType]:
    """`(test_modeling_common, test_configuration_common, test_backbone_common)` of the installed transformers.

    Raises:
        Unavailable: when the sdist cannot be downloaded and is not cached.
    """
    root = cache_dir()
    if not (root / PACKAGE / FILES[0]).exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        fetch(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return tuple(importlib.import_module(f"{PACKAGE}.{name[:-3]}") for name in FILES)
