"""``mxrc doctor``: is this host ready to run a real-time loop on the RT cores?

:func:`run_doctor` combines the isolation checks, the capabilities and the
configuration (when given) into a :class:`DoctorReport` that renders as text
for a terminal or as one JSON object.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mxrc._capabilities import Capabilities, capabilities
from mxrc.rt._cgroup import _read, cpuset_effective
from mxrc.rt._cpulist import format_cpulist
from mxrc.rt._isolation import (
    Finding,
    IsolationReport,
    Severity,
    check_isolation,
    process_cpus_allowed,
)
from mxrc.rt._topology import NumaTopology, numa_topology

__all__ = ["DoctorReport", "allowed_cpus_for", "run_doctor"]

_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Configuration", frozenset({"isolation_mode"})),
    (
        "CPUs and isolation",
        frozenset(
            {
                "cpus_allowed",
                "housekeeping",
                "isolcpus",
                "nohz_full",
                "rcu_nocbs",
                "cpuset",
                "smt",
                "irq_affinity",
                "cpufreq",
            }
        ),
    ),
    (
        "Scheduling",
        frozenset({"sched_fifo", "sched_deadline", "rtprio", "rt_throttling", "rt_group_sched"}),
    ),
    ("Memory and NUMA", frozenset({"memlock", "numa", "numa_binding"})),
    ("Kernel and clock", frozenset({"preempt_rt", "virtualization", "clock_sync"})),
)

_MARKERS: Mapping[str, str] = {
    "error": "[ERROR]",
    "warning": "[WARN ]",
    "info": "[info ]",
    "ok": "[ ok  ]",
}
_ORDER: Mapping[str, int] = {"error": 0, "warning": 1, "info": 2, "ok": 3}


@dataclass(frozen=True)
class DoctorReport:
    """The readiness report: facts, capabilities and findings."""

    hostname: str
    rt_cores: frozenset[int]
    rt_cores_source: str
    config_dir: str | None
    cpus_allowed: frozenset[int] | None
    isolation: IsolationReport
    capabilities: Capabilities
    numa: NumaTopology
    findings: tuple[Finding, ...]

    def count(self, severity: Severity) -> int:
        """How many findings have ``severity``."""
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def exit_code(self) -> int:
        """1 when any finding is an error, else 0."""
        return 1 if self.count("error") else 0

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object (CPU sets as lists of ints, limits as ints or "unlimited")."""
        iso = self.isolation.to_dict()
        return {
            "hostname": self.hostname,
            "rt_cores": sorted(self.rt_cores),
            "rt_cores_source": self.rt_cores_source,
            "config_dir": self.config_dir,
            "cpus_allowed": None if self.cpus_allowed is None else sorted(self.cpus_allowed),
            "online_cpus": iso["online_cpus"],
            "isolated_cpus": iso["isolated_cpus"],
            "isolcpus_flags": iso["isolcpus_flags"],
            "nohz_full": iso["nohz_full"],
            "rcu_nocbs": iso["rcu_nocbs"],
            "rt_throttling": iso["rt_throttling"],
            "cgroup": iso["cgroup"],
            "preempt_rt": iso["preempt_rt"],
            "preempt_dynamic": iso["preempt_dynamic"],
            "preempt_mode": iso["preempt_mode"],
            "kernel_release": iso["kernel_release"],
            "kernel_version": iso["kernel_version"],
            "virtualized": iso["virtualized"],
            "memlock_limit": iso["memlock_limit"],
            "rtprio_limit": iso["rtprio_limit"],
            "numa_nodes": len(self.numa),
            "numa": {
                str(n.node_id): {
                    "cpus": sorted(n.cpus),
                    "memory_total_kb": n.memory_total_kb,
                    "distances": list(n.distances),
                }
                for n in self.numa.nodes.values()
            },
            "governors": iso["governors"],
            "smt_siblings": iso["smt_siblings"],
            "irqs_on_rt_cores": iso["irqs_on_rt_cores"],
            "default_irq_affinity": iso["default_irq_affinity"],
            "clock": iso["clock"],
            "capabilities": self.capabilities.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "summary": {s: self.count(s) for s in ("error", "warning", "info", "ok")},
        }

    def format_text(self) -> str:
        """A grouped, human-readable report for a terminal."""
        iso = self.isolation
        k = iso.kernel
        lines = [
            f"mxrc doctor: real-time readiness of {self.hostname}",
            f"  RT core(s): {format_cpulist(self.rt_cores)} ({self.rt_cores_source})",
            f"  CPUs allowed: {format_cpulist(self.cpus_allowed or ()) or 'unknown'}; "
            f"isolated: {format_cpulist(iso.isolated_cpus) or 'none'}; "
            f"NUMA nodes: {len(self.numa)}",
            f"  kernel {k.release or '?'} ({'PREEMPT_RT' if k.preempt_rt else 'not PREEMPT_RT'}"
            f"{', PREEMPT_DYNAMIC' if k.preempt_dynamic else ''}); cgroup {iso.cgroup_version}",
        ]
        if self.config_dir:
            lines.append(f"  config: {self.config_dir}")
        caps = ", ".join(
            f"{name} {'yes' if c.available else 'no'}" for name, c in self.capabilities.items()
        )
        lines.append(f"  capabilities: {caps}")
        placed: set[int] = set()
        for title, checks in _GROUPS:
            group = [
                (i, f) for i, f in enumerate(self.findings) if f.check in checks and i not in placed
            ]
            if not group:
                continue
            lines.append("")
            lines.append(title)
            for i, f in sorted(group, key=lambda p: (_ORDER[p[1].severity], p[0])):
                placed.add(i)
                lines.extend(_format_finding(f))
        rest = [f for i, f in enumerate(self.findings) if i not in placed]
        if rest:
            lines.append("")
            lines.append("Other")
            for f in sorted(rest, key=lambda f: _ORDER[f.severity]):
                lines.extend(_format_finding(f))
        lines.append("")
        lines.append(
            f"Summary: {self.count('error')} error(s), {self.count('warning')} warning(s), "
            f"{self.count('info')} note(s), {self.count('ok')} ok"
            + (": not ready" if self.exit_code else "")
        )
        return "\n".join(lines) + "\n"


def _format_finding(f: Finding) -> list[str]:
    out = [f"  {_MARKERS[f.severity]} {f.message}"]
    if f.advice and f.severity != "ok":
        out.append(f"          fix: {f.advice}")
    return out


def allowed_cpus_for(
    *, procfs_root: str = "/proc", sysfs_root: str = "/sys", pid: int | str = "self"
) -> frozenset[int] | None:
    """CPUs the process may use: start mask ∩ cpuset on the real host, status ∩ cpuset on fakes.

    Uses ``mxrc.rt._affinity.allowed_cpus`` for this process on the real host
    when it exists.

    Availability: Linux.
    """
    real = procfs_root == "/proc" and sysfs_root == "/sys" and pid in ("self", os.getpid())
    if real:
        try:
            from mxrc.rt import _affinity  # type: ignore[attr-defined, unused-ignore]

            return frozenset(_affinity.allowed_cpus())
        except (ImportError, AttributeError, OSError):
            pass
    allowed = process_cpus_allowed(pid, procfs_root=procfs_root)
    cpuset = cpuset_effective(pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    if allowed is not None and cpuset is not None:
        allowed &= cpuset
    return allowed


def _text(value: object) -> str:
    """A config value as text: an Enum's value, a string, or "" for None."""
    if value is None:
        return ""
    inner = getattr(value, "value", value)
    return str(inner)


def _config_findings(
    cfg: Any, rt_cores: frozenset[int], iso: IsolationReport, topo: NumaTopology
) -> list[Finding]:
    """Cross-check the configured RT settings against the host."""
    out: list[Finding] = []
    rt_cfg = getattr(getattr(cfg, "cpu_affinity", None), "rt", None)
    mode = _text(getattr(rt_cfg, "isolation_mode", None))
    not_isolated = rt_cores - iso.isolated_cpus
    fallback = getattr(rt_cfg, "fallback", None)
    tolerated = bool(getattr(fallback, "allow_non_isolated", False))
    if mode in ("ISOLCPUS", "HYBRID") and not_isolated:
        out.append(
            Finding(
                "warning" if tolerated else "error",
                "isolation_mode",
                f"rt.isolation_mode is {mode} but RT core(s) {format_cpulist(not_isolated)} "
                "are not isolated"
                + (" (rt.fallback.allow_non_isolated lets it run anyway)" if tolerated else ""),
                "add isolcpus=managed_irq,domain,"
                f"{format_cpulist(rt_cores)} to the kernel command line and reboot, or set "
                "rt.isolation_mode to NONE or CGROUPS in cpu_affinity.json",
            )
        )
    if mode in ("CGROUPS", "HYBRID") and (
        iso.cpuset is None or iso.cpuset.cgroup_path == "/" or not iso.cpuset.exclusive
    ):
        out.append(
            Finding(
                "warning",
                "isolation_mode",
                f"rt.isolation_mode is {mode} but this process has no exclusive cpuset for "
                f"RT core(s) {format_cpulist(rt_cores)}",
                "run the RT process in a cgroup with its own cpuset (systemd AllowedCPUs=, "
                "cpuset.cpus.partition=isolated on cgroup v2)",
            )
        )
    numa_cfg = getattr(getattr(cfg, "numa_binding", None), "rt", None)
    node = getattr(numa_cfg, "numa_node", None)
    if isinstance(node, int) and len(topo) > 1:
        if node not in topo.nodes:
            out.append(
                Finding(
                    "error",
                    "numa_binding",
                    f"rt.numa_node {node} does not exist (nodes: "
                    f"{', '.join(map(str, topo.node_ids))})",
                    "set numa_binding.json rt.numa_node to an existing node",
                )
            )
        else:
            off = frozenset(c for c in rt_cores if topo.node_of_cpu(c) != node)
            if off:
                out.append(
                    Finding(
                        "warning",
                        "numa_binding",
                        f"RT core(s) {format_cpulist(off)} are not on rt.numa_node {node} "
                        f"(CPUs {format_cpulist(topo.nodes[node].cpus)}): memory is remote",
                        "pick RT cores on the bound node or bind memory to the RT cores' node",
                    )
                )
            else:
                out.append(
                    Finding(
                        "ok",
                        "numa_binding",
                        f"RT core(s) {format_cpulist(rt_cores)} are on rt.numa_node {node}",
                    )
                )
    return out


def _capability_findings(caps: Capabilities, topo: NumaTopology) -> list[Finding]:
    out: list[Finding] = []
    fifo = caps.get("sched_fifo")
    if fifo is not None:
        if fifo.available:
            out.append(Finding("ok", "sched_fifo", f"SCHED_FIFO allowed: {fifo.reason}"))
        else:
            out.append(
                Finding(
                    "error",
                    "sched_fifo",
                    f"SCHED_FIFO is not allowed: {fifo.reason}",
                    "see the rtprio and rt_group_sched checks for the setting to change",
                )
            )
    numa = caps.get("numa")
    if numa is not None:
        sev: Severity = "ok" if numa.available else "info"
        if numa.available and len(topo) < 2:
            sev = "info"
        out.append(Finding(sev, "numa", numa.reason))
    return out


def run_doctor(
    *,
    rt_cores: Iterable[int] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    rt_priority: int | None = None,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
    pid: int | str = "self",
    probe: bool | None = None,
    clock_status: Callable[[], Mapping[str, object]] | None = None,
    use_config: bool = True,
    environ: Mapping[str, str] | None = None,
) -> DoctorReport:
    """Check this host's readiness for an RT loop on ``rt_cores``.

    The configuration is loaded with ``mxrc.config.load_config(config_dir)``
    (None: ``MXRC_CONFIG_DIR`` or defaults; ``environ`` supplies the
    ``MXRC_*`` overrides) unless ``use_config`` is False and no
    ``config_dir`` is given; an invalid one raises ``mxrc.ConfigError``.
    RT cores come from ``rt_cores``, else ``rt.cpu_cores`` of the
    configuration, else the highest allowed CPU. ``probe`` and
    ``clock_status`` are passed to :func:`mxrc.capabilities` and
    :func:`~mxrc.rt._isolation.check_isolation`.

    Availability: Linux.
    """
    allowed = allowed_cpus_for(procfs_root=procfs_root, sysfs_root=sysfs_root, pid=pid)
    real = procfs_root == "/proc" and sysfs_root == "/sys"
    cfg: Any = None
    config_module: Any = None
    if use_config or config_dir is not None:
        try:
            import mxrc.config as config_module
        except ImportError:
            if config_dir is not None:
                raise
    if config_module is not None:
        # On fake trees the loader's host checks would mix the real start mask with the
        # fake cpuset; the doctor's own findings cover those checks there.
        cfg = config_module.load_config(
            None if config_dir is None else os.fspath(config_dir),
            environ=environ,
            check_host=real,
            procfs_root=procfs_root,
            sysfs_root=sysfs_root,
        )
    rt_cfg = None if cfg is None else cfg.cpu_affinity.rt
    if rt_cores is not None:
        cores = frozenset(rt_cores)
        source = "given on the command line"
    elif rt_cfg is not None and rt_cfg.cpu_cores is not None:
        cores = frozenset(rt_cfg.cpu_cores)
        source = "from cpu_affinity.json rt.cpu_cores"
    else:
        if not allowed:
            raise ValueError("cannot determine the allowed CPUs; pass the RT cores explicitly")
        cores = frozenset({max(allowed)})
        source = "auto: highest allowed CPU"
    if rt_priority is None and rt_cfg is not None:
        prio = getattr(rt_cfg, "priority", None)
        if isinstance(prio, int) and _text(rt_cfg.policy) in ("SCHED_FIFO", "SCHED_RR"):
            rt_priority = prio
    iso = check_isolation(
        cores,
        procfs_root=procfs_root,
        sysfs_root=sysfs_root,
        pid=pid,
        cpus_allowed=allowed,
        rt_priority=rt_priority,
        clock_status=clock_status,
    )
    caps = capabilities(procfs_root=procfs_root, sysfs_root=sysfs_root, pid=pid, probe=probe)
    topo = numa_topology(sysfs_root=sysfs_root)
    findings = list(iso.findings)
    if cfg is not None:
        findings[:0] = _config_findings(cfg, cores, iso, topo)
    findings.extend(_capability_findings(caps, topo))
    hostname_text = None
    if procfs_root != "/proc":
        hostname_text = _read(os.path.join(procfs_root, "sys", "kernel", "hostname"))
    hostname = (hostname_text or "").strip() or socket.gethostname()
    return DoctorReport(
        hostname=hostname,
        rt_cores=cores,
        rt_cores_source=source,
        config_dir=None if config_dir is None else os.fspath(config_dir),
        cpus_allowed=allowed,
        isolation=iso,
        capabilities=caps,
        numa=topo,
        findings=tuple(findings),
    )
