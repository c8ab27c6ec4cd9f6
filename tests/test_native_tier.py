"""Tier 2: native bodies (cffi API mode, Cython nogil) built in the test, called without the GIL.

Also: the cycle thread of tiers 1-2 does not allocate (malloc interposer
LD_PRELOADed into a child process, counting the cycle thread's calls).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from mxrc._include import get_include
from mxrc.errors import BodyError
from mxrc.pytest_plugin import CycleRunner
from mxrc.rt._affinity import allowed_cpus
from mxrc.rt._bodies import NativeBody, classify_body
from mxrc.rt._executive import Executive
from mxrc.rt._state import RtState
from mxrc.testing import assert_late_share

pytestmark = [pytest.mark.timing, pytest.mark.slow]

NATIVE_DIR = Path(__file__).parent / "native"

_CDEF = """
typedef struct mxrc_cycle_ctx mxrc_cycle_ctx;
int mxrc_test_body(const mxrc_cycle_ctx* ctx);
"""

# the cycle thread goes to the highest allowed CPU (CPU 1 here; CPU 0 stays free)
RT_CPU = max(allowed_cpus())


def _have_cc() -> bool:
    return shutil.which("cc") is not None or shutil.which("gcc") is not None


@pytest.fixture(scope="module")
def cffi_body(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    """The test body compiled by cffi in API mode: (ffi, lib)."""
    cffi = pytest.importorskip("cffi")
    if not _have_cc():
        pytest.skip("no C compiler")
    tmp = tmp_path_factory.mktemp("cffi_body")
    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    ffi.set_source(
        "_mxrc_test_cffi_body",
        (NATIVE_DIR / "test_body.c").read_text(),
        include_dirs=[get_include()],
    )
    so = ffi.compile(tmpdir=str(tmp))
    spec = importlib.util.spec_from_file_location("_mxrc_test_cffi_body", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ffi, mod.lib  # type: ignore[attr-defined]


def _counters(n: int = 8) -> ctypes.Array[ctypes.c_uint64]:
    return (ctypes.c_uint64 * n)()


def test_header_sizes_match_the_core() -> None:
    from mxrc._native import _core

    assert _core.cycle.ABI_VERSION == 3  # 3: data store and event entries
    assert _core.cycle.CTX_SIZE % 8 == 0
    assert (Path(get_include()) / "mxrc.h").is_file()
    assert (Path(get_include()) / "mxrc.pxd").is_file()


def test_cffi_api_mode_body_runs_without_the_gil(cffi_body: tuple[object, object]) -> None:
    ffi, lib = cffi_body
    fn = ffi.addressof(lib, "mxrc_test_body")  # type: ignore[attr-defined]
    spec = classify_body(fn)  # a cffi function pointer is accepted as native
    assert spec.kind == "native" and "_mxrc_test_cffi_body" in spec.description
    c = _counters()
    ex = Executive(NativeBody(spec.address, ctypes.addressof(c)), period_us=1000, cpus=[RT_CPU])
    # While the body runs, this (main) thread holds the GIL in a busy loop:
    # a native body must not care.
    ex.start()
    t_end = time.monotonic() + 0.3
    x = 0
    while time.monotonic() < t_end:
        x += 1
    assert ex.wait(cycles=2000, timeout=10)
    ex.stop()
    st = ex.stats()
    assert c[0] == ex.cycles == st.cycle_count
    assert c[2] == 0  # never woke before its release
    assert c[3] == 0  # ABI version and sizes agree
    assert c[7] == 0
    assert c[6] == int(RtState.RUNNING)
    assert st.wake_latency.count == st.cycle_count == st.exec_time.count
    assert st.gil_wait.count == 0


def _native(address: int, counters: ctypes.Array[ctypes.c_uint64]) -> NativeBody:
    return NativeBody(address, ctypes.addressof(counters))


def test_native_body_error_return_and_request_stop(cffi_body: tuple[object, object]) -> None:
    ffi, lib = cffi_body
    address = int(ffi.cast("uintptr_t", ffi.addressof(lib, "mxrc_test_body")))  # type: ignore[attr-defined]
    c = _counters()
    c[4] = 7  # fail on cycle 7
    with pytest.raises(BodyError) as info:
        Executive(_native(address, c), period_us=1000, overrun="run_late").run(100)
    assert info.value.code == 5 and info.value.cycle == 7
    c2 = _counters()
    c2[5] = 10  # request_stop on cycle 10
    ex = Executive(_native(address, c2), period_us=1000, overrun="run_late")
    ex.start()
    assert ex.wait(timeout=5)
    assert ex.state is RtState.SHUTDOWN
    assert c2[1] == 10


def test_native_multi_rate_slots(cffi_body: tuple[object, object]) -> None:
    ffi, lib = cffi_body
    address = int(ffi.cast("uintptr_t", ffi.addressof(lib, "mxrc_test_body")))  # type: ignore[attr-defined]
    c = _counters()
    ex = Executive(period_us=1000, overrun="run_late")
    ex.add_action(_native(address, c), every=4, offset=3)
    ex.run(40)
    assert c[0] == 10  # cycles 3, 7, ..., 39
    assert c[1] == 39
    assert c[7] == 0  # slot == cycle % every each time


@pytest.fixture(scope="module")
def cython_body(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    pytest.importorskip("Cython")
    pytest.importorskip("setuptools")
    if not _have_cc():
        pytest.skip("no C compiler")
    tmp = tmp_path_factory.mktemp("cython_body")
    shutil.copy(NATIVE_DIR / "cython_body.pyx", tmp / "mxrc_test_cython_body.pyx")
    setup = textwrap.dedent(
        f"""
        from setuptools import Extension, setup
        from Cython.Build import cythonize
        ext = Extension("mxrc_test_cython_body", ["mxrc_test_cython_body.pyx"],
                        include_dirs=[{get_include()!r}])
        setup(name="mxrc_test_cython_body", script_args=["build_ext", "--inplace", "-q"],
              ext_modules=cythonize([ext], include_path=[{get_include()!r}], quiet=True))
        """
    )
    (tmp / "setup.py").write_text(setup)
    proc = subprocess.run(
        [sys.executable, "setup.py"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    so = next(tmp.glob("mxrc_test_cython_body*.so"))
    spec = importlib.util.spec_from_file_location("mxrc_test_cython_body", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cython_nogil_body(cython_body: ModuleType, mxrc_cycles: CycleRunner) -> None:
    c = _counters(4)
    st = mxrc_cycles(
        NativeBody(cython_body.address(), ctypes.addressof(c)),
        2000,
        period_us=1000,
        overrun="run_late",
        cpus=[RT_CPU],
    )
    assert c[0] == 2000 == st.cycle_count
    assert c[1] == 1999
    assert c[2] == 0 and c[3] == 0
    assert st.wake_latency.count == st.body_start_latency.count == 2000


def test_native_body_keeps_running_while_python_threads_hold_the_gil(
    cython_body: ModuleType,
) -> None:
    c = _counters(4)
    stop = threading.Event()

    def hog() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=hog)
    t.start()
    try:
        st = Executive(NativeBody(cython_body.address(), ctypes.addressof(c)), period_us=1000).run(
            500
        )
    finally:
        stop.set()
        t.join()
    assert c[0] == 500
    # a body that needed the GIL would wait up to the 5 ms switch interval on
    # many cycles; this one must stay on time (loose bound: <= 10 % of cycles late by 2 ms)
    assert_late_share(st, above_us=2000, at_most=0.1)


# ------------------------------------------------------------ no allocation


@pytest.fixture(scope="module")
def alloc_counter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("alloc") / "liballoc_counter.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(NATIVE_DIR / "alloc_counter.c")],
        check=True,
        timeout=60,
    )
    return out


_ALLOC_CHILD = """
import ctypes, json, sys, time
from mxrc.rt._bodies import BuiltinBody, NativeBody
from mxrc.rt._executive import Executive
probe = ctypes.CDLL(None)
probe.mxrc_alloc_count.restype = ctypes.c_ulong
import threading
# the interposer works: this thread allocates
probe.mxrc_alloc_watch(threading.get_native_id())
junk = [bytearray(1000) for _ in range(10)]
self_calls = probe.mxrc_alloc_count()
probe.mxrc_alloc_watch(0)
{setup}
ex = Executive(body, period_us=1000)
ex.start()
ex.wait(cycles=100, timeout=10)      # warm-up
probe.mxrc_alloc_watch(ex.tid)
before = ex.cycles
ex.wait(cycles=before + 1000, timeout=20)
cycle_calls = probe.mxrc_alloc_count()
cycles = ex.cycles - before
probe.mxrc_alloc_watch(0)
ex.stop()
print(json.dumps({{"self_calls": self_calls, "cycle_calls": cycle_calls, "cycles": cycles}}))
"""


def _run_alloc_child(lib: Path, setup: str) -> dict[str, int]:
    import os

    env = dict(os.environ, LD_PRELOAD=str(lib))
    proc = subprocess.run(
        [sys.executable, "-c", _ALLOC_CHILD.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_tier1_cycle_thread_does_not_allocate(alloc_counter: Path) -> None:
    r = _run_alloc_child(alloc_counter, 'body = BuiltinBody("noop")')
    assert r["self_calls"] > 0  # the interposer sees allocations
    assert r["cycles"] >= 1000
    assert r["cycle_calls"] == 0


def test_tier2_cycle_thread_does_not_allocate(alloc_counter: Path, cython_body: ModuleType) -> None:
    so = Path(cython_body.__file__)
    setup = (
        f"sys.path.insert(0, {str(so.parent)!r})\n"
        "import mxrc_test_cython_body\n"
        "counters = (ctypes.c_uint64 * 4)()\n"
        "body = NativeBody(mxrc_test_cython_body.address(), ctypes.addressof(counters))"
    )
    r = _run_alloc_child(alloc_counter, setup)
    assert r["cycles"] >= 1000
    assert r["cycle_calls"] == 0


def test_tier1_minor_faults_stay_flat() -> None:
    from mxrc.rt._bodies import BuiltinBody

    ex = Executive(BuiltinBody("noop"), period_us=500)
    ex.start()
    try:
        assert ex.wait(cycles=300, timeout=10)
        first = ex.stats().minor_faults
        assert ex.wait(cycles=1500, timeout=10)
        later = ex.stats().minor_faults
    finally:
        ex.stop()
    assert later - first <= 2  # no page is touched for the first time in the loop
