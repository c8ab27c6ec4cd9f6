"""What this machine and these privileges let mxrc do, each with a reason.

:func:`capabilities` returns a read-only mapping ``name -> Capability``. On the
real ``/proc`` and ``/sys`` it probes where probing is cheap and harmless
(SCHED_FIFO is tried on a short-lived thread and undone); on fake trees it
infers from the files and says so in the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mxrc.rt._cgroup import _read, cpuset_effective, rt_group_runtime
from mxrc.rt._cpulist import format_cpulist
from mxrc.rt._isolation import (
    CAP_IPC_LOCK,
    CAP_SYS_NICE,
    Limit,
    _limit_text,
    effective_capabilities,
    isolated_cpus,
    kernel_info,
    parse_isolcpus,
    parse_kernel_cmdline,
    process_cpus_allowed,
    read_kernel_cmdline,
    resource_limits,
)
from mxrc.rt._topology import numa_topology, online_cpus

__all__ = ["Capabilities", "Capability", "capabilities"]


@dataclass(frozen=True)
class Capability:
    """Whether mxrc can use one feature here, and why (or why not).

    ``details`` holds the facts behind the verdict (JSON-ready values).
    """

    name: str
    available: bool
    reason: str
    details: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"available": self.available, "reason": self.reason, **dict(self.details)}


class Capabilities(Mapping[str, Capability]):
    """Read-only mapping of capability name to :class:`Capability`."""

    def __init__(self, items: Mapping[str, Capability]) -> None:
        self._items = MappingProxyType(dict(items))

    def __getitem__(self, key: str) -> Capability:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={'yes' if v.available else 'no'}" for k, v in self._items.items())
        return f"Capabilities({inner})"

    def to_dict(self) -> dict[str, dict[str, object]]:
        """A JSON-ready dict of dicts."""
        return {k: v.to_dict() for k, v in self._items.items()}


def _has(cap_eff: int | None, cap: int) -> bool:
    return cap_eff is not None and bool(cap_eff >> cap & 1)


def _probe_sched_fifo() -> OSError | None:
    """Try SCHED_FIFO priority 1 on a short-lived thread; None on success."""
    outcome: list[OSError | None] = []

    def target() -> None:
        tid = threading.get_native_id()
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
        except OSError as exc:
            outcome.append(exc)
            return
        with contextlib.suppress(OSError):  # the thread ends right away either way
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        outcome.append(None)

    thread = threading.Thread(target=target, name="mxrc-sched-fifo-probe", daemon=True)
    thread.start()
    thread.join(5.0)
    if not outcome:
        return OSError(errno.ETIMEDOUT, "SCHED_FIFO probe thread did not finish")
    return outcome[0]


def _fifo_blockers(
    cap_eff: int | None,
    rtprio: object,
    procfs_root: str,
    sysfs_root: str,
    pid: int | str,
) -> list[str]:
    """Reasons from the files why SCHED_FIFO would be refused (empty: none found)."""
    blockers: list[str] = []
    if not _has(cap_eff, CAP_SYS_NICE) and (rtprio == 0 or rtprio is None):
        blockers.append(
            f"RLIMIT_RTPRIO is {rtprio if rtprio is not None else 'unknown'} and the process "
            "lacks CAP_SYS_NICE (set LimitRTPRIO= in the systemd unit or an rtprio line in "
            "/etc/security/limits.conf)"
        )
    grp = rt_group_runtime(pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    if grp is not None and grp.runtime_us == 0:
        blockers.append(
            f"RT group scheduling: cgroup {grp.cgroup_path} has cpu.rt_runtime_us = 0 "
            f"(echo 950000 > {grp.directory}/cpu.rt_runtime_us, parents first)"
        )
    glob = _read(Path(procfs_root) / "sys" / "kernel" / "sched_rt_runtime_us")
    if glob is not None and glob.strip() == "0":
        blockers.append("sched_rt_runtime_us is 0 (no RT time at all)")
    return blockers


def _sched_fifo(
    cap_eff: int | None,
    rtprio: object,
    *,
    procfs_root: str,
    sysfs_root: str,
    pid: int | str,
    probe: bool,
) -> Capability:
    blockers = _fifo_blockers(cap_eff, rtprio, procfs_root, sysfs_root, pid)
    why_ok = (
        "CAP_SYS_NICE"
        if _has(cap_eff, CAP_SYS_NICE)
        else f"RLIMIT_RTPRIO {rtprio} allows priorities up to {rtprio}"
    )
    details: dict[str, object] = {"probed": probe, "rtprio_limit": rtprio}
    if not probe:
        if blockers:
            return Capability("sched_fifo", False, "; ".join(blockers) + " (inferred)", details)
        return Capability(
            "sched_fifo", True, f"{why_ok}; no RT group limit found (inferred, not probed)", details
        )
    error = _probe_sched_fifo()
    if error is None:
        return Capability(
            "sched_fifo",
            True,
            f"probe: a thread switched to SCHED_FIFO priority 1 and back ({why_ok})",
            details,
        )
    details["errno"] = errno.errorcode.get(error.errno or 0, str(error.errno))
    if error.errno == errno.EPERM:
        cause = (
            "; ".join(blockers)
            if blockers
            else "no cause found in the limits or cgroup files; with cgroup v2 and a kernel "
            "built with CONFIG_RT_GROUP_SCHED, SCHED_FIFO is refused in any cgroup where the "
            "cpu controller is enabled (run the RT process in a cgroup without it: no "
            "CPUQuota=/CPUWeight= on its unit and its slices)"
        )
        return Capability("sched_fifo", False, f"probe: EPERM: {cause}", details)
    return Capability("sched_fifo", False, f"probe failed: {error}", details)


def _sched_deadline(
    cap_eff: int | None,
    allowed: frozenset[int] | None,
    procfs_root: str,
    sysfs_root: str,
) -> Capability:
    note = (
        "only for unpinned threads: the kernel refuses SCHED_DEADLINE for a thread pinned to a "
        "subset of its root domain's CPUs, so mxrc rejects it together with RT cores"
    )
    if not _has(cap_eff, CAP_SYS_NICE):
        return Capability(
            "sched_deadline",
            False,
            "needs CAP_SYS_NICE (RLIMIT_RTPRIO does not grant SCHED_DEADLINE); " + note,
        )
    params = parse_kernel_cmdline(read_kernel_cmdline(procfs_root=procfs_root))
    domain_isolated: frozenset[int] = frozenset()
    if params.get("isolcpus"):
        setting = parse_isolcpus(params["isolcpus"] or "")
        if "domain" in setting.flags:
            domain_isolated = setting.cpus
    span = online_cpus(sysfs_root=sysfs_root) - domain_isolated
    if allowed is not None and span and not span <= allowed:
        return Capability(
            "sched_deadline",
            False,
            f"this process may run only on CPUs {format_cpulist(allowed)}, a subset of the "
            f"scheduling domain {format_cpulist(span)}; " + note,
        )
    return Capability("sched_deadline", True, "CAP_SYS_NICE (not probed); " + note)


def _mlock(cap_eff: int | None, memlock: Limit | None) -> Capability:
    details: dict[str, object] = {"memlock_limit": memlock}
    if _has(cap_eff, CAP_IPC_LOCK):
        return Capability("mlock", True, "CAP_IPC_LOCK: locked memory is not limited", details)
    if memlock == "unlimited":
        return Capability("mlock", True, "RLIMIT_MEMLOCK is unlimited", details)
    return Capability(
        "mlock",
        False,
        f"RLIMIT_MEMLOCK is {_limit_text(memlock, 'bytes')} and the process lacks "
        "CAP_IPC_LOCK: locking a Python RT process (tens of MiB) fails; set "
        "LimitMEMLOCK=infinity in the systemd unit or '@realtime - memlock unlimited' in "
        "/etc/security/limits.conf",
        details,
    )


def _probe_mempolicy() -> tuple[bool | None, str]:
    """Call get_mempolicy through the core: (works?, policy text); None when no core."""
    try:
        from mxrc.rt._mempolicy import get_memory_policy
    except ImportError:
        return None, ""
    try:
        policy, nodes = get_memory_policy()
    except OSError as exc:
        return False, str(exc)
    return True, f"{policy.value}" + (f" {format_cpulist(nodes)}" if nodes else "")


def _numa(procfs_root: str, sysfs_root: str, pid: int | str, probe: bool) -> Capability:
    topo = numa_topology(sysfs_root=sysfs_root)
    count = len(topo)
    details: dict[str, object] = {"nodes": count, "node_ids": list(topo.node_ids)}
    has_numa = (Path(procfs_root) / str(pid) / "numa_maps").exists() or (
        Path(sysfs_root) / "devices" / "system" / "node"
    ).is_dir()
    if probe:
        works, text = _probe_mempolicy()
        if works is False:
            details["probe_error"] = text
            return Capability(
                "numa",
                False,
                f"get_mempolicy failed ({text}): memory policy calls are not available",
                details,
            )
        if works:
            details["memory_policy"] = text
            has_numa = True
    if not has_numa:
        return Capability(
            "numa",
            False,
            "kernel without NUMA support (no numa_maps, no node directory): memory policy "
            "calls (set_mempolicy, mbind) are not available",
            details,
        )
    if count < 2:
        return Capability(
            "numa",
            True,
            f"{count} NUMA node: memory policy calls work but change nothing; residency "
            "sampling is skipped",
            details,
        )
    layout = ", ".join(
        f"node {n.node_id}: CPUs {format_cpulist(n.cpus) or 'none'}" for n in topo.nodes.values()
    )
    return Capability(
        "numa",
        True,
        f"{count} NUMA nodes ({layout}); set_mempolicy/mbind available",
        details,
    )


def _timer_slack(procfs_root: str, pid: int | str, real: bool) -> Capability:
    text = _read(Path(procfs_root) / str(pid) / "timerslack_ns")
    if text is not None and text.strip().isdigit():
        return Capability(
            "timer_slack",
            True,
            f"timer slack is {int(text)} ns; mxrc sets 1 ns on cycle threads (PR_SET_TIMERSLACK)",
            {"timer_slack_ns": int(text)},
        )
    if real:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            value = int(libc.prctl(30, 0, 0, 0, 0))  # PR_GET_TIMERSLACK
        except (OSError, AttributeError):
            value = -1
        if value >= 0:
            return Capability(
                "timer_slack",
                True,
                f"timer slack is {value} ns; mxrc sets 1 ns on cycle threads",
                {"timer_slack_ns": value},
            )
    return Capability(
        "timer_slack",
        False,
        "timer slack unreadable (no timerslack_ns; kernel older than 4.6?): sleeps may wake up "
        "to 50 µs late",
    )


def capabilities(
    *,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
    pid: int | str = "self",
    probe: bool | None = None,
) -> Capabilities:
    """Report what mxrc can use here: affinity, sched_fifo, sched_deadline, mlock,
    numa, rt_kernel, isolation, timer_slack.

    ``probe`` (default: only when both roots are the real ``/proc`` and
    ``/sys`` and ``pid`` is this process) runs harmless real probes, e.g. a
    short-lived thread that switches to SCHED_FIFO and back. Without probing
    the verdicts are inferred from limits, capabilities and cgroup files.

    Availability: Linux.
    """
    real = procfs_root == "/proc" and sysfs_root == "/sys" and pid in ("self", os.getpid())
    do_probe = real if probe is None else probe
    cap_eff = effective_capabilities(pid, procfs_root=procfs_root)
    limits = resource_limits(pid, procfs_root=procfs_root)
    allowed = process_cpus_allowed(pid, procfs_root=procfs_root)
    cpuset = cpuset_effective(pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    if allowed is not None and cpuset is not None:
        allowed &= cpuset
    if real:
        try:
            from mxrc.rt import _affinity  # type: ignore[attr-defined, unused-ignore]

            allowed = frozenset(_affinity.allowed_cpus())
        except (ImportError, AttributeError, OSError):
            pass

    result: dict[str, Capability] = {}
    if allowed:
        note = "" if len(allowed) > 1 else "; only one CPU: RT and non-RT work share it"
        result["affinity"] = Capability(
            "affinity",
            True,
            f"threads can be pinned to CPUs {format_cpulist(allowed)} "
            f"(affinity mask ∩ cgroup cpuset){note}",
            {"cpus_allowed": sorted(allowed)},
        )
    else:
        result["affinity"] = Capability(
            "affinity", False, "the allowed CPU set is unknown or empty", {"cpus_allowed": []}
        )
    result["sched_fifo"] = _sched_fifo(
        cap_eff,
        limits.rtprio_soft,
        procfs_root=procfs_root,
        sysfs_root=sysfs_root,
        pid=pid,
        probe=do_probe,
    )
    result["sched_deadline"] = _sched_deadline(cap_eff, allowed, procfs_root, sysfs_root)
    result["mlock"] = _mlock(cap_eff, limits.memlock_soft)
    result["numa"] = _numa(procfs_root, sysfs_root, pid, do_probe)
    kern = kernel_info(procfs_root=procfs_root, sysfs_root=sysfs_root)
    if kern.preempt_rt:
        result["rt_kernel"] = Capability(
            "rt_kernel", True, f"PREEMPT_RT kernel {kern.release}", {"release": kern.release}
        )
    else:
        model = "PREEMPT_DYNAMIC" if kern.preempt_dynamic else "not PREEMPT_RT"
        result["rt_kernel"] = Capability(
            "rt_kernel",
            False,
            f"kernel {kern.release or '?'} is {model}: worst-case latency is not bounded; "
            "install a PREEMPT_RT kernel",
            {"release": kern.release, "preempt_dynamic": kern.preempt_dynamic},
        )
    iso = isolated_cpus(procfs_root=procfs_root, sysfs_root=sysfs_root)
    if iso:
        result["isolation"] = Capability(
            "isolation",
            True,
            f"CPUs {format_cpulist(iso)} are isolated from the scheduler",
            {"isolated_cpus": sorted(iso)},
        )
    else:
        result["isolation"] = Capability(
            "isolation",
            False,
            "no isolated CPUs (no isolcpus= on the kernel command line): RT cores share "
            "their CPUs with other tasks",
            {"isolated_cpus": []},
        )
    result["timer_slack"] = _timer_slack(procfs_root, pid, real)
    return Capabilities(result)
