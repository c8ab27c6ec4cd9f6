"""The examples of docs/c-api.md run as written.

Each ``### `` section under "## Examples" holds fenced blocks tagged
``file=NAME``: they are written to a fresh directory and its ``run.sh`` runs
there, with this interpreter first on PATH as ``python3``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "c-api.md"
FENCE = re.compile(r"^```\S+ file=(\S+)\n(.*?)^```$", re.M | re.S)

# section heading -> what it needs: Python modules and a C compiler
NEEDS = {
    "C, in a shared object": ((), True),
    "The bus from C: data store and events": ((), True),
    "cffi, API mode": (("cffi",), True),
    "Cython, `nogil`": (("Cython", "setuptools"), True),
    "numba": (("numba",), False),
}


def _sections() -> dict[str, dict[str, str]]:
    text = DOC.read_text()
    examples = text.split("\n## Examples\n", 1)[1]
    sections: dict[str, dict[str, str]] = {}
    for chunk in examples.split("\n### ")[1:]:
        title, body = chunk.split("\n", 1)
        files = {name: code for name, code in FENCE.findall(body)}
        if files:
            sections[title.strip()] = files
    return sections


def test_every_example_section_is_run() -> None:
    assert set(_sections()) == set(NEEDS)
    for files in _sections().values():
        assert "run.sh" in files


@pytest.mark.slow
@pytest.mark.parametrize("title", sorted(NEEDS))
def test_doc_example_runs(title: str, tmp_path: Path) -> None:
    modules, needs_cc = NEEDS[title]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    if needs_cc and shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    for name, code in _sections()[title].items():
        (tmp_path / name).write_text(code)
    env = dict(
        os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "run.sh"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
