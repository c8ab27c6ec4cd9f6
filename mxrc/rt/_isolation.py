"""Isolation verification: is this host set up to run real-time work on given cores?

:func:`check_isolation` gathers what the kernel, cgroups and limits say about a
set of RT cores and turns it into typed :class:`Finding` objects, each with
concrete advice (kernel parameters, limits.conf lines, systemd unit settings,
cgroup writes). Every reader takes ``procfs_root`` / ``sysfs_root`` so the
same checks run on fake trees.
"""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from mxrc.rt._cgroup import (
    CpusetInfo,
    RtGroupRuntime,
    _read,
    _read_int,
    cgroup_version,
    cpuset_info,
    rt_group_runtime,
)
from mxrc.rt._cpulist import format_cpulist, parse_cpulist
from mxrc.rt._topology import online_cpus, smt_siblings

__all__ = [
    "CAP_IPC_LOCK",
    "CAP_SYS_NICE",
    "Finding",
    "IrqAffinity",
    "IsolationReport",
    "IsolcpusSetting",
    "KernelInfo",
    "Limit",
    "ResourceLimits",
    "Severity",
    "check_isolation",
    "effective_capabilities",
    "irq_affinities",
    "isolated_cpus",
    "kernel_info",
    "parse_isolcpus",
    "parse_kernel_cmdline",
    "process_cpus_allowed",
    "read_kernel_cmdline",
    "resource_limits",
]

Severity = Literal["ok", "info", "warning", "error"]
Limit = int | Literal["unlimited"]
ClockStatus = Mapping[str, object]

CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23

_ISOLCPUS_FLAGS = frozenset({"nohz", "domain", "managed_irq"})


@dataclass(frozen=True)
class Finding:
    """One result of a readiness check.

    ``severity``: "ok" (as it should be), "info" (worth knowing; nothing to
    fix or not fixable here), "warning" (latency or robustness suffers),
    "error" (the RT loop cannot start as configured). ``check`` is a short
    stable identifier (``"isolcpus"``); ``advice`` says what to change.
    """

    severity: Severity
    check: str
    message: str
    advice: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {
            "severity": self.severity,
            "check": self.check,
            "message": self.message,
            "advice": self.advice,
        }


@dataclass(frozen=True)
class IsolcpusSetting:
    """A parsed ``isolcpus=`` value: CPUs and flags (``domain`` when none given)."""

    cpus: frozenset[int]
    flags: frozenset[str]


@dataclass(frozen=True)
class ResourceLimits:
    """Soft/hard RLIMIT_MEMLOCK (bytes) and RLIMIT_RTPRIO; None when unknown."""

    memlock_soft: Limit | None
    memlock_hard: Limit | None
    rtprio_soft: Limit | None
    rtprio_hard: Limit | None


@dataclass(frozen=True)
class IrqAffinity:
    """An interrupt's allowed CPUs (``smp_affinity_list``) and where it lands now."""

    irq: int
    names: tuple[str, ...]
    affinity: frozenset[int]
    effective: frozenset[int] | None


@dataclass(frozen=True)
class KernelInfo:
    """Kernel release, version string and preemption model."""

    release: str
    version: str
    preempt_rt: bool
    preempt_dynamic: bool
    preempt_mode: str | None


@dataclass(frozen=True)
class IsolationReport:
    """Everything :func:`check_isolation` read, plus its findings."""

    rt_cores: frozenset[int]
    cpus_allowed: frozenset[int] | None
    online_cpus: frozenset[int]
    isolated_cpus: frozenset[int]
    isolated_sysfs: frozenset[int] | None
    isolcpus: IsolcpusSetting | None
    nohz_full: frozenset[int]
    rcu_nocbs: frozenset[int]
    cgroup_version: str
    cpuset: CpusetInfo | None
    rt_group: RtGroupRuntime | None
    rt_runtime_us: int | None
    rt_period_us: int | None
    governors: Mapping[int, str | None]
    smt_siblings: Mapping[int, frozenset[int]]
    irqs_on_rt_cores: tuple[IrqAffinity, ...]
    default_irq_affinity: frozenset[int] | None
    limits: ResourceLimits
    capabilities_effective: int | None
    kernel: KernelInfo
    virtualized: bool | None
    clock: Mapping[str, object]
    cmdline: Mapping[str, str | None]
    findings: tuple[Finding, ...] = field(default=())

    def has_capability(self, cap: int) -> bool:
        """Whether the process's effective capability set holds ``cap``."""
        return self.capabilities_effective is not None and bool(
            self.capabilities_effective >> cap & 1
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (CPU sets as sorted lists of ints)."""

        def cpus(s: Iterable[int] | None) -> list[int] | None:
            return None if s is None else sorted(s)

        return {
            "rt_cores": cpus(self.rt_cores),
            "cpus_allowed": cpus(self.cpus_allowed),
            "online_cpus": cpus(self.online_cpus),
            "isolated_cpus": cpus(self.isolated_cpus),
            "isolcpus_flags": sorted(self.isolcpus.flags) if self.isolcpus else [],
            "nohz_full": cpus(self.nohz_full),
            "rcu_nocbs": cpus(self.rcu_nocbs),
            "cgroup": {
                "version": self.cgroup_version,
                "cpuset": None
                if self.cpuset is None
                else {
                    "version": self.cpuset.version,
                    "path": self.cpuset.cgroup_path,
                    "effective_cpus": cpus(self.cpuset.effective_cpus),
                    "exclusive": self.cpuset.exclusive,
                    "partition": self.cpuset.partition,
                },
                "rt_runtime_us": None if self.rt_group is None else self.rt_group.runtime_us,
                "rt_period_us": None if self.rt_group is None else self.rt_group.period_us,
                "rt_path": None if self.rt_group is None else self.rt_group.cgroup_path,
            },
            "rt_throttling": {
                "runtime_us": self.rt_runtime_us,
                "period_us": self.rt_period_us,
                "enabled": None if self.rt_runtime_us is None else self.rt_runtime_us >= 0,
            },
            "governors": {str(k): v for k, v in sorted(self.governors.items())},
            "smt_siblings": {str(k): sorted(v) for k, v in sorted(self.smt_siblings.items())},
            "irqs_on_rt_cores": [
                {
                    "irq": i.irq,
                    "names": list(i.names),
                    "affinity": sorted(i.affinity),
                    "effective": cpus(i.effective),
                }
                for i in self.irqs_on_rt_cores
            ],
            "default_irq_affinity": cpus(self.default_irq_affinity),
            "memlock_limit": self.limits.memlock_soft,
            "rtprio_limit": self.limits.rtprio_soft,
            "preempt_rt": self.kernel.preempt_rt,
            "preempt_dynamic": self.kernel.preempt_dynamic,
            "preempt_mode": self.kernel.preempt_mode,
            "kernel_release": self.kernel.release,
            "kernel_version": self.kernel.version,
            "virtualized": self.virtualized,
            "clock": dict(self.clock),
        }


# ---------------------------------------------------------------- readers


def read_kernel_cmdline(*, procfs_root: str = "/proc") -> str:
    """Text of ``<procfs>/cmdline`` ("" when unreadable).

    Availability: Linux.
    """
    return (_read(Path(procfs_root) / "cmdline") or "").strip()


def parse_kernel_cmdline(text: str) -> dict[str, str | None]:
    """Split a kernel command line into ``{param: value}`` (None for bare flags).

    Stops at ``--`` (what follows goes to init); the last occurrence wins;
    double quotes around a value are removed.
    """
    params: dict[str, str | None] = {}
    for token in re.findall(r'(?:[^\s"]+|"[^"]*")+', text):
        if token == "--":
            break
        key, sep, value = token.partition("=")
        params[key] = value.replace('"', "") if sep else None
    return params


def _cpulist_param(value: str | None, possible: frozenset[int]) -> frozenset[int]:
    if value is None:
        return frozenset()
    value = value.strip()
    if value == "all":
        return possible
    try:
        return parse_cpulist(value)
    except ValueError:
        return frozenset()


def parse_isolcpus(value: str) -> IsolcpusSetting:
    """Parse an ``isolcpus=`` value such as ``"managed_irq,domain,2,3"``.

    Leading flag words (``nohz``, ``domain``, ``managed_irq``) are flags; the
    rest is a CPU list. With no flag the kernel implies ``domain``.
    """
    parts = [p.strip() for p in value.split(",")]
    flags: set[str] = set()
    i = 0
    while i < len(parts) and parts[i] in _ISOLCPUS_FLAGS:
        flags.add(parts[i])
        i += 1
    try:
        cpus = parse_cpulist(",".join(parts[i:]))
    except ValueError:
        cpus = frozenset()
    return IsolcpusSetting(cpus, frozenset(flags) if flags else frozenset({"domain"}))


def isolated_cpus(*, procfs_root: str = "/proc", sysfs_root: str = "/sys") -> frozenset[int]:
    """CPUs isolated from the scheduler: ``<sysfs>/devices/system/cpu/isolated`` ∪ ``isolcpus=``.

    Availability: Linux.
    """
    cpu_dir = Path(sysfs_root) / "devices" / "system" / "cpu"
    possible = online_cpus(sysfs_root=sysfs_root)
    result = _cpulist_param(_read(cpu_dir / "isolated"), possible)
    value = parse_kernel_cmdline(read_kernel_cmdline(procfs_root=procfs_root)).get("isolcpus")
    if value:
        result |= parse_isolcpus(value).cpus
    return result


def _parse_limit(field_text: str) -> Limit | None:
    if field_text == "unlimited":
        return "unlimited"
    try:
        return int(field_text)
    except ValueError:
        return None


def _resource_fallback() -> ResourceLimits:
    def conv(v: int) -> Limit:
        return "unlimited" if v == resource.RLIM_INFINITY else int(v)

    ms, mh = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    rs, rh = resource.getrlimit(resource.RLIMIT_RTPRIO)
    return ResourceLimits(conv(ms), conv(mh), conv(rs), conv(rh))


def resource_limits(pid: int | str = "self", *, procfs_root: str = "/proc") -> ResourceLimits:
    """RLIMIT_MEMLOCK and RLIMIT_RTPRIO from ``<procfs>/<pid>/limits``.

    Falls back to :mod:`resource` for the calling process when the file is
    unreadable and ``procfs_root`` is the real ``/proc``.

    Availability: Linux.
    """
    text = _read(Path(procfs_root) / str(pid) / "limits")
    if text is None:
        if procfs_root == "/proc" and pid in ("self", os.getpid()):
            return _resource_fallback()
        return ResourceLimits(None, None, None, None)
    found: dict[str, tuple[Limit | None, Limit | None]] = {}
    for line in text.splitlines():
        for label, key in (("Max locked memory", "memlock"), ("Max realtime priority", "rtprio")):
            if line.startswith(label):
                rest = line[len(label) :].split()
                if len(rest) >= 2:
                    found[key] = (_parse_limit(rest[0]), _parse_limit(rest[1]))
    memlock = found.get("memlock", (None, None))
    rtprio = found.get("rtprio", (None, None))
    return ResourceLimits(memlock[0], memlock[1], rtprio[0], rtprio[1])


def effective_capabilities(pid: int | str = "self", *, procfs_root: str = "/proc") -> int | None:
    """The ``CapEff`` bitmask from ``<procfs>/<pid>/status``; None when unreadable.

    Availability: Linux.
    """
    text = _read(Path(procfs_root) / str(pid) / "status") or ""
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                return None
    return None


def process_cpus_allowed(
    pid: int | str = "self", *, procfs_root: str = "/proc"
) -> frozenset[int] | None:
    """CPUs a process may run on: ``sched_getaffinity`` for real, else ``Cpus_allowed_list``.

    Availability: Linux.
    """
    if procfs_root == "/proc":
        try:
            target = 0 if pid == "self" else int(pid)
            return frozenset(os.sched_getaffinity(target))
        except (OSError, ValueError):
            pass
    text = _read(Path(procfs_root) / str(pid) / "status") or ""
    for line in text.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            try:
                return parse_cpulist(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


def _parse_hex_mask(text: str) -> frozenset[int] | None:
    digits = text.strip().replace(",", "")
    if not digits:
        return None
    try:
        value = int(digits, 16)
    except ValueError:
        return None
    return frozenset(i for i in range(value.bit_length()) if value >> i & 1)


def irq_affinities(*, procfs_root: str = "/proc") -> tuple[IrqAffinity, ...]:
    """Affinity of every interrupt under ``<procfs>/irq``.

    Availability: Linux; reading is unprivileged.
    """
    base = Path(procfs_root) / "irq"
    result: list[IrqAffinity] = []
    try:
        entries = sorted(
            (int(p.name), p) for p in base.iterdir() if p.name.isdigit() and p.is_dir()
        )
    except OSError:
        return ()
    for irq, path in entries:
        text = _read(path / "smp_affinity_list")
        if text is None:
            continue
        try:
            affinity = parse_cpulist(text)
        except ValueError:
            continue
        eff_text = _read(path / "effective_affinity_list")
        effective: frozenset[int] | None = None
        if eff_text is not None and eff_text.strip():
            try:
                effective = parse_cpulist(eff_text)
            except ValueError:
                effective = None
        try:
            names = tuple(sorted(p.name for p in path.iterdir() if p.is_dir()))
        except OSError:
            names = ()
        result.append(IrqAffinity(irq, names, affinity, effective))
    return tuple(result)


def kernel_info(*, procfs_root: str = "/proc", sysfs_root: str = "/sys") -> KernelInfo:
    """Kernel release, version string and preemption model.

    PREEMPT_RT: ``<sysfs>/kernel/realtime`` is 1, or the version string says
    ``PREEMPT_RT``. The version comes from ``<procfs>/sys/kernel/version``
    (``os.uname()`` when unreadable and the roots are real).

    Availability: Linux.
    """
    kdir = Path(procfs_root) / "sys" / "kernel"
    release = (_read(kdir / "osrelease") or "").strip()
    version = (_read(kdir / "version") or "").strip()
    if not version and procfs_root == "/proc":
        uts = os.uname()
        release, version = release or uts.release, uts.version
    realtime = _read_int(Path(sysfs_root) / "kernel" / "realtime") == 1
    preempt_rt = realtime or "PREEMPT_RT" in version.split()
    preempt_dynamic = "PREEMPT_DYNAMIC" in version.split()
    mode: str | None = None
    dbg = _read(Path(sysfs_root) / "kernel" / "debug" / "sched" / "preempt")
    if dbg:
        m = re.search(r"\((\w+)\)", dbg)
        mode = m.group(1) if m else None
    if mode is None:
        mode = parse_kernel_cmdline(read_kernel_cmdline(procfs_root=procfs_root)).get("preempt")
    if preempt_rt and mode is None:
        mode = "full"
    return KernelInfo(release, version, preempt_rt, preempt_dynamic, mode)


def _virtualized(procfs_root: str) -> bool | None:
    text = _read(Path(procfs_root) / "cpuinfo")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return "hypervisor" in line.split()
    return None


def _default_clock_status() -> ClockStatus:
    try:
        from mxrc._core import clock  # type: ignore[attr-defined, unused-ignore]

        status = clock.sync_status()
    except Exception as exc:  # the core may be missing or older
        return {"synchronized": None, "error": f"clock status unavailable: {exc}"}
    return dict(status)


# ---------------------------------------------------------------- checks


def _fmt(cpus: Iterable[int]) -> str:
    return format_cpulist(cpus) or "none"


def _hex_mask(cpus: Iterable[int]) -> str:
    value = 0
    for c in cpus:
        value |= 1 << c
    return f"{value:x}"


def _limit_text(limit: Limit | None, unit: str = "") -> str:
    if limit is None:
        return "unknown"
    if limit == "unlimited":
        return "unlimited"
    if unit == "bytes":
        if limit >= 1 << 20 and limit % (1 << 20) == 0:
            return f"{limit >> 20} MiB"
        if limit >= 1 << 10 and limit % (1 << 10) == 0:
            return f"{limit >> 10} KiB"
        return f"{limit} bytes"
    return str(limit)


def _check_allowed(rep: IsolationReport, out: list[Finding]) -> None:
    if rep.cpus_allowed is None:
        out.append(Finding("info", "cpus_allowed", "could not read the allowed CPUs"))
        return
    outside = rep.rt_cores - rep.cpus_allowed
    if outside:
        out.append(
            Finding(
                "error",
                "cpus_allowed",
                f"RT core(s) {_fmt(outside)} are not allowed: this process may run on "
                f"{_fmt(rep.cpus_allowed)} (affinity mask ∩ cgroup cpuset)",
                f"pick RT cores from {_fmt(rep.cpus_allowed)} (cpu_affinity.json rt.cpu_cores), "
                "or widen the systemd unit's CPUAffinity=/AllowedCPUs= or the cgroup's "
                "cpuset.cpus",
            )
        )
    else:
        out.append(
            Finding(
                "ok",
                "cpus_allowed",
                f"RT core(s) {_fmt(rep.rt_cores)} are within the allowed CPUs "
                f"{_fmt(rep.cpus_allowed)}",
            )
        )
    if rep.cpus_allowed and rep.cpus_allowed <= rep.rt_cores:
        out.append(
            Finding(
                "info",
                "housekeeping",
                f"every CPU this process may use ({_fmt(rep.cpus_allowed)}) is an RT core: "
                "right for a dedicated RT unit, but then the agent and other non-RT work "
                "must run in another cgroup",
                "run the agent (and anything else) outside this cpuset/CPUAffinity=",
            )
        )


def _kernel_params_advice(cores: frozenset[int]) -> str:
    c = _fmt(cores)
    return (
        f"add to the kernel command line: isolcpus=managed_irq,domain,{c} nohz_full={c} "
        f"rcu_nocbs={c} (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)"
    )


def _check_isolcpus(rep: IsolationReport, out: list[Finding]) -> None:
    rt = rep.rt_cores
    not_isolated = rt - rep.isolated_cpus
    if not_isolated:
        out.append(
            Finding(
                "warning",
                "isolcpus",
                f"RT core(s) {_fmt(not_isolated)} are not isolated "
                f"(isolated CPUs: {_fmt(rep.isolated_cpus)}): the scheduler also puts other "
                "tasks there",
                _kernel_params_advice(rt),
            )
        )
    else:
        flags = rep.isolcpus.flags if rep.isolcpus else frozenset()
        if rep.isolcpus is not None and "managed_irq" not in flags:
            out.append(
                Finding(
                    "info",
                    "isolcpus",
                    f"RT core(s) {_fmt(rt)} are isolated, but without managed_irq: "
                    "kernel-managed device interrupts may still run on them",
                    f"use isolcpus=managed_irq,domain,{_fmt(rt)}",
                )
            )
        else:
            out.append(Finding("ok", "isolcpus", f"RT core(s) {_fmt(rt)} are isolated"))
    if rep.isolated_cpus and rep.online_cpus and not rep.online_cpus - rep.isolated_cpus:
        out.append(
            Finding(
                "warning",
                "isolcpus",
                "every CPU is isolated: no CPU is left for housekeeping",
                "keep at least one CPU out of isolcpus=",
            )
        )
    for name, cpus in (("nohz_full", rep.nohz_full), ("rcu_nocbs", rep.rcu_nocbs)):
        missing = rt - cpus
        what = (
            "the scheduler tick still interrupts them"
            if name == "nohz_full"
            else "RCU callbacks still run on them"
        )
        if missing:
            out.append(
                Finding(
                    "info",
                    name,
                    f"RT core(s) {_fmt(missing)} are not in {name} ({_fmt(cpus)}): {what}",
                    f"add {name}={_fmt(rt)} to the kernel command line (needs a reboot)",
                )
            )
        else:
            out.append(Finding("ok", name, f"RT core(s) {_fmt(rt)} are in {name}"))


def _check_cpuset(rep: IsolationReport, out: list[Finding]) -> None:
    cs = rep.cpuset
    rt = rep.rt_cores
    c = _fmt(rt)
    if cs is None:
        out.append(
            Finding(
                "info",
                "cpuset",
                "no cpuset cgroup controller applies to this process",
                "for cgroup-based isolation, enable the cpuset controller (cgroup v2: "
                "echo +cpuset > /sys/fs/cgroup/cgroup.subtree_control)",
            )
        )
        return
    where = f"cgroup v{cs.version} cpuset {cs.cgroup_path}"
    outside = rt - cs.effective_cpus
    if outside:
        out.append(
            Finding(
                "error",
                "cpuset",
                f"RT core(s) {_fmt(outside)} are outside the {where} (effective CPUs "
                f"{_fmt(cs.effective_cpus)})",
                f"add them to {cs.directory}/cpuset.cpus or set AllowedCPUs= on the systemd unit",
            )
        )
        return
    if cs.cgroup_path == "/" or not cs.exclusive:
        if cs.version == 2:
            advice = (
                f"give the RT unit its own cpuset partition: AllowedCPUs={c} on the RT unit and "
                "AllowedCPUs=<the other CPUs> on system.slice and user.slice, or "
                f"echo {c} > <cgroup>/cpuset.cpus; echo isolated > <cgroup>/cpuset.cpus.partition"
            )
        else:
            advice = (
                "create an exclusive cpuset for the RT process: mkdir "
                f"{cs.directory.rstrip('/')}/rt; echo {c} > .../rt/cpuset.cpus; "
                "echo 0 > .../rt/cpuset.mems; echo 1 > .../rt/cpuset.cpu_exclusive; move the "
                "other tasks to a cpuset without these CPUs"
            )
        why = (
            "the process is in the root cpuset"
            if cs.cgroup_path == "/"
            else "the cpuset is not exclusive"
        )
        out.append(
            Finding(
                "info",
                "cpuset",
                f"RT core(s) {c} are in the {where} but {why}: other cgroups may use them",
                advice,
            )
        )
    else:
        out.append(
            Finding(
                "ok",
                "cpuset",
                f"RT core(s) {c} are in the exclusive {where}"
                + (f" (partition {cs.partition})" if cs.partition else ""),
            )
        )


def _check_rt_runtime(rep: IsolationReport, out: list[Finding]) -> None:
    runtime, period = rep.rt_runtime_us, rep.rt_period_us
    if runtime is None:
        out.append(Finding("info", "rt_throttling", "sched_rt_runtime_us unreadable"))
    elif runtime < 0:
        out.append(
            Finding(
                "info",
                "rt_throttling",
                "RT throttling is off (sched_rt_runtime_us = -1): a runaway SCHED_FIFO loop "
                "can starve everything else on its CPU",
                "keep the default (echo 950000 > /proc/sys/kernel/sched_rt_runtime_us) unless "
                "the RT cores are isolated and a watchdog covers a hung loop",
            )
        )
    elif runtime == 0:
        out.append(
            Finding(
                "error",
                "rt_throttling",
                "sched_rt_runtime_us is 0: real-time tasks get no CPU time",
                "echo 950000 > /proc/sys/kernel/sched_rt_runtime_us (kernel.sched_rt_runtime_us "
                "= 950000 in /etc/sysctl.d/)",
            )
        )
    else:
        share = runtime / period if period else None
        share_text = f" ({share:.2f} of each period)" if share is not None else ""
        out.append(
            Finding(
                "ok",
                "rt_throttling",
                f"RT throttling: real-time tasks may run {runtime} µs per {period} µs"
                f"{share_text}; a loop busier than that is stalled until the period ends",
            )
        )
    grp = rep.rt_group
    if grp is None:
        out.append(
            Finding(
                "ok",
                "rt_group_sched",
                "no RT group scheduling budget applies (only the global RT throttling)",
            )
        )
    elif grp.runtime_us == 0:
        out.append(
            Finding(
                "error",
                "rt_group_sched",
                f"cgroup {grp.cgroup_path} (cpu, v{grp.version}) has cpu.rt_runtime_us = 0: "
                "SCHED_FIFO fails with EPERM there, even for root (RT group scheduling)",
                f"echo 950000 > {grp.directory}/cpu.rt_runtime_us (set each parent cgroup first, "
                "from the top: a child's budget must fit in its parent's), or run the RT "
                f"process in the root cpu cgroup (echo $PID > {grp.mount_point}/cgroup.procs); "
                "in systemd units do not set CPUQuota=/CPUWeight= on RT units",
            )
        )
    else:
        out.append(
            Finding(
                "ok",
                "rt_group_sched",
                f"cgroup {grp.cgroup_path} (cpu, v{grp.version}) allows RT tasks "
                f"{grp.runtime_us} µs per {grp.period_us} µs",
            )
        )


def _check_governor(rep: IsolationReport, out: list[Finding]) -> None:
    missing = sorted(c for c, g in rep.governors.items() if g is None)
    slow = {c: g for c, g in rep.governors.items() if g is not None and g != "performance"}
    if missing:
        vm = " (typical for a virtual machine: the hypervisor sets the frequency)"
        out.append(
            Finding(
                "info",
                "cpufreq",
                f"no CPU frequency scaling on RT core(s) {_fmt(missing)}"
                + (vm if rep.virtualized is not False else ""),
                "nothing to set here; on bare metal also disable deep C-states",
            )
        )
    if slow:
        listing = ", ".join(f"CPU {c}: {g}" for c, g in sorted(slow.items()))
        out.append(
            Finding(
                "warning",
                "cpufreq",
                f"CPU frequency governor is not 'performance' on RT core(s) ({listing}): "
                "frequency ramps add latency",
                f"cpupower -c {_fmt(slow)} frequency-set -g performance (or echo performance > "
                "/sys/devices/system/cpu/cpuN/cpufreq/scaling_governor; persist it with a "
                "systemd unit)",
            )
        )
    ok = sorted(c for c, g in rep.governors.items() if g == "performance")
    if ok and not slow and not missing:
        out.append(Finding("ok", "cpufreq", f"governor 'performance' on RT core(s) {_fmt(ok)}"))


def _check_smt(rep: IsolationReport, out: list[Finding]) -> None:
    shared = {c: s for c, s in rep.smt_siblings.items() if s}
    if not shared:
        out.append(Finding("ok", "smt", "no RT core shares its physical core with a non-RT CPU"))
        return
    listing = ", ".join(f"{c} with {_fmt(s)}" for c, s in sorted(shared.items()))
    siblings = frozenset().union(*shared.values())
    out.append(
        Finding(
            "warning",
            "smt",
            f"RT core(s) share a physical core with non-RT CPUs ({listing}): work on a "
            "sibling slows the RT thread",
            f"keep CPU(s) {_fmt(siblings)} idle (add them to isolcpus= and give them no work), "
            "or disable SMT: nosmt on the kernel command line or "
            "echo off > /sys/devices/system/cpu/smt/control",
        )
    )


def _check_irqs(rep: IsolationReport, out: list[Finding]) -> None:
    rt = rep.rt_cores
    c = _fmt(rt)
    housekeeping = (rep.online_cpus - rt - rep.isolated_cpus) or (rep.online_cpus - rt)
    hk = _fmt(housekeeping) if housekeeping else "<a non-RT CPU>"
    if rep.irqs_on_rt_cores:
        shown = rep.irqs_on_rt_cores[:8]
        listing = ", ".join(
            f"{i.irq}" + (f" ({'/'.join(i.names)})" if i.names else "") for i in shown
        )
        more = len(rep.irqs_on_rt_cores) - len(shown)
        if more > 0:
            listing += f" and {more} more"
        out.append(
            Finding(
                "warning",
                "irq_affinity",
                f"{len(rep.irqs_on_rt_cores)} interrupt(s) may run on RT core(s) {c}: {listing}",
                f"for each IRQ: echo {hk} > /proc/irq/N/smp_affinity_list; stop irqbalance "
                f"using the RT cores (IRQBALANCE_BANNED_CPULIST={c} in /etc/default/irqbalance); "
                "isolcpus=managed_irq,... covers kernel-managed IRQs that cannot be moved",
            )
        )
    else:
        out.append(Finding("ok", "irq_affinity", f"no interrupt is routed to RT core(s) {c}"))
    dflt = rep.default_irq_affinity
    if dflt is not None and dflt & rt:
        mask = _hex_mask(housekeeping) if housekeeping else "<mask of non-RT CPUs>"
        out.append(
            Finding(
                "warning",
                "irq_affinity",
                f"new interrupts may be routed to RT core(s) {_fmt(dflt & rt)} "
                f"(/proc/irq/default_smp_affinity = {_fmt(dflt)})",
                f"echo {mask} > /proc/irq/default_smp_affinity",
            )
        )


def _check_limits(rep: IsolationReport, rt_priority: int | None, out: list[Finding]) -> None:
    lim = rep.limits
    memlock = lim.memlock_soft
    if rep.has_capability(CAP_IPC_LOCK):
        out.append(
            Finding(
                "ok",
                "memlock",
                f"CAP_IPC_LOCK: memory locking is not limited (RLIMIT_MEMLOCK "
                f"{_limit_text(memlock, 'bytes')} does not apply)",
            )
        )
    elif memlock == "unlimited":
        out.append(Finding("ok", "memlock", "RLIMIT_MEMLOCK is unlimited"))
    else:
        sev: Severity = "error" if memlock == 0 else "warning"
        out.append(
            Finding(
                sev,
                "memlock",
                f"RLIMIT_MEMLOCK is {_limit_text(memlock, 'bytes')} and the process lacks "
                "CAP_IPC_LOCK: locking the RT process's memory (mlockall) fails or later "
                "allocations fail once the limit is reached",
                "systemd: LimitMEMLOCK=infinity in the unit; or /etc/security/limits.conf: "
                "'@realtime - memlock unlimited' (and add the user to group realtime)",
            )
        )
    rtprio = lim.rtprio_soft
    if rep.has_capability(CAP_SYS_NICE):
        out.append(
            Finding(
                "ok",
                "rtprio",
                f"CAP_SYS_NICE: any real-time priority is allowed (RLIMIT_RTPRIO "
                f"{_limit_text(rtprio)} does not apply)",
            )
        )
        return
    need = rt_priority if rt_priority is not None else 1
    if rtprio == "unlimited" or (isinstance(rtprio, int) and rtprio >= need):
        out.append(Finding("ok", "rtprio", f"RLIMIT_RTPRIO is {_limit_text(rtprio)} (need {need})"))
        return
    target = max(need, 80)
    out.append(
        Finding(
            "error",
            "rtprio",
            f"RLIMIT_RTPRIO is {_limit_text(rtprio)} and the process lacks CAP_SYS_NICE: "
            f"SCHED_FIFO priority {need} is refused (EPERM)",
            f"systemd: LimitRTPRIO={target} in the unit (or AmbientCapabilities=CAP_SYS_NICE); "
            f"or /etc/security/limits.conf: '@realtime - rtprio {target}'",
        )
    )


def _check_kernel(rep: IsolationReport, out: list[Finding]) -> None:
    k = rep.kernel
    if k.preempt_rt:
        out.append(Finding("ok", "preempt_rt", f"PREEMPT_RT kernel {k.release}"))
    else:
        model = "PREEMPT_DYNAMIC" if k.preempt_dynamic else "non-RT"
        mode = f", preempt={k.preempt_mode}" if k.preempt_mode else ""
        advice = (
            "install a PREEMPT_RT kernel (Debian: linux-image-rt-amd64; Ubuntu: the realtime "
            "kernel); kernels since 6.12 can be built with CONFIG_PREEMPT_RT"
        )
        if k.preempt_dynamic and k.preempt_mode != "full":
            advice += "; meanwhile boot with preempt=full"
        out.append(
            Finding(
                "warning",
                "preempt_rt",
                f"kernel {k.release or '?'} is not PREEMPT_RT ({model}{mode}): worst-case "
                "latency is not bounded",
                advice,
            )
        )
    if rep.virtualized:
        out.append(
            Finding(
                "info",
                "virtualization",
                "running in a virtual machine: the hypervisor can pause this guest for "
                "milliseconds; maximum latency is the host's, not mxrc's",
                "for hard real time use bare metal, or pin and isolate the vCPUs on the host",
            )
        )


def _check_clock(rep: IsolationReport, out: list[Finding]) -> None:
    st = rep.clock
    synced = st.get("synchronized")
    if synced is True:
        maxerr = st.get("maxerror_us")
        out.append(
            Finding(
                "ok",
                "clock_sync",
                "system clock is synchronised"
                + (f" (max error {maxerr} µs)" if maxerr is not None else ""),
            )
        )
    elif synced is False:
        out.append(
            Finding(
                "warning",
                "clock_sync",
                "system clock is not synchronised (kernel reports STA_UNSYNC): timestamps in "
                "logs and cross-node traces do not line up",
                "enable NTP (chrony or systemd-timesyncd); for sub-microsecond alignment use "
                "PTP (linuxptp: ptp4l + phc2sys)",
            )
        )
    else:
        why = st.get("error") or "not read"
        out.append(Finding("info", "clock_sync", f"clock synchronisation unknown ({why})"))


def check_isolation(
    rt_cores: Iterable[int],
    *,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
    pid: int | str = "self",
    cpus_allowed: Iterable[int] | None = None,
    rt_priority: int | None = None,
    clock_status: Callable[[], ClockStatus] | None = None,
) -> IsolationReport:
    """Check how well ``rt_cores`` are isolated for real-time work on this host.

    ``cpus_allowed`` defaults to the process's affinity (``Cpus_allowed_list``
    on fake trees) ∩ its cpuset. ``rt_priority`` is the SCHED_FIFO priority the
    loop will ask for (checked against RLIMIT_RTPRIO). ``clock_status``
    returns a dict with ``synchronized`` (``mxrc._core.clock.sync_status`` by
    default, imported lazily; "unknown" when unavailable or when the roots
    are fake trees).

    Availability: Linux; reading is unprivileged.
    """
    rt = frozenset(rt_cores)
    if not rt:
        raise ValueError("rt_cores must name at least one CPU")
    if any(c < 0 for c in rt):
        raise ValueError(f"CPU numbers must be >= 0, got {sorted(rt)}")
    real = procfs_root == "/proc" and sysfs_root == "/sys"
    cmdline_text = read_kernel_cmdline(procfs_root=procfs_root)
    params = parse_kernel_cmdline(cmdline_text)
    online = online_cpus(sysfs_root=sysfs_root)
    cpu_dir = Path(sysfs_root) / "devices" / "system" / "cpu"
    possible_text = _read(cpu_dir / "possible")
    try:
        possible = parse_cpulist(possible_text) if possible_text else online
    except ValueError:
        possible = online

    isolated_text = _read(cpu_dir / "isolated")
    isolated_sysfs = _cpulist_param(isolated_text, possible) if isolated_text is not None else None
    isolcpus = parse_isolcpus(params["isolcpus"] or "") if "isolcpus" in params else None
    isolated = (isolated_sysfs or frozenset()) | (isolcpus.cpus if isolcpus else frozenset())

    nohz_text = _read(cpu_dir / "nohz_full")
    nohz: frozenset[int] = frozenset()
    if nohz_text is not None and "(null)" not in nohz_text:
        nohz = _cpulist_param(nohz_text, possible)
    nohz |= _cpulist_param(params.get("nohz_full"), possible)
    rcu_nocbs = _cpulist_param(params.get("rcu_nocbs"), possible)

    cpuset = cpuset_info(pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    if cpus_allowed is not None:
        allowed: frozenset[int] | None = frozenset(cpus_allowed)
    else:
        allowed = process_cpus_allowed(pid, procfs_root=procfs_root)
        if allowed is not None and cpuset is not None:
            allowed &= cpuset.effective_cpus

    kdir = Path(procfs_root) / "sys" / "kernel"
    governors: dict[int, str | None] = {}
    siblings: dict[int, frozenset[int]] = {}
    for core in sorted(rt):
        gov = _read(cpu_dir / f"cpu{core}" / "cpufreq" / "scaling_governor")
        governors[core] = gov.strip() if gov else None
        siblings[core] = smt_siblings(core, sysfs_root=sysfs_root) - rt

    irqs = tuple(i for i in irq_affinities(procfs_root=procfs_root) if i.affinity & rt)
    dflt_text = _read(Path(procfs_root) / "irq" / "default_smp_affinity")
    dflt = _parse_hex_mask(dflt_text) if dflt_text is not None else None

    if clock_status is None:
        clock: ClockStatus = (
            _default_clock_status()
            if real
            else {"synchronized": None, "error": "not read for a fake /proc tree"}
        )
    else:
        try:
            clock = dict(clock_status())
        except Exception as exc:
            clock = {"synchronized": None, "error": f"clock status failed: {exc}"}

    report = IsolationReport(
        rt_cores=rt,
        cpus_allowed=allowed,
        online_cpus=online,
        isolated_cpus=isolated,
        isolated_sysfs=isolated_sysfs,
        isolcpus=isolcpus,
        nohz_full=nohz,
        rcu_nocbs=rcu_nocbs,
        cgroup_version=cgroup_version(procfs_root=procfs_root, sysfs_root=sysfs_root),
        cpuset=cpuset,
        rt_group=rt_group_runtime(pid, procfs_root=procfs_root, sysfs_root=sysfs_root),
        rt_runtime_us=_read_int(kdir / "sched_rt_runtime_us"),
        rt_period_us=_read_int(kdir / "sched_rt_period_us"),
        governors=governors,
        smt_siblings=siblings,
        irqs_on_rt_cores=irqs,
        default_irq_affinity=dflt,
        limits=resource_limits(pid, procfs_root=procfs_root),
        capabilities_effective=effective_capabilities(pid, procfs_root=procfs_root),
        kernel=kernel_info(procfs_root=procfs_root, sysfs_root=sysfs_root),
        virtualized=_virtualized(procfs_root),
        clock=clock,
        cmdline=params,
    )
    findings: list[Finding] = []
    _check_allowed(report, findings)
    _check_isolcpus(report, findings)
    _check_cpuset(report, findings)
    _check_rt_runtime(report, findings)
    _check_governor(report, findings)
    _check_smt(report, findings)
    _check_irqs(report, findings)
    _check_limits(report, rt_priority, findings)
    _check_kernel(report, findings)
    _check_clock(report, findings)
    return _with_findings(report, findings)


def _with_findings(report: IsolationReport, findings: list[Finding]) -> IsolationReport:
    return replace(report, findings=tuple(findings))
