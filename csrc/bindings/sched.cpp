// mxrc._core.sched: affinity, scheduling, memory locking, thread setup.
#include "mxrc/sched.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>
#include <vector>

#include "buffer.hpp"
#include "mxrc/affinity.hpp"
#include "mxrc/memory.hpp"
#include "mxrc/setup.hpp"
#include "register.hpp"
#include "thread_setup_args.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {
std::map<int, std::vector<int>> to_py(const std::map<pid_t, CpuSet>& in) {
  std::map<int, std::vector<int>> out;
  for (const auto& [tid, cpus] : in) out.emplace(static_cast<int>(tid), cpus);
  return out;
}
}  // namespace

void register_sched(py::module_& m) {
  m.attr("SCHED_OTHER") = static_cast<int>(SchedPolicy::Other);
  m.attr("SCHED_FIFO") = static_cast<int>(SchedPolicy::Fifo);
  m.attr("SCHED_RR") = static_cast<int>(SchedPolicy::RoundRobin);
  m.attr("SCHED_BATCH") = static_cast<int>(SchedPolicy::Batch);
  m.attr("SCHED_IDLE") = static_cast<int>(SchedPolicy::Idle);
  m.attr("SCHED_DEADLINE") = static_cast<int>(SchedPolicy::Deadline);

  // --- affinity ---------------------------------------------------------
  m.def(
      "current_tid", [] { return static_cast<int>(current_tid()); },
      "The calling thread's kernel thread id.");
  m.def("online_cpus", &online_cpus, "CPUs online now (/sys/devices/system/cpu/online).");
  m.def("parse_cpulist", &parse_cpulist, py::arg("text"));
  m.def("format_cpulist", &format_cpulist, py::arg("cpus"));
  m.def(
      "get_thread_affinity", [](int tid) { return get_thread_affinity(tid); }, py::arg("tid") = 0);
  m.def(
      "set_thread_affinity",
      [](const std::vector<int>& cpus, int tid) { set_thread_affinity(cpus, tid); },
      py::arg("cpus"), py::arg("tid") = 0);
  m.def(
      "list_threads",
      [](int pid) {
        std::vector<int> out;
        for (pid_t t : list_threads(pid)) out.push_back(static_cast<int>(t));
        return out;
      },
      py::arg("pid") = 0);
  m.def(
      "get_process_affinity", [](int pid) { return to_py(get_process_affinity(pid)); },
      py::arg("pid") = 0);
  m.def(
      "set_process_affinity",
      [](const std::vector<int>& cpus, int pid) { return to_py(set_process_affinity(cpus, pid)); },
      py::arg("cpus"), py::arg("pid") = 0);

  // --- scheduling -------------------------------------------------------
  m.def(
      "priority_range", [](int policy) { return priority_range(static_cast<SchedPolicy>(policy)); },
      py::arg("policy"));
  m.def(
      "set_scheduler",
      [](int policy, int priority, int tid, bool reset_on_fork) {
        set_scheduler(static_cast<SchedPolicy>(policy), priority, tid, reset_on_fork);
      },
      py::arg("policy"), py::arg("priority"), py::arg("tid") = 0, py::arg("reset_on_fork") = false);
  m.def(
      "get_scheduler",
      [](int tid) {
        const SchedParams p = get_scheduler(tid);
        return std::make_tuple(static_cast<int>(p.policy), p.priority, p.nice, p.runtime_ns,
                               p.deadline_ns, p.period_ns, p.reset_on_fork);
      },
      py::arg("tid") = 0,
      "(policy, priority, nice, runtime_ns, deadline_ns, period_ns, reset_on_fork)");
  m.def(
      "set_deadline",
      [](std::uint64_t runtime_ns, std::uint64_t deadline_ns, std::uint64_t period_ns, int tid,
         bool reset_on_fork) {
        set_deadline(runtime_ns, deadline_ns, period_ns, tid, reset_on_fork);
      },
      py::arg("runtime_ns"), py::arg("deadline_ns"), py::arg("period_ns") = 0, py::arg("tid") = 0,
      py::arg("reset_on_fork") = false);

  // --- memory -----------------------------------------------------------
  m.def("page_size", &page_size);
  m.def(
      "lock_memory",
      [](bool on_fault) {
        // Releasing the GIL is safe: mlockall touches no Python object, and
        // MCL_CURRENT without MCL_ONFAULT may fault in the whole process.
        py::gil_scoped_release release;
        lock_memory(on_fault);
      },
      py::arg("on_fault") = true);
  m.def("unlock_memory", &unlock_memory);
  m.def("stack_bytes_available", &stack_bytes_available);
  m.def("max_prefault_stack_bytes", &max_prefault_stack_bytes);
  m.def("prefault_stack", &prefault_stack, py::arg("nbytes"));
  m.def(
      "prefault",
      [](const py::object& buffer) {
        WritableBuffer view(buffer);
        // Safe: the view pins the exporter's memory; faulting in a large
        // buffer can take long and touches no Python object.
        py::gil_scoped_release release;
        prefault(view.data(), view.size());
      },
      py::arg("buffer"));
  m.def("set_timer_slack_ns", &set_timer_slack_ns, py::arg("ns"));
  m.def("get_timer_slack_ns", &get_timer_slack_ns);

  // --- thread setup -----------------------------------------------------
  m.def(
      "apply_thread_setup",
      [](const py::list& prefault_buffers, const py::kwargs& kwargs) {
        ThreadSetup s;
        apply_setup_kwargs(kwargs, s, "apply_thread_setup");
        std::vector<WritableBuffer> views;
        views.reserve(prefault_buffers.size());
        for (const auto& item : prefault_buffers) {
          views.emplace_back(item);
          s.prefault_buffers.push_back({views.back().data(), views.back().size()});
        }
        SetupStatus status;
        {
          // Safe: the steps act on this OS thread and on memory pinned by
          // `views`; mlockall and prefaulting can take long.
          py::gil_scoped_release release;
          status = apply_thread_setup(s);
        }
        std::string syscall = setup_step_syscall(status.failed_step);
        if (status.failed_step == SetupStep::Scheduler && s.policy == SchedPolicy::Deadline) {
          syscall = "sched_setattr";  // SCHED_DEADLINE does not go through sched_setscheduler
        }
        return std::make_tuple(std::string(setup_step_name(status.failed_step)), syscall,
                               status.error);
      },
      py::kw_only(), py::arg("prefault_buffers") = py::list(),
      "apply_thread_setup(*, prefault_buffers=[], **setup): runs the ARCHITECTURE §5 steps on "
      "the calling thread. setup: the thread-setup keywords (csrc/bindings/thread_setup_args.hpp)."
      " Returns (step, syscall, errno); ('', '', 0) on success.");
  m.def("setup_steps", [] {
    std::vector<std::string> out;
    for (int i = static_cast<int>(SetupStep::MemoryPolicy);
         i <= static_cast<int>(SetupStep::TimerSlack); ++i) {
      out.emplace_back(setup_step_name(static_cast<SetupStep>(i)));
    }
    return out;
  });
}

}  // namespace mxrc::bindings
