"""Which cgroup a process is in, and what its cpuset and RT runtime allow.

Works on cgroup v1, v2 and hybrid hosts (v1 controllers plus a cgroup2 mount at
``/sys/fs/cgroup/unified``). Mount points come from ``<procfs>/self/mountinfo``;
a mount point under ``/sys`` is re-rooted at ``sysfs_root`` so that tests can
hand in fake trees. Without usable mount information the usual systemd layout
under ``<sysfs>/fs/cgroup`` is probed.

Every reader takes ``procfs_root`` / ``sysfs_root`` and never raises for a
missing or unreadable file: it returns ``None`` (or an empty result) instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mxrc.rt._cpulist import parse_cpulist

__all__ = [
    "CgroupEntry",
    "CgroupMount",
    "CgroupVersion",
    "ControllerLocation",
    "CpusetInfo",
    "RtGroupRuntime",
    "cgroup_entries",
    "cgroup_mounts",
    "cgroup_version",
    "controller_location",
    "cpuset_effective",
    "cpuset_info",
    "rt_group_runtime",
]

CgroupVersion = Literal["v1", "v2", "hybrid", "none"]

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _read(path: str | os.PathLike[str]) -> str | None:
    """Return the text of a file, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _read_int(path: str | os.PathLike[str]) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _pid_dir(procfs_root: str, pid: int | str) -> Path:
    return Path(procfs_root) / str(pid)


def _reroot(mount_point: str, sysfs_root: str) -> str:
    """Move a mount point under ``/sys`` to ``sysfs_root`` (identity for ``/sys``)."""
    if mount_point == "/sys" or mount_point.startswith("/sys/"):
        return str(Path(sysfs_root) / mount_point[len("/sys") :].lstrip("/"))
    return mount_point


@dataclass(frozen=True)
class CgroupMount:
    """One mounted cgroup hierarchy.

    ``mount_point`` is already re-rooted at ``sysfs_root``; ``root`` is the
    path of the hierarchy that is mounted there (``/`` unless in a container);
    ``controllers`` is empty for a v1 named hierarchy and, for v2, lists the
    controllers the root makes available (``cgroup.controllers``).
    """

    mount_point: str
    root: str
    version: int
    controllers: frozenset[str]


@dataclass(frozen=True)
class CgroupEntry:
    """One line of ``/proc/<pid>/cgroup``: ``hierarchy-id:controllers:path``."""

    hierarchy_id: int
    controllers: frozenset[str]
    path: str


@dataclass(frozen=True)
class ControllerLocation:
    """Where a controller's files for one process live."""

    controller: str
    version: int
    cgroup_path: str
    directory: str
    mount_point: str


@dataclass(frozen=True)
class CpusetInfo:
    """The cpuset that applies to a process.

    ``effective_cpus`` is what the kernel lets the cgroup use
    (``cpuset.cpus.effective`` on v2, ``cpuset.effective_cpus`` on v1);
    ``source`` is the file it came from (an ancestor's when the process's own
    cgroup has none). ``exclusive`` is v1 ``cpuset.cpu_exclusive`` or, on v2,
    a ``root``/``isolated`` partition; ``partition`` is the raw v2
    ``cpuset.cpus.partition`` value.
    """

    version: int
    cgroup_path: str
    directory: str
    effective_cpus: frozenset[int]
    source: str
    cpus: frozenset[int] | None
    exclusive: bool | None
    partition: str | None


@dataclass(frozen=True)
class RtGroupRuntime:
    """RT group scheduling budget of a process's cpu cgroup.

    ``runtime_us`` = 0 means SCHED_FIFO/SCHED_RR fail with EPERM for tasks in
    that cgroup, even for root; -1 means unlimited (only the root group).
    """

    version: int
    cgroup_path: str
    directory: str
    runtime_us: int
    period_us: int | None
    mount_point: str

    @property
    def allows_rt(self) -> bool:
        """False when the cgroup has no RT runtime at all."""
        return self.runtime_us != 0


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _fallback_mounts(sysfs_root: str) -> tuple[CgroupMount, ...]:
    base = Path(sysfs_root) / "fs" / "cgroup"
    mounts: list[CgroupMount] = []
    for v2dir in (base, base / "unified"):
        text = _read(v2dir / "cgroup.controllers")
        if text is not None:
            mounts.append(CgroupMount(str(v2dir), "/", 2, frozenset(text.split())))
    if base.is_dir() and not (base / "cgroup.controllers").exists():
        try:
            children = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            children = []
        for child in children:
            if child.name == "unified":
                continue
            controllers = frozenset(c for c in child.name.split(",") if c)
            if child.name == "systemd":
                controllers = frozenset()
            mounts.append(CgroupMount(str(child), "/", 1, controllers))
    return tuple(mounts)


def cgroup_mounts(
    *, procfs_root: str = "/proc", sysfs_root: str = "/sys"
) -> tuple[CgroupMount, ...]:
    """List mounted cgroup hierarchies from ``<procfs>/self/mountinfo``.

    Falls back to probing ``<sysfs>/fs/cgroup`` when mountinfo is unreadable
    or lists no cgroup mount.

    Availability: Linux.
    """
    text = _read(Path(procfs_root) / "self" / "mountinfo")
    mounts: list[CgroupMount] = []
    for line in (text or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root = _unescape(fields[3])
        mount_point = _reroot(_unescape(fields[4]), sysfs_root)
        if fstype == "cgroup2":
            ctl_text = _read(Path(mount_point) / "cgroup.controllers")
            mounts.append(CgroupMount(mount_point, root, 2, frozenset((ctl_text or "").split())))
        else:
            options = fields[sep + 3].split(",")
            known = {"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec"}
            controllers = frozenset(
                o
                for o in options
                if o not in known
                and "=" not in o
                and o not in ("noprefix", "xattr", "clone_children", "cpuset_v2_mode")
            )
            mounts.append(CgroupMount(mount_point, root, 1, controllers))
    if not mounts:
        return _fallback_mounts(sysfs_root)
    return tuple(mounts)


def cgroup_entries(
    pid: int | str = "self", *, procfs_root: str = "/proc"
) -> tuple[CgroupEntry, ...]:
    """Parse ``<procfs>/<pid>/cgroup``; empty when unreadable.

    Availability: Linux.
    """
    text = _read(_pid_dir(procfs_root, pid) / "cgroup")
    entries: list[CgroupEntry] = []
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hid = int(parts[0])
        except ValueError:
            continue
        controllers = frozenset(c for c in parts[1].split(",") if c)
        entries.append(CgroupEntry(hid, controllers, parts[2] or "/"))
    return tuple(entries)


def cgroup_version(*, procfs_root: str = "/proc", sysfs_root: str = "/sys") -> CgroupVersion:
    """Say whether the host runs cgroup v1, v2, a hybrid of both, or none.

    "hybrid" means v1 controller hierarchies plus a cgroup2 mount (systemd's
    hybrid layout); named v1 hierarchies (``name=systemd``) alone do not make
    a host v1.

    Availability: Linux.
    """
    mounts = cgroup_mounts(procfs_root=procfs_root, sysfs_root=sysfs_root)
    has_v1 = any(m.version == 1 and m.controllers for m in mounts)
    has_v2 = any(m.version == 2 for m in mounts)
    if has_v1 and has_v2:
        return "hybrid"
    if has_v1:
        return "v1"
    if has_v2:
        return "v2"
    return "none"


def _join(mount: CgroupMount, cgroup_path: str) -> Path:
    base = Path(mount.mount_point)
    root = mount.root.rstrip("/")
    rel = cgroup_path
    if root and (rel == root or rel.startswith(root + "/")):
        rel = rel[len(root) :]
    rel = rel.lstrip("/")
    if ".." in Path(rel).parts:
        return base
    return base / rel if rel else base


def controller_location(
    controller: str,
    pid: int | str = "self",
    *,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
) -> ControllerLocation | None:
    """Find the directory holding ``controller``'s files for a process.

    A v1 hierarchy that carries the controller wins; otherwise the v2
    hierarchy when its root offers the controller. None when no mounted
    hierarchy provides it.

    Availability: Linux.
    """
    mounts = cgroup_mounts(procfs_root=procfs_root, sysfs_root=sysfs_root)
    entries = cgroup_entries(pid, procfs_root=procfs_root)
    for mount in mounts:
        if mount.version != 1 or controller not in mount.controllers:
            continue
        path = "/"
        for entry in entries:
            if controller in entry.controllers:
                path = entry.path
                break
        return ControllerLocation(controller, 1, path, str(_join(mount, path)), mount.mount_point)
    for mount in mounts:
        if mount.version != 2 or controller not in mount.controllers:
            continue
        path = next((e.path for e in entries if e.hierarchy_id == 0), "/")
        return ControllerLocation(controller, 2, path, str(_join(mount, path)), mount.mount_point)
    return None


def _walk_up(start: Path, stop: Path, names: tuple[str, ...]) -> tuple[Path, str] | None:
    """Find the first of ``names`` in ``start`` or its ancestors up to ``stop``."""
    current = start
    while True:
        for name in names:
            candidate = current / name
            text = _read(candidate)
            if text is not None:
                return candidate, text
        if current in (stop, current.parent):
            return None
        try:
            current.relative_to(stop)
        except ValueError:
            return None
        current = current.parent


def cpuset_info(
    pid: int | str = "self", *, procfs_root: str = "/proc", sysfs_root: str = "/sys"
) -> CpusetInfo | None:
    """Read the cpuset that applies to a process; None when no cpuset controller applies.

    On v2 ``cpuset.cpus.effective`` is looked up in the process's cgroup and
    then its ancestors (the file exists only where the controller is enabled).

    Availability: Linux.
    """
    loc = controller_location("cpuset", pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    if loc is None:
        return None
    directory = Path(loc.directory)
    stop = Path(loc.mount_point)
    if loc.version == 2:
        names: tuple[str, ...] = ("cpuset.cpus.effective",)
    else:
        names = ("cpuset.effective_cpus", "effective_cpus", "cpuset.cpus", "cpus")
    found = _walk_up(directory, stop, names)
    if found is None:
        return None
    source, text = found
    try:
        effective = parse_cpulist(text)
    except ValueError:
        return None
    own = source.parent
    cpus: frozenset[int] | None = None
    exclusive: bool | None = None
    partition: str | None = None
    if loc.version == 2:
        cpus_text = _read(own / "cpuset.cpus")
        if cpus_text is not None and cpus_text.strip():
            try:
                cpus = parse_cpulist(cpus_text)
            except ValueError:
                cpus = None
        part_text = _read(own / "cpuset.cpus.partition")
        if part_text is not None:
            partition = part_text.strip()
            exclusive = partition.split()[0] in ("root", "isolated") if partition else False
    else:
        prefix = "" if source.name in ("effective_cpus", "cpus") else "cpuset."
        cpus_text = _read(own / f"{prefix}cpus")
        if cpus_text is not None:
            try:
                cpus = parse_cpulist(cpus_text)
            except ValueError:
                cpus = None
        excl = _read_int(own / f"{prefix}cpu_exclusive")
        exclusive = None if excl is None else excl == 1
    cgroup_path = loc.cgroup_path
    if own != directory:
        try:
            rel = own.relative_to(stop)
            cgroup_path = "/" + str(rel) if str(rel) != "." else "/"
        except ValueError:
            pass
    return CpusetInfo(
        version=loc.version,
        cgroup_path=cgroup_path,
        directory=str(own),
        effective_cpus=effective,
        source=str(source),
        cpus=cpus,
        exclusive=exclusive,
        partition=partition,
    )


def cpuset_effective(
    pid: int | str = "self", *, procfs_root: str = "/proc", sysfs_root: str = "/sys"
) -> frozenset[int] | None:
    """CPUs the process's cpuset cgroup lets it use; None when no cpuset controller applies.

    Availability: Linux.
    """
    info = cpuset_info(pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    return None if info is None else info.effective_cpus


def rt_group_runtime(
    pid: int | str = "self", *, procfs_root: str = "/proc", sysfs_root: str = "/sys"
) -> RtGroupRuntime | None:
    """RT group scheduling budget (``cpu.rt_runtime_us``) of a process's cpu cgroup.

    None when the kernel exposes no RT group scheduling for this process (no
    ``CONFIG_RT_GROUP_SCHED``, or no cpu controller mounted): then only the
    global ``sched_rt_runtime_us`` applies.

    Availability: Linux.
    """
    loc = controller_location("cpu", pid, procfs_root=procfs_root, sysfs_root=sysfs_root)
    if loc is None:
        return None
    directory = Path(loc.directory)
    runtime = _read_int(directory / "cpu.rt_runtime_us")
    if runtime is None:
        return None
    period = _read_int(directory / "cpu.rt_period_us")
    return RtGroupRuntime(
        loc.version, loc.cgroup_path, str(directory), runtime, period, loc.mount_point
    )
