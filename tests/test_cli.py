"""The mxrc command: subcommand structure, doctor output and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from mxrc import cli


@pytest.fixture(autouse=True)
def _no_mxrc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MXRC_"):
            monkeypatch.delenv(key)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MXRC_")}


def fake(data_dir: Path, name: str) -> list[str]:
    base = data_dir / "hosts" / name
    return ["--procfs-root", str(base / "proc"), "--sysfs-root", str(base / "sys")]


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxrc", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=clean_env(),
        check=False,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mxrc ")
    assert out.split()[1][0].isdigit() or out.split()[1] == "unknown"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "doctor" in capsys.readouterr().err


def test_bad_option_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["doctor", "--rt-cores", "3-1"]) == 2
    assert "--rt-cores" in capsys.readouterr().err
    assert cli.main(["doctor", "--config", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["nosuchcommand"]) == 2


def test_doctor_json_on_fake_tree(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor", "--json", "--rt-cores", "2-3", *fake(data_dir, "numa2_isolated")])
    out = capsys.readouterr().out
    d = json.loads(out)  # exactly one JSON object
    assert code == 0
    assert d["rt_cores"] == [2, 3]
    assert d["isolated_cpus"] == [2, 3]
    assert d["numa_nodes"] == 2
    assert d["preempt_rt"] is True


def test_doctor_text_error_exit_1(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", *fake(data_dir, "cgroup_v1")]) == 1
    out = capsys.readouterr().out
    assert "[ERROR]" in out and "cpu.rt_runtime_us" in out


def test_config_error_exit_2_names_file_and_key(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cpu_affinity.json").write_text('{"rt": {"priority": "high"}}')
    code = cli.main(["doctor", "--config", str(tmp_path), *fake(data_dir, "numa2_isolated")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "cpu_affinity.json" in captured.err
    assert "rt.priority" in captured.err


def test_subcommands_are_pluggable(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        out.write(f"hello {args.name}\n")
        return 7

    def register(sub: Any) -> None:
        p = sub.add_parser("hello")
        p.add_argument("name")
        p.set_defaults(handler=handler)

    cli.SUBCOMMANDS.append(register)
    try:
        assert cli.main(["hello", "world"]) == 7
        assert capsys.readouterr().out == "hello world\n"
    finally:
        cli.SUBCOMMANDS.remove(register)
    assert cli.main(["hello", "x"]) == 2


@pytest.fixture
def outside_tree(tmp_path: Path) -> Iterator[Path]:
    # run from outside the source tree so the installed package is what runs
    yield tmp_path


def test_python_m_mxrc_doctor_json_for_real(outside_tree: Path) -> None:
    proc = run_module("doctor", "--json", cwd=outside_tree)
    assert proc.returncode in (0, 1), proc.stderr
    d = json.loads(proc.stdout)
    assert set(d["cpus_allowed"]) <= os.sched_getaffinity(0)
    assert proc.returncode == (1 if d["summary"]["error"] else 0)
    assert d["numa_nodes"] == max(len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))), 1)


def test_python_m_mxrc_exit_codes_on_fake_trees(data_dir: Path, outside_tree: Path) -> None:
    ok = run_module("doctor", *fake(data_dir, "numa2_isolated"), cwd=outside_tree)
    assert ok.returncode == 0, ok.stderr
    assert "real-time readiness of rt-numa2" in ok.stdout
    bad = run_module("doctor", "--json", *fake(data_dir, "cgroup_v1"), cwd=outside_tree)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["cgroup"]["rt_runtime_us"] == 0
    cfg = outside_tree / "cfg"
    cfg.mkdir()
    (cfg / "numa_binding.json").write_text('{\n  "rt": {"numa_node": 0,\n}')
    usage = run_module("doctor", "--config", str(cfg), cwd=outside_tree)
    assert usage.returncode == 2
    assert usage.stdout == ""
    assert "numa_binding.json:" in usage.stderr
