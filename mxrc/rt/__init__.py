"""Real-time system layer: affinity, scheduling, memory, NUMA, isolation.

Everything here acts on or reads the host: per-thread CPU affinity and
scheduling, memory locking and prefaulting, NUMA memory policy, and readers
of ``/proc`` and ``/sys`` (cgroups, topology, page residency, isolation) that
take their roots as parameters so tests can hand them fake trees.
"""

from __future__ import annotations

# _affinity first: it records the CPU mask the process started with.
from mxrc.rt._affinity import (
    allowed_cpus,
    get_process_affinity,
    get_thread_affinity,
    pinned,
    restore_affinity,
    set_process_affinity,
    set_thread_affinity,
    start_cpus,
    validate_cpus,
)
from mxrc.rt._bodies import BuiltinBody, NativeBody
from mxrc.rt._cgroup import (
    CgroupVersion,
    CpusetInfo,
    RtGroupRuntime,
    cgroup_version,
    cpuset_effective,
    cpuset_info,
    rt_group_runtime,
)
from mxrc.rt._cpulist import format_cpulist, parse_cpulist
from mxrc.rt._executive import ErrorPolicy, Executive, OverrunPolicy
from mxrc.rt._isolation import (
    Finding,
    IsolationReport,
    KernelInfo,
    ResourceLimits,
    check_isolation,
    isolated_cpus,
    kernel_info,
    resource_limits,
)
from mxrc.rt._memory import (
    get_timer_slack_ns,
    lock_memory,
    prefault,
    prefault_stack,
    set_timer_slack_ns,
    unlock_memory,
)
from mxrc.rt._mempolicy import (
    MemoryPolicy,
    allowed_memory_nodes,
    bind_memory,
    buffer_memory_policy,
    buffer_node,
    get_memory_policy,
    migrate_pages,
    set_memory_policy,
)
from mxrc.rt._perf import CycleStats, LatencyHistogram, PerfMonitor, PerfReport, read_stats
from mxrc.rt._placement import ThreadPlacement, thread_placement
from mxrc.rt._reconfig import (
    ConfigWatcher,
    LiveSettings,
    ReconfigEvent,
    ReconfigResult,
    read_live_settings,
    reconfigure_thread,
)
from mxrc.rt._residency import (
    DEFAULT_REMOTE_WARNING_RATIO,
    PageResidency,
    ResidencySample,
    page_residency,
    parse_numa_maps,
    sample_page_residency,
)
from mxrc.rt._sched import (
    SchedParams,
    SchedPolicy,
    get_scheduler,
    priority_range,
    set_deadline,
    set_scheduler,
)
from mxrc.rt._setup import SETUP_STEPS, SetupReport, ThreadSetup, apply_thread_setup
from mxrc.rt._state import RtState
from mxrc.rt._topology import NumaNode, NumaTopology, numa_topology, online_cpus, smt_siblings

__all__ = [
    "DEFAULT_REMOTE_WARNING_RATIO",
    "SETUP_STEPS",
    "BuiltinBody",
    "CgroupVersion",
    "ConfigWatcher",
    "CpusetInfo",
    "CycleStats",
    "ErrorPolicy",
    "Executive",
    "Finding",
    "IsolationReport",
    "KernelInfo",
    "LatencyHistogram",
    "LiveSettings",
    "MemoryPolicy",
    "NativeBody",
    "NumaNode",
    "NumaTopology",
    "OverrunPolicy",
    "PageResidency",
    "PerfMonitor",
    "PerfReport",
    "ReconfigEvent",
    "ReconfigResult",
    "ResidencySample",
    "ResourceLimits",
    "RtGroupRuntime",
    "RtState",
    "SchedParams",
    "SchedPolicy",
    "SetupReport",
    "ThreadPlacement",
    "ThreadSetup",
    "allowed_cpus",
    "allowed_memory_nodes",
    "apply_thread_setup",
    "bind_memory",
    "buffer_memory_policy",
    "buffer_node",
    "cgroup_version",
    "check_isolation",
    "cpuset_effective",
    "cpuset_info",
    "format_cpulist",
    "get_memory_policy",
    "get_process_affinity",
    "get_scheduler",
    "get_thread_affinity",
    "get_timer_slack_ns",
    "isolated_cpus",
    "kernel_info",
    "lock_memory",
    "migrate_pages",
    "numa_topology",
    "online_cpus",
    "page_residency",
    "parse_cpulist",
    "parse_numa_maps",
    "pinned",
    "prefault",
    "prefault_stack",
    "priority_range",
    "read_live_settings",
    "read_stats",
    "reconfigure_thread",
    "resource_limits",
    "restore_affinity",
    "rt_group_runtime",
    "sample_page_residency",
    "set_deadline",
    "set_memory_policy",
    "set_process_affinity",
    "set_scheduler",
    "set_thread_affinity",
    "set_timer_slack_ns",
    "smt_siblings",
    "start_cpus",
    "thread_placement",
    "unlock_memory",
    "validate_cpus",
]
