"""Every ``MXRC_*`` environment variable mxrc reads, in one place.

Each variable is a module-level constant holding its own name, documented
below it, and described in :data:`ENV_VARS` (what it overrides, whether it
beats the config file, its syntax). :func:`read_env_overrides` parses and
validates them; an invalid value raises :class:`mxrc.errors.ConfigError`
naming the variable, what was expected and what was found.

An empty variable counts as unset (as OpenTelemetry does).

Precedence, highest first: explicit arguments (e.g. ``load_config(directory)``),
then the environment variables marked ``beats_config``, then the config
files, then the built-in defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mxrc.errors import ConfigError
from mxrc.rt._cpulist import parse_cpulist

__all__ = [
    "ENV_VARS",
    "LOG_LEVELS",
    "MXRC_CONFIG_DIR",
    "MXRC_HTTP_PORT",
    "MXRC_INSTANCE",
    "MXRC_LOG_DIR",
    "MXRC_LOG_LEVEL",
    "MXRC_OTLP_ENDPOINT",
    "MXRC_RT_CPU_CORES",
    "MXRC_RT_PRIORITY",
    "EnvOverride",
    "EnvVar",
    "config_dir_from_env",
    "instance_from_env",
    "read_env_overrides",
]

MXRC_CONFIG_DIR = "MXRC_CONFIG_DIR"
"""Config directory used when none is given (``load_config()`` with no
directory, ``mxrc doctor`` without ``--config``). An explicit directory beats
it; it overrides no key."""

MXRC_INSTANCE = "MXRC_INSTANCE"
"""Name of the mxrc instance on this node (default ``default``): the shared
memory segment is ``/dev/shm/mxrc-<instance>`` and the systemd unit
``mxrc@<instance>.service``. 1–64 characters ``[A-Za-z0-9_.-]``, starting
with a letter or digit. No config key."""

MXRC_RT_CPU_CORES = "MXRC_RT_CPU_CORES"
"""Beats ``rt.cpu_cores`` of ``cpu_affinity.json``. Kernel CPU-list syntax
(``"1,3"``, ``"2-3"``), or ``auto`` for automatic placement (``null``)."""

MXRC_RT_PRIORITY = "MXRC_RT_PRIORITY"
"""Beats ``rt.priority`` of ``cpu_affinity.json``. An integer; 1–99 for
SCHED_FIFO/SCHED_RR, 0 for the other policies (checked like the file)."""

MXRC_LOG_DIR = "MXRC_LOG_DIR"
"""Beats ``directory`` of ``logging.json`` (where log files, and relative
trace file paths, go)."""

MXRC_LOG_LEVEL = "MXRC_LOG_LEVEL"
"""Beats ``rt.level`` and ``nonrt.level`` of ``logging.json``. One of
trace, debug, info, warn, error, critical (case-insensitive; ``warning``
is accepted for ``warn``)."""

MXRC_HTTP_PORT = "MXRC_HTTP_PORT"
"""Beats ``health_server.port`` of ``failover_policy.json``: the port of the
node's HTTP server (``/health*``, ``/metrics``; served by the agent). An
integer 0–65535; 0 lets the kernel pick a free port."""

MXRC_OTLP_ENDPOINT = "MXRC_OTLP_ENDPOINT"
"""Beats ``exporter.otlp.endpoint`` of ``tracing_config.json`` and switches
``exporter.type`` to ``"otlp"``: an ``http://`` or ``https://`` URL of an
OTLP/HTTP receiver (e.g. ``http://localhost:4318``)."""

LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "critical")
"""The ECS log levels mxrc uses, lowest first."""

_INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URL_RE = re.compile(r"https?://[^\s/?#]+(/\S*)?")


@dataclass(frozen=True)
class EnvVar:
    """Description of one ``MXRC_*`` variable (for docs and ``mxrc doctor``)."""

    name: str
    overrides: str | None
    """``"<file> <key path>"`` of the config key it replaces, or None."""
    beats_config: bool
    """True when a set variable wins over the config file."""
    syntax: str
    description: str


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(
        MXRC_CONFIG_DIR,
        None,
        False,
        "a directory path",
        "Config directory used when no directory is given explicitly.",
    ),
    EnvVar(
        MXRC_INSTANCE,
        None,
        False,
        "1-64 characters [A-Za-z0-9_.-]",
        "Instance name: shared memory /dev/shm/mxrc-<instance>, unit mxrc@<instance>.",
    ),
    EnvVar(
        MXRC_RT_CPU_CORES,
        "cpu_affinity.json rt.cpu_cores",
        True,
        'CPU list ("1,3", "2-3") or "auto"',
        "CPUs of the RT process.",
    ),
    EnvVar(
        MXRC_RT_PRIORITY,
        "cpu_affinity.json rt.priority",
        True,
        "integer 0-99",
        "Scheduling priority of the RT cycle thread.",
    ),
    EnvVar(
        MXRC_LOG_DIR,
        "logging.json directory",
        True,
        "a directory path",
        "Directory of the log files.",
    ),
    EnvVar(
        MXRC_LOG_LEVEL,
        "logging.json rt.level, nonrt.level",
        True,
        "trace|debug|info|warn|error|critical",
        "Minimum log level of every process.",
    ),
    EnvVar(
        MXRC_HTTP_PORT,
        "failover_policy.json health_server.port",
        True,
        "integer 0-65535",
        "Port of the node's health and metrics HTTP server.",
    ),
    EnvVar(
        MXRC_OTLP_ENDPOINT,
        "tracing_config.json exporter.otlp.endpoint (and exporter.type = otlp)",
        True,
        "http(s)://host[:port][/path]",
        "OTLP/HTTP receiver for traces; setting it selects the OTLP exporter.",
    ),
)
"""All variables, in the order the docs list them."""


@dataclass(frozen=True)
class EnvOverride:
    """One parsed override: set ``key_path`` of config file ``file`` to ``value``."""

    variable: str
    file: str
    key_path: tuple[str, ...]
    value: Any


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _env_error(
    name: str, message: str, expected: str, found: str, key_path: str | None
) -> ConfigError:
    return ConfigError(
        message,
        file=f"{name} (environment)",
        key_path=key_path,
        expected=expected,
        found=found,
        hint=f"fix or unset {name}",
    )


def _parse_int(name: str, text: str, lo: int, hi: int, key_path: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise _env_error(
            name, "not an integer", f"an integer in {lo}..{hi}", text, key_path
        ) from None
    if not lo <= value <= hi:
        raise _env_error(name, "out of range", f"an integer in {lo}..{hi}", text, key_path)
    return value


def config_dir_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The directory named by ``MXRC_CONFIG_DIR``, or None when unset/empty."""
    return _get(os.environ if environ is None else environ, MXRC_CONFIG_DIR)


def instance_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The instance name from ``MXRC_INSTANCE`` (default ``"default"``).

    Raises ConfigError when the name is not 1–64 characters ``[A-Za-z0-9_.-]``
    starting with a letter or digit.
    """
    value = _get(os.environ if environ is None else environ, MXRC_INSTANCE)
    if value is None:
        return "default"
    if not _INSTANCE_RE.fullmatch(value):
        raise _env_error(
            MXRC_INSTANCE,
            "invalid instance name",
            "1-64 characters [A-Za-z0-9_.-] starting with a letter or digit",
            value,
            None,
        )
    return value


def read_env_overrides(environ: Mapping[str, str]) -> list[EnvOverride]:
    """Parse the variables that override config keys, in :data:`ENV_VARS` order.

    Values are parsed here (syntax, ranges that do not depend on other keys);
    the config loader then validates the result like a file value.
    Raises ConfigError naming the variable, expected and found.
    """
    out: list[EnvOverride] = []

    text = _get(environ, MXRC_RT_CPU_CORES)
    if text is not None:
        if text.lower() == "auto":
            cores: list[int] | None = None
        else:
            try:
                cores = sorted(parse_cpulist(text))
            except ValueError:
                cores = []
            if not cores:
                raise _env_error(
                    MXRC_RT_CPU_CORES,
                    "invalid CPU list",
                    'a CPU list such as "1,3" or "2-3", or "auto"',
                    text,
                    "rt.cpu_cores",
                )
        out.append(EnvOverride(MXRC_RT_CPU_CORES, "cpu_affinity", ("rt", "cpu_cores"), cores))

    text = _get(environ, MXRC_RT_PRIORITY)
    if text is not None:
        prio = _parse_int(MXRC_RT_PRIORITY, text, 0, 99, "rt.priority")
        out.append(EnvOverride(MXRC_RT_PRIORITY, "cpu_affinity", ("rt", "priority"), prio))

    text = _get(environ, MXRC_LOG_DIR)
    if text is not None:
        out.append(EnvOverride(MXRC_LOG_DIR, "logging", ("directory",), text))

    text = _get(environ, MXRC_LOG_LEVEL)
    if text is not None:
        level = text.lower()
        if level == "warning":
            level = "warn"
        if level not in LOG_LEVELS:
            raise _env_error(
                MXRC_LOG_LEVEL,
                "unknown log level",
                "one of " + ", ".join(LOG_LEVELS),
                text,
                "rt.level",
            )
        for role in ("rt", "nonrt"):
            out.append(EnvOverride(MXRC_LOG_LEVEL, "logging", (role, "level"), level))

    text = _get(environ, MXRC_HTTP_PORT)
    if text is not None:
        port = _parse_int(MXRC_HTTP_PORT, text, 0, 65535, "health_server.port")
        out.append(EnvOverride(MXRC_HTTP_PORT, "failover_policy", ("health_server", "port"), port))

    text = _get(environ, MXRC_OTLP_ENDPOINT)
    if text is not None:
        if not _URL_RE.fullmatch(text):
            raise _env_error(
                MXRC_OTLP_ENDPOINT,
                "invalid URL",
                "an http:// or https:// URL such as http://localhost:4318",
                text,
                "exporter.otlp.endpoint",
            )
        out.append(
            EnvOverride(MXRC_OTLP_ENDPOINT, "tracing", ("exporter", "otlp", "endpoint"), text)
        )
        out.append(EnvOverride(MXRC_OTLP_ENDPOINT, "tracing", ("exporter", "type"), "otlp"))
    return out
