// Thread setup in the order of ARCHITECTURE §5: memory policy -> mlockall ->
// prefault of the stack and buffers -> affinity -> policy/priority -> timer
// slack. Runs on the calling thread and never throws. It allocates nothing
// itself (masks live on the stack); sizing the stack prefault asks glibc for
// the stack bounds (pthread_getattr_np), which may: call it before the first
// cycle, not inside one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "mxrc/cpuset.hpp"
#include "mxrc/numa.hpp"
#include "mxrc/sched.hpp"

namespace mxrc {

enum class SetupStep : int {
  None = 0,
  MemoryPolicy,     // set_mempolicy
  LockMemory,       // mlockall
  PrefaultStack,    // (stack touch)
  PrefaultBuffers,  // madvise
  Affinity,         // sched_setaffinity
  Scheduler,        // sched_setscheduler / sched_setattr
  TimerSlack,       // prctl(PR_SET_TIMERSLACK)
};

// "memory_policy", "lock_memory", "prefault_stack", "prefault_buffers",
// "affinity", "scheduler", "timer_slack"; "" for None.
const char* setup_step_name(SetupStep step) noexcept;
// The system call behind a step ("set_mempolicy", "mlockall", ...).
const char* setup_step_syscall(SetupStep step) noexcept;

struct BufferRange {
  void* data = nullptr;
  std::size_t size = 0;
};

struct ThreadSetup {
  std::optional<MemPolicy> memory_policy;  // unset: leave as is
  NodeSet memory_nodes;
  bool lock_memory = false;
  bool lock_on_fault = true;  // MCL_ONFAULT
  std::size_t prefault_stack_bytes = 0;
  std::vector<BufferRange> prefault_buffers;
  CpuSet cpus;                        // empty: leave as is
  std::optional<SchedPolicy> policy;  // unset: leave as is
  int priority = 0;
  std::uint64_t deadline_runtime_ns = 0;  // SCHED_DEADLINE only
  std::uint64_t deadline_deadline_ns = 0;
  std::uint64_t deadline_period_ns = 0;
  std::optional<unsigned long> timer_slack_ns;  // unset: leave as is
};

struct [[nodiscard]] SetupStatus {
  SetupStep failed_step = SetupStep::None;
  int error = 0;  // errno value of the failed step; 0 on success
  bool ok() const noexcept { return error == 0; }
};

// Validates every field first (a bad field fails with EINVAL at its step,
// before anything is applied; SCHED_DEADLINE together with cpus fails with
// EOPNOTSUPP), then applies the steps in order and stops at the first
// failure: no later step is applied. Steps already applied are not undone.
SetupStatus apply_thread_setup(const ThreadSetup& setup) noexcept;

}  // namespace mxrc
