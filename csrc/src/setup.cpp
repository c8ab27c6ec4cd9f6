#include "mxrc/setup.hpp"

#include <cerrno>

#include "mxrc/affinity.hpp"
#include "mxrc/memory.hpp"

namespace mxrc {

const char* setup_step_name(SetupStep step) noexcept {
  switch (step) {
    case SetupStep::None:
      return "";
    case SetupStep::MemoryPolicy:
      return "memory_policy";
    case SetupStep::LockMemory:
      return "lock_memory";
    case SetupStep::PrefaultStack:
      return "prefault_stack";
    case SetupStep::PrefaultBuffers:
      return "prefault_buffers";
    case SetupStep::Affinity:
      return "affinity";
    case SetupStep::Scheduler:
      return "scheduler";
    case SetupStep::TimerSlack:
      return "timer_slack";
  }
  return "unknown";
}

const char* setup_step_syscall(SetupStep step) noexcept {
  switch (step) {
    case SetupStep::None:
      return "";
    case SetupStep::MemoryPolicy:
      return "set_mempolicy";
    case SetupStep::LockMemory:
      return "mlockall";
    case SetupStep::PrefaultStack:
      return "prefault_stack";
    case SetupStep::PrefaultBuffers:
      return "madvise";
    case SetupStep::Affinity:
      return "sched_setaffinity";
    case SetupStep::Scheduler:
      return "sched_setscheduler";
    case SetupStep::TimerSlack:
      return "prctl";
  }
  return "";
}

namespace {
bool valid_memory_policy(MemPolicy p) noexcept {
  const int raw = static_cast<int>(p);
  return raw >= static_cast<int>(MemPolicy::Default) &&
         raw <= static_cast<int>(MemPolicy::WeightedInterleave);
}
}  // namespace

SetupStatus apply_thread_setup(const ThreadSetup& s) noexcept {
  // --- validate everything first: nothing is applied when a field is bad --
  NodeMask nodes;
  for (int node : s.memory_nodes) {
    if (!nodes.set(node)) return {SetupStep::MemoryPolicy, EINVAL};
  }
  if (s.memory_policy) {
    if (!valid_memory_policy(*s.memory_policy)) return {SetupStep::MemoryPolicy, EINVAL};
  } else if (!s.memory_nodes.empty()) {
    return {SetupStep::MemoryPolicy, EINVAL};  // nodes without a policy
  }
  for (const BufferRange& b : s.prefault_buffers) {
    if (b.data == nullptr && b.size != 0) return {SetupStep::PrefaultBuffers, EINVAL};
  }
  if (s.prefault_stack_bytes > max_prefault_stack_bytes()) {
    return {SetupStep::PrefaultStack, EINVAL};
  }
  CpuMask cpus;
  for (int cpu : s.cpus) {
    if (!cpus.set(cpu)) return {SetupStep::Affinity, EINVAL};
  }
  if (s.policy) {
    if (*s.policy == SchedPolicy::Deadline) {
      // The kernel refuses SCHED_DEADLINE on a pinned thread (EPERM).
      if (!s.cpus.empty()) return {SetupStep::Scheduler, EOPNOTSUPP};
      const std::uint64_t period =
          s.deadline_period_ns == 0 ? s.deadline_deadline_ns : s.deadline_period_ns;
      if (s.deadline_runtime_ns < 1024 || s.deadline_runtime_ns > s.deadline_deadline_ns ||
          s.deadline_deadline_ns > period) {
        return {SetupStep::Scheduler, EINVAL};
      }
    } else {
      const int lo = ::sched_get_priority_min(static_cast<int>(*s.policy));
      const int hi = ::sched_get_priority_max(static_cast<int>(*s.policy));
      if (lo < 0 || hi < 0 || s.priority < lo || s.priority > hi) {
        return {SetupStep::Scheduler, EINVAL};
      }
    }
  }

  // --- apply, in the order of ARCHITECTURE §5 ------------------------------
  int err = 0;
  if (s.memory_policy) {
    err = try_set_memory_policy(*s.memory_policy, nodes);
    if (err != 0) return {SetupStep::MemoryPolicy, err};
  }
  if (s.lock_memory) {
    err = try_lock_memory(s.lock_on_fault);
    if (err != 0) return {SetupStep::LockMemory, err};
  }
  if (s.prefault_stack_bytes != 0) {
    err = try_prefault_stack(s.prefault_stack_bytes);
    if (err != 0) return {SetupStep::PrefaultStack, err};
  }
  for (const BufferRange& b : s.prefault_buffers) {
    err = try_prefault(b.data, b.size);
    if (err != 0) return {SetupStep::PrefaultBuffers, err};
  }
  if (!s.cpus.empty()) {
    err = try_set_thread_affinity(cpus, 0);
    if (err != 0) return {SetupStep::Affinity, err};
  }
  if (s.policy) {
    err = *s.policy == SchedPolicy::Deadline
              ? try_set_deadline(s.deadline_runtime_ns, s.deadline_deadline_ns,
                                 s.deadline_period_ns, 0)
              : try_set_scheduler(*s.policy, s.priority, 0);
    if (err != 0) return {SetupStep::Scheduler, err};
  }
  if (s.timer_slack_ns) {
    err = try_set_timer_slack_ns(*s.timer_slack_ns);
    if (err != 0) return {SetupStep::TimerSlack, err};
  }
  return {};
}

}  // namespace mxrc
