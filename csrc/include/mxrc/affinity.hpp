// CPU affinity. Affinity is per thread on Linux: a process-wide change walks
// /proc/<pid>/task and sets every thread.
#pragma once

#include <sys/types.h>

#include <map>

#include "mxrc/cpuset.hpp"

namespace mxrc {

// The calling thread's kernel thread id (what /proc/<pid>/task lists).
pid_t current_tid() noexcept;

// Affinity of one thread (tid 0: the calling thread). Throws SystemError
// (sched_getaffinity).
CpuSet get_thread_affinity(pid_t tid = 0);

// Pins one thread (tid 0: the calling thread). Throws std::invalid_argument
// for an empty set or a CPU number out of range, SystemError
// (sched_setaffinity) when the kernel refuses, e.g. EINVAL when no CPU of the
// set is online and allowed by the cpuset, EPERM for another user's thread
// without CAP_SYS_NICE.
void set_thread_affinity(const CpuSet& cpus, pid_t tid = 0);

// Non-throwing form for the setup path: returns 0 or an errno value.
[[nodiscard]] int try_set_thread_affinity(const CpuMask& mask, pid_t tid = 0) noexcept;

// Thread ids of a process (pid 0: this process), from /proc/<pid>/task.
std::vector<pid_t> list_threads(pid_t pid = 0);

// Affinity of every thread of a process; threads that exit while it reads
// are left out.
std::map<pid_t, CpuSet> get_process_affinity(pid_t pid = 0);

// Pins every thread of a process, including threads started while it walks
// the list (it re-reads /proc/<pid>/task until no new thread shows up).
// Returns the previous mask of every thread it changed. On failure it puts
// back the masks it already changed, then throws.
std::map<pid_t, CpuSet> set_process_affinity(const CpuSet& cpus, pid_t pid = 0);

}  // namespace mxrc
