"""The README's two commands are the project's contract with a fresh machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path


def _readme_commands(root: Path) -> list[str]:
    text = (root / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md must start with a ```sh block holding the two commands"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_readme_has_run_and_test_commands(project_root: Path) -> None:
    commands = _readme_commands(project_root)
    assert len(commands) == 2
    run, test = commands
    assert "mxrc" in run and "pip install" in run
    assert "pytest" in test and "pip install" in test


def test_ci_runs_exactly_the_readme_test_command(project_root: Path) -> None:
    _, test_command = _readme_commands(project_root)
    ci_lines = [line.strip() for line in (project_root / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_versions_agree(project_root: Path) -> None:
    """pyproject.toml, CMakeLists.txt, mxrc.__version__ and the compiled core name one version."""
    import mxrc
    from mxrc._native import _core

    pyproject = re.search(
        r'^version = "([^"]+)"', (project_root / "pyproject.toml").read_text(), re.M
    )
    cmake = re.search(
        r"project\(mxrc VERSION ([0-9.]+)", (project_root / "CMakeLists.txt").read_text()
    )
    assert pyproject and cmake
    assert pyproject.group(1) == cmake.group(1) == mxrc.__version__ == _core.__version__


def test_run_command_works_from_the_checkout(project_root: Path, tmp_path: Path) -> None:
    """The README's first command, run in the checkout right after `pip install .`.

    There the checkout's own mxrc/ (no compiled core) leads sys.path; the
    installed core must still be found, not the stub-only mxrc/_core/. The
    report goes to tmp_path instead of the checkout.
    """
    run, _ = _readme_commands(project_root)
    after_install = run.split("&&", 1)[1].split()
    assert after_install[:4] == ["python3", "-m", "mxrc", "run"], run
    args = after_install[1:]
    report = tmp_path / "r.json"
    args[args.index("--json-report") + 1] = str(report)
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(report.read_text())
    cycles = int(args[args.index("--cycles") + 1])
    assert data["cycle_count"] == cycles
    for key in ("wake_latency_us", "body_start_latency_us", "exec_time_us"):
        assert set(data[key]) >= {"min", "avg", "p50", "p99", "p999", "max"}
    assert 0.0 <= data["deadline_miss_rate"] <= 1.0
