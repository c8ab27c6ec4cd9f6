"""C++ programs using mxrc: the core alone (docs/examples/cpp_executive) and a program
embedding Python that hands an Executive its C++ body in a capsule (docs/examples/embed_python).

Both are built with CMake and run here. Also: how a capsule is classified.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest
from cmake_helpers import EXAMPLES, build_example, core_package, key_values, run

from mxrc._native import _core
from mxrc.bus import Segment
from mxrc.errors import SegmentError
from mxrc.rt._bodies import CAPSULE_NAME, classify_body
from mxrc.rt._state import RtState

RT_CPU = max(os.sched_getaffinity(0))  # where automatic placement puts the rt role
IS_ROOT = os.geteuid() == 0


# ------------------------------------------------------------ capsules (no build)

_capsule_new = ctypes.PYFUNCTYPE(
    ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
)(("PyCapsule_New", ctypes.pythonapi))
_capsule_set_context = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p)(
    ("PyCapsule_SetContext", ctypes.pythonapi)
)
# PyCapsule_New keeps the name pointer: the names live as long as the module.
_NAMES = {name: ctypes.create_string_buffer(name.encode()) for name in (CAPSULE_NAME, "other")}


def make_capsule(address: int, context: int = 0, name: str = CAPSULE_NAME) -> object:
    """A capsule like the one a C or C++ program makes (PyCapsule_New + SetContext)."""
    capsule = _capsule_new(address, ctypes.addressof(_NAMES[name]), None)
    if context:
        assert _capsule_set_context(capsule, context) == 0
    return capsule


def _libc_function() -> int:
    # any compiled function serves for classification (it is never called)
    return ctypes.cast(ctypes.CDLL(None).abs, ctypes.c_void_p).value or 0


def test_capsule_is_a_native_body_and_its_context_is_the_user_data() -> None:
    address = _libc_function()
    capsule = make_capsule(address, context=0x1000)
    spec = classify_body(capsule)
    assert spec.kind == "native"
    assert spec.address == address
    assert spec.user_data == 0x1000
    assert spec.keepalive is capsule  # referenced as long as the executive holds the spec
    assert spec.description.startswith("native capsule ")

    no_context = classify_body(make_capsule(address), user_data=0x2000)
    assert no_context.user_data == 0x2000


def test_capsule_with_another_name_is_refused() -> None:
    with pytest.raises(TypeError, match=r"named 'mxrc\.body'.*got a capsule named 'other'"):
        classify_body(make_capsule(_libc_function(), name="other"))


def test_capsule_context_and_user_data_together_are_refused() -> None:
    with pytest.raises(ValueError, match="capsule carries its own user data"):
        classify_body(make_capsule(_libc_function(), context=0x1000), user_data=0x2000)


# ------------------------------------------------------------ cpp_executive (core only)


@pytest.fixture(scope="session")
def core_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return core_package(tmp_path_factory)


@pytest.fixture(scope="module")
def cpp_executive(core_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = build_example(
        "cpp_executive",
        tmp_path_factory.mktemp("cpp_executive"),
        f"-DCMAKE_PREFIX_PATH={core_prefix}",
        "-DCMAKE_CXX_FLAGS=-Werror",
    )
    return build / "cpp_executive"


def _check_cpp_run(out: dict[str, str], cycles: int) -> None:
    assert out["state"] == "SHUTDOWN"
    assert int(out["cycles"]) == cycles
    assert int(out["body calls"]) == cycles  # the C++ body ran once per cycle
    assert int(out["body errors"]) == 0
    assert int(out["early wakes"]) == 0  # never woke before its release
    assert out["cpus seen"] == str(RT_CPU)  # pinned
    assert out["cycle thread"].endswith(f"on CPU {RT_CPU}")
    assert abs(float(out["position"]) - 1.0) < 1e-3  # the controller reached its setpoint


@pytest.mark.slow
def test_cpp_executive_runs_its_own_cpp_body(cpp_executive: Path) -> None:
    out = key_values(run([str(cpp_executive), "--cycles", "1000", "--period-us", "1000"]))
    _check_cpp_run(out, 1000)
    for line in ("wake latency us", "exec time us"):
        assert set(out[line].split()[::2]) == {"p50", "p99", "max"}


@pytest.mark.slow
@pytest.mark.privileged
def test_cpp_executive_fifo_locked_and_read_live_from_python(cpp_executive: Path) -> None:
    """SCHED_FIFO + mlockall on the cycle thread; its stats block in a segment that this
    (Python) process reads while the C++ program runs."""
    instance = f"test-cpp-{uuid.uuid4().hex[:8]}"
    cycles = 3000
    proc = subprocess.Popen(
        [
            str(cpp_executive),
            "--cycles",
            str(cycles),
            "--fifo",
            "50",
            "--lock-memory",
            *("--instance", instance),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        live = None
        deadline = time.monotonic() + 10
        while live is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with Segment.attach(instance) as seg:
                    st = seg.stats("main")
                    if st.cycle_count > 0:
                        tid = st.tid
                        live = (st, os.sched_getscheduler(tid), os.sched_getaffinity(tid))
            except (SegmentError, LookupError, ProcessLookupError):
                pass
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert live is not None, "the C++ program's segment was never readable while it ran"
    st, policy, affinity = live
    assert st.state is RtState.RUNNING and 0 < st.cycle_count < cycles
    assert st.period_ns == 1_000_000
    assert policy == os.SCHED_FIFO
    assert affinity == {RT_CPU}
    _check_cpp_run(key_values(stdout), cycles)
    assert not Path(f"/dev/shm/mxrc-{instance}").exists()  # the owner removed it at exit


# ------------------------------------------------------------ embed_python


def _require_python_dev() -> None:
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        if os.environ.get("CI"):
            pytest.fail("Python headers are missing (Debian: python3-dev)")
        pytest.skip("Python headers are missing (Debian: python3-dev)")


def _static_libpython() -> Path | None:
    lib = sysconfig.get_config_var("LIBRARY")  # libpython3.X.a
    if not lib:
        return None
    dirs = (sysconfig.get_config_var(v) for v in ("LIBPL", "LIBDIR"))
    return next((Path(d) / lib for d in dirs if d and (Path(d) / lib).is_file()), None)


@pytest.fixture(scope="module", params=["default", "static-libpython"])
def embed_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embed_python program, linked to libpython as FindPython prefers (shared when
    there is one) and, where a libpython.a exists, statically (pyenv builds have both)."""
    _require_python_dev()
    defines = [f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_CXX_FLAGS=-Werror"]
    if request.param == "static-libpython":
        if _static_libpython() is None:
            pytest.skip("this Python has no static libpython")
        defines.append("-DPython_USE_STATIC_LIBS=ON")
    build = build_example("embed_python", tmp_path_factory.mktemp("embed_python"), *defines)
    return build / "embed_python"


def _embed_env() -> dict[str, str]:
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:  # a venv: the embedded interpreter starts from the base
        env["PYTHONPATH"] = os.pathsep.join(sys.path[1:])
    return env


def _config_dir(tmp_path: Path) -> Path:
    """The example's config dir; without root a copy that does not lock memory."""
    shipped = EXAMPLES / "embed_python" / "config"
    if IS_ROOT:
        return shipped
    copy = tmp_path / "config"
    shutil.copytree(shipped, copy)
    numa = json.loads((copy / "numa_binding.json").read_text())
    numa["rt"]["memory_allocation"]["lock_memory"] = False
    (copy / "numa_binding.json").write_text(json.dumps(numa))
    return copy


@pytest.mark.slow
def test_embedded_python_runs_the_cpp_body_from_config(embed_python: Path, tmp_path: Path) -> None:
    config = _config_dir(tmp_path)
    perf = json.loads((config / "perf_monitor.json").read_text())["rt"]
    proc = subprocess.run(
        [str(embed_python), str(config), "1500"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_embed_env(),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    out = key_values(proc.stdout)
    assert out["state"] == "SHUTDOWN"
    assert int(out["cycles"]) == 1500
    # printed after the interpreter ended: the body's own record of the run
    assert int(out["body calls"]) == 1500
    assert int(out["period ns"]) == perf["cycle_time_us"] * 1000  # from perf_monitor.json
    assert out["cpus seen"] == str(RT_CPU)  # cpu_affinity.json: automatic placement
    assert int(out["api version"]) == _core.cycle.ABI_VERSION
    assert int(out["clock mismatches"]) == 0
    if IS_ROOT:
        assert out["sched fallback"] == "no"  # SCHED_FIFO as configured


def _wait_for_thread(proc: subprocess.Popen[str], name: str, timeout: float = 30) -> bool:
    """Wait until ``proc`` has a thread named ``name`` (cpu_affinity.json's thread_name)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for comm in Path(f"/proc/{proc.pid}/task").glob("*/comm"):
            try:
                if comm.read_text().strip() == name:
                    return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_embedded_python_ctrl_c_stops_and_joins_before_the_interpreter_ends(
    embed_python: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [str(embed_python), str(_config_dir(tmp_path)), "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_embed_env(),
        cwd=tmp_path,
    )
    try:
        assert _wait_for_thread(proc, "embed-rt"), "the cycle thread never started"
        proc.send_signal(signal.SIGINT)  # while run() waits for 500 s of cycles
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # KeyboardInterrupt reached C++ as a Python error; the program ended normally
    # (no crash from a cycle thread outliving the interpreter)
    assert proc.returncode == 1, stdout + stderr
    assert "KeyboardInterrupt" in stderr
    assert "body calls" not in stdout
