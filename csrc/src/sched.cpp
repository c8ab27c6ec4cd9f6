#include "mxrc/sched.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>

#include "mxrc/affinity.hpp"
#include "mxrc/cpuset.hpp"
#include "mxrc/error.hpp"

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

namespace mxrc {

namespace {
// The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1). glibc < 2.41 has no
// sched_setattr wrapper, so the raw system calls are used.
struct KernelSchedAttr {
  std::uint32_t size;
  std::uint32_t sched_policy;
  std::uint64_t sched_flags;
  std::int32_t sched_nice;
  std::uint32_t sched_priority;
  std::uint64_t sched_runtime;
  std::uint64_t sched_deadline;
  std::uint64_t sched_period;
  std::uint32_t sched_util_min;
  std::uint32_t sched_util_max;
};
constexpr std::uint64_t kSchedFlagResetOnFork = 0x01;

std::string thread_name(pid_t tid) {
  return tid == 0 ? std::string("the calling thread") : "thread " + std::to_string(tid);
}

bool known_policy(SchedPolicy policy) noexcept {
  switch (policy) {
    case SchedPolicy::Other:
    case SchedPolicy::Fifo:
    case SchedPolicy::RoundRobin:
    case SchedPolicy::Batch:
    case SchedPolicy::Idle:
    case SchedPolicy::Deadline:
      return true;
  }
  return false;
}

// 0 or EINVAL; no exception, no allocation.
int check_priority(SchedPolicy policy, int priority, int* lo, int* hi) noexcept {
  if (!known_policy(policy) || policy == SchedPolicy::Deadline) return EINVAL;
  *lo = ::sched_get_priority_min(static_cast<int>(policy));
  *hi = ::sched_get_priority_max(static_cast<int>(policy));
  if (*lo < 0 || *hi < 0) return EINVAL;
  return (priority < *lo || priority > *hi) ? EINVAL : 0;
}
}  // namespace

std::string policy_name(SchedPolicy policy) {
  switch (policy) {
    case SchedPolicy::Other:
      return "SCHED_OTHER";
    case SchedPolicy::Fifo:
      return "SCHED_FIFO";
    case SchedPolicy::RoundRobin:
      return "SCHED_RR";
    case SchedPolicy::Batch:
      return "SCHED_BATCH";
    case SchedPolicy::Idle:
      return "SCHED_IDLE";
    case SchedPolicy::Deadline:
      return "SCHED_DEADLINE";
  }
  return "SCHED_" + std::to_string(static_cast<int>(policy));
}

bool is_realtime(SchedPolicy policy) noexcept {
  return policy == SchedPolicy::Fifo || policy == SchedPolicy::RoundRobin;
}

std::pair<int, int> priority_range(SchedPolicy policy) {
  if (!known_policy(policy)) {
    throw std::invalid_argument("unknown scheduling policy " + policy_name(policy));
  }
  if (policy == SchedPolicy::Deadline) return {0, 0};
  const int lo = ::sched_get_priority_min(static_cast<int>(policy));
  const int hi = ::sched_get_priority_max(static_cast<int>(policy));
  if (lo < 0 || hi < 0) {
    throw SystemError(errno, "sched_get_priority_min",
                      "cannot read the priority range of " + policy_name(policy));
  }
  return {lo, hi};
}

int try_set_scheduler(SchedPolicy policy, int priority, pid_t tid, bool reset_on_fork) noexcept {
  int lo = 0;
  int hi = 0;
  if (check_priority(policy, priority, &lo, &hi) != 0) return EINVAL;
  sched_param param{};
  param.sched_priority = priority;
  int raw = static_cast<int>(policy);
  if (reset_on_fork) raw |= SCHED_RESET_ON_FORK;
  return ::sched_setscheduler(tid, raw, &param) == 0 ? 0 : errno;
}

void set_scheduler(SchedPolicy policy, int priority, pid_t tid, bool reset_on_fork) {
  if (!known_policy(policy)) {
    throw std::invalid_argument("unknown scheduling policy " + policy_name(policy));
  }
  if (policy == SchedPolicy::Deadline) {
    throw std::invalid_argument(
        "SCHED_DEADLINE takes runtime, deadline and period, not a priority: use set_deadline()");
  }
  const auto [lo, hi] = priority_range(policy);
  if (priority < lo || priority > hi) {
    throw std::invalid_argument("priority " + std::to_string(priority) + " is out of range for " +
                                policy_name(policy) + ": valid priorities are " +
                                std::to_string(lo) + ".." + std::to_string(hi));
  }
  const int err = try_set_scheduler(policy, priority, tid, reset_on_fork);
  if (err != 0) {
    throw SystemError(err, "sched_setscheduler",
                      "cannot set " + policy_name(policy) + " priority " +
                          std::to_string(priority) + " on " + thread_name(tid));
  }
}

SchedParams get_scheduler(pid_t tid) {
  KernelSchedAttr attr{};
  SchedParams out;
  if (::syscall(SYS_sched_getattr, tid, &attr, static_cast<unsigned>(sizeof attr), 0U) == 0) {
    out.policy = static_cast<SchedPolicy>(attr.sched_policy);
    out.priority = static_cast<int>(attr.sched_priority);
    out.nice = attr.sched_nice;
    out.runtime_ns = attr.sched_runtime;
    out.deadline_ns = attr.sched_deadline;
    out.period_ns = attr.sched_period;
    out.reset_on_fork = (attr.sched_flags & kSchedFlagResetOnFork) != 0;
    return out;
  }
  if (errno != ENOSYS) {
    throw SystemError(errno, "sched_getattr",
                      "cannot read the scheduling policy of " + thread_name(tid));
  }
  // Kernels before 3.14: the classic calls.
  const int raw = ::sched_getscheduler(tid);
  if (raw < 0) {
    throw SystemError(errno, "sched_getscheduler",
                      "cannot read the scheduling policy of " + thread_name(tid));
  }
  sched_param param{};
  if (::sched_getparam(tid, &param) != 0) {
    throw SystemError(errno, "sched_getparam", "cannot read the priority of " + thread_name(tid));
  }
  out.policy = static_cast<SchedPolicy>(raw & ~SCHED_RESET_ON_FORK);
  out.reset_on_fork = (raw & SCHED_RESET_ON_FORK) != 0;
  out.priority = param.sched_priority;
  return out;
}

void set_deadline(std::uint64_t runtime_ns, std::uint64_t deadline_ns, std::uint64_t period_ns,
                  pid_t tid, bool reset_on_fork) {
  const std::uint64_t period = period_ns == 0 ? deadline_ns : period_ns;
  if (runtime_ns < 1024 || runtime_ns > deadline_ns || deadline_ns > period) {
    throw std::invalid_argument(
        "SCHED_DEADLINE needs 1024 ns <= runtime <= deadline <= period; got runtime " +
        std::to_string(runtime_ns) + " ns, deadline " + std::to_string(deadline_ns) +
        " ns, period " + std::to_string(period) + " ns");
  }
  // The kernel admits a deadline task only when its affinity spans its whole
  // root domain (all online CPUs without exclusive cpusets); otherwise
  // sched_setattr fails with a bare EPERM. Say so instead.
  const CpuSet mask = get_thread_affinity(tid);
  CpuSet online;
  try {
    online = online_cpus();
  } catch (const SystemError&) {
    online.clear();  // unknown: let the kernel decide
  }
  if (!online.empty() && !CpuMask::from_set(online).subset_of(CpuMask::from_set(mask))) {
    throw UnsupportedError(
        "SCHED_DEADLINE cannot be used on " + thread_name(tid) + ": it is pinned to CPUs " +
        format_cpulist(mask) + ", a strict subset of the online CPUs " + format_cpulist(online) +
        ". The kernel's deadline admission control works on whole root domains and rejects a "
        "pinned deadline thread with EPERM. Leave the thread unpinned for SCHED_DEADLINE, or "
        "use SCHED_FIFO with pinned cores (or give it an exclusive cpuset, which is its own "
        "root domain).");
  }
  const int err = try_set_deadline(runtime_ns, deadline_ns, period, tid, reset_on_fork);
  if (err != 0) {
    throw SystemError(err, "sched_setattr",
                      "cannot set SCHED_DEADLINE (runtime " + std::to_string(runtime_ns) +
                          " ns, deadline " + std::to_string(deadline_ns) + " ns, period " +
                          std::to_string(period) + " ns) on " + thread_name(tid));
  }
}

int try_set_deadline(std::uint64_t runtime_ns, std::uint64_t deadline_ns, std::uint64_t period_ns,
                     pid_t tid, bool reset_on_fork) noexcept {
  const std::uint64_t period = period_ns == 0 ? deadline_ns : period_ns;
  if (runtime_ns < 1024 || runtime_ns > deadline_ns || deadline_ns > period) return EINVAL;
  KernelSchedAttr attr{};
  attr.size = sizeof attr;
  attr.sched_policy = SCHED_DEADLINE;
  attr.sched_flags = reset_on_fork ? kSchedFlagResetOnFork : 0;
  attr.sched_runtime = runtime_ns;
  attr.sched_deadline = deadline_ns;
  attr.sched_period = period;
  return ::syscall(SYS_sched_setattr, tid, &attr, 0U) == 0 ? 0 : errno;
}

}  // namespace mxrc
