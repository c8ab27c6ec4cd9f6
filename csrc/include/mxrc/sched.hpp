// Scheduling policy and priority, per thread.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>

namespace mxrc {

#ifndef SCHED_DEADLINE
#define SCHED_DEADLINE 6
#endif

enum class SchedPolicy : int {
  Other = SCHED_OTHER,
  Fifo = SCHED_FIFO,
  RoundRobin = SCHED_RR,
  Batch = SCHED_BATCH,
  Idle = SCHED_IDLE,
  Deadline = SCHED_DEADLINE,
};

// "SCHED_FIFO", ...; "SCHED_<n>" for an unknown value.
std::string policy_name(SchedPolicy policy);
bool is_realtime(SchedPolicy policy) noexcept;

struct SchedParams {
  SchedPolicy policy = SchedPolicy::Other;
  int priority = 0;              // 1..99 for FIFO/RR, 0 otherwise
  int nice = 0;                  // SCHED_OTHER/BATCH
  std::uint64_t runtime_ns = 0;  // SCHED_DEADLINE only
  std::uint64_t deadline_ns = 0;
  std::uint64_t period_ns = 0;
  bool reset_on_fork = false;
};

// Valid static priorities (sched_get_priority_min/max): 1..99 for FIFO/RR,
// 0..0 for the others. Throws std::invalid_argument for an unknown policy.
std::pair<int, int> priority_range(SchedPolicy policy);

// Sets policy and priority of one thread (tid 0: the calling thread). Throws
// std::invalid_argument naming the valid range for a bad priority,
// SystemError (sched_setscheduler) otherwise, e.g. EPERM without
// CAP_SYS_NICE / RLIMIT_RTPRIO, or inside a cgroup with no RT runtime.
// SCHED_DEADLINE goes through set_deadline().
void set_scheduler(SchedPolicy policy, int priority, pid_t tid = 0, bool reset_on_fork = false);

// Non-throwing form (setup path): 0 or an errno value (EINVAL for a bad
// priority or for SCHED_DEADLINE).
[[nodiscard]] int try_set_scheduler(SchedPolicy policy, int priority, pid_t tid = 0,
                                    bool reset_on_fork = false) noexcept;

// Reads policy, priority, nice and deadline parameters (sched_getattr).
SchedParams get_scheduler(pid_t tid = 0);

// SCHED_DEADLINE through the raw sched_setattr system call. Requires
// runtime <= deadline <= period (period 0 means period = deadline) and
// runtime >= 1024 ns (std::invalid_argument otherwise). Throws
// mxrc::UnsupportedError when the thread's affinity is a strict subset of the
// online CPUs: the kernel rejects that with EPERM (deadline admission control
// works on whole root domains).
void set_deadline(std::uint64_t runtime_ns, std::uint64_t deadline_ns, std::uint64_t period_ns,
                  pid_t tid = 0, bool reset_on_fork = false);

// Non-throwing form (setup path): 0 or an errno value; EINVAL for bad
// parameters. Does not check the affinity (the kernel answers EPERM).
[[nodiscard]] int try_set_deadline(std::uint64_t runtime_ns, std::uint64_t deadline_ns,
                                   std::uint64_t period_ns, pid_t tid = 0,
                                   bool reset_on_fork = false) noexcept;

}  // namespace mxrc
