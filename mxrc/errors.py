"""The mxrc exception hierarchy.

Every error mxrc raises derives from :class:`MxrcError` and also from the
built-in exception callers already catch (``ValueError``, ``PermissionError``,
``NotImplementedError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BodyError",
    "ConfigError",
    "CpuNotAllowedError",
    "MxrcError",
    "NotNativeError",
    "PrivilegeError",
    "SegmentError",
    "SegmentInUseError",
    "ThreadSetupError",
    "UnsupportedError",
]


class MxrcError(Exception):
    """Base class of every mxrc error."""


class ConfigError(MxrcError, ValueError):
    """A configuration file or value is invalid.

    The message names the file, the key path (``rt.cpu_cores[1]``), what was
    expected and what was found; for malformed JSON, the line and column.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key_path: str | None = None,
        expected: str | None = None,
        found: object = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.key_path = key_path
        self.expected = expected
        self.found = found
        self.line = line
        self.column = column
        self.hint = hint
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.key_path:
            where += f": {self.key_path}"
        text = f"{where}: {self.message}"
        if self.expected is not None:
            text += f" (expected {self.expected}"
            text += f", found {self.found!r})" if self.found is not None else ")"
        if self.hint:
            text += f"; {self.hint}"
        return text


class CpuNotAllowedError(MxrcError, ValueError):
    """A CPU core is outside the set this process may run on."""

    def __init__(self, core: int, allowed: frozenset[int], why: str) -> None:
        self.core = core
        self.allowed = allowed
        from mxrc.rt._cpulist import format_cpulist

        super().__init__(
            f"CPU {core} is not allowed: allowed CPUs are {format_cpulist(allowed) or 'none'} "
            f"({why})"
        )


class PrivilegeError(MxrcError, PermissionError):
    """The operation needs a privilege, limit or cgroup setting this process lacks.

    The message says which capability, limit or setting to change.
    """


class UnsupportedError(MxrcError, NotImplementedError):
    """This host, kernel or combination of settings cannot do what was asked."""


class ThreadSetupError(MxrcError, OSError):
    """A step of :func:`apply_thread_setup` failed; ``step`` and ``syscall`` name it.

    ``errno`` is the system call's error; ``applied`` lists the steps that ran
    before it (they are not undone), ``skipped`` the ones that did not run.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        step: str,
        syscall: str,
        applied: tuple[str, ...],
        skipped: tuple[str, ...],
    ) -> None:
        super().__init__(code, message)
        self.step = step
        self.syscall = syscall
        self.applied = applied
        self.skipped = skipped


class SegmentError(MxrcError, OSError):
    """A shared-memory segment is missing, foreign, of another layout version, or unusable.

    The message names the segment (``/dev/shm/mxrc-<instance>``), what was
    expected and what was found.
    """


class SegmentInUseError(SegmentError):
    """Another live process owns the instance's segment (it holds the segment's flock)."""


class BodyError(MxrcError, RuntimeError):
    """A cycle body failed and the error policy stopped the executive.

    ``__cause__`` is the body's own exception (Python tier); ``cycle`` is the
    cycle it failed in and ``code`` the error return of a native body.
    """

    def __init__(self, message: str, *, cycle: int, code: int | None = None) -> None:
        super().__init__(message)
        self.cycle = cycle
        self.code = code


class NotNativeError(MxrcError, TypeError):
    """A body looks native (a C function pointer) but calls back into Python.

    A ctypes ``CFUNCTYPE`` or cffi ``ffi.callback`` made from a Python function
    takes the GIL (and a fresh thread state) on every call: pass the Python
    function itself as a Python-tier body instead.
    """
