"""Linux CPU-list strings ("0-3,8,10-11") to sets and back."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_CPUS", "format_cpulist", "parse_cpulist"]

#: One more than the highest CPU number any kernel uses (CONFIG_NR_CPUS <= 8192);
#: the C++ core's ``CpuMask::kMaxCpus``. A larger number in a list is corruption.
MAX_CPUS = 8192


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a kernel CPU list such as ``"0-3,8"``; empty text gives an empty set.

    Also accepts the stride form ``"0-7:2"`` used by ``isolcpus=``.
    Raises ValueError naming the bad part, also for a number >= :data:`MAX_CPUS`
    (a corrupt file must not make a reader build a set of billions).
    """
    cpus: set[int] = set()
    for raw in text.strip().split(","):
        part = raw.strip()
        if not part:
            continue
        try:
            if "-" in part:
                rng, _, stride_text = part.partition(":")
                lo_text, hi_text = rng.split("-", 1)
                lo, hi = int(lo_text), int(hi_text)
                stride = int(stride_text) if stride_text else 1
                if lo > hi or stride < 1 or lo < 0 or hi >= MAX_CPUS:
                    raise ValueError
                cpus.update(range(lo, hi + 1, stride))
            else:
                cpu = int(part)
                if cpu < 0 or cpu >= MAX_CPUS:
                    raise ValueError
                cpus.add(cpu)
        except ValueError:
            raise ValueError(
                f"bad CPU list entry {part!r} in {text.strip()!r} "
                f"(expected N, N-M or N-M:stride with 0 <= N <= M < {MAX_CPUS})"
            ) from None
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPUs as the kernel does: sorted, with runs collapsed (``"0-3,8"``)."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
