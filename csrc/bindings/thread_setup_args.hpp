// The thread-setup keyword arguments shared by sched.apply_thread_setup and
// cycle.Executive, converted in one place into an mxrc::ThreadSetup.
//
// Keywords (all optional; a missing one keeps ThreadSetup's default, None
// leaves an optional setting as is): memory_policy (int | None), memory_nodes
// (list[int]), lock_memory (bool), lock_on_fault (bool), prefault_stack_bytes
// (int), cpus (list[int]), policy (int | None), priority (int),
// deadline_runtime_ns, deadline_deadline_ns, deadline_period_ns (int),
// timer_slack_ns (int | None). Values are the kernel's numbers; mxrc.rt._setup
// validates them and maps names first.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mxrc/setup.hpp"

namespace mxrc::bindings {

namespace detail {

// value as T, or a TypeError naming the function, the keyword and what it got.
template <typename T>
T setup_arg(const pybind11::handle& value, const char* where, const std::string& key,
            const char* expected) {
  try {
    return value.cast<T>();
  } catch (const pybind11::cast_error&) {
    throw pybind11::type_error(
        std::string(where) + "(): " + key + " must be " + expected + ", got " +
        std::string(pybind11::str(pybind11::type::handle_of(value).attr("__qualname__"))));
  }
}

}  // namespace detail

// Applies the thread-setup keywords in kwargs to setup; any other keyword is a
// TypeError. `where` names the Python function in messages.
inline void apply_setup_kwargs(const pybind11::kwargs& kwargs, ThreadSetup& setup,
                               const char* where) {
  using detail::setup_arg;
  for (const auto& [k, v] : kwargs) {
    const std::string key = pybind11::str(k);
    if (key == "memory_policy") {
      if (!v.is_none()) {
        setup.memory_policy = static_cast<MemPolicy>(setup_arg<int>(v, where, key, "an int"));
      }
    } else if (key == "memory_nodes") {
      setup.memory_nodes = setup_arg<std::vector<int>>(v, where, key, "a list of ints");
    } else if (key == "lock_memory") {
      setup.lock_memory = setup_arg<bool>(v, where, key, "a bool");
    } else if (key == "lock_on_fault") {
      setup.lock_on_fault = setup_arg<bool>(v, where, key, "a bool");
    } else if (key == "prefault_stack_bytes") {
      setup.prefault_stack_bytes = setup_arg<std::size_t>(v, where, key, "an int >= 0");
    } else if (key == "cpus") {
      setup.cpus = setup_arg<std::vector<int>>(v, where, key, "a list of ints");
    } else if (key == "policy") {
      if (!v.is_none()) {
        setup.policy = static_cast<SchedPolicy>(setup_arg<int>(v, where, key, "an int"));
      }
    } else if (key == "priority") {
      setup.priority = setup_arg<int>(v, where, key, "an int");
    } else if (key == "deadline_runtime_ns") {
      setup.deadline_runtime_ns = setup_arg<std::uint64_t>(v, where, key, "an int >= 0");
    } else if (key == "deadline_deadline_ns") {
      setup.deadline_deadline_ns = setup_arg<std::uint64_t>(v, where, key, "an int >= 0");
    } else if (key == "deadline_period_ns") {
      setup.deadline_period_ns = setup_arg<std::uint64_t>(v, where, key, "an int >= 0");
    } else if (key == "timer_slack_ns") {
      if (!v.is_none()) {
        setup.timer_slack_ns = setup_arg<unsigned long>(v, where, key, "an int >= 0");
      }
    } else {
      throw pybind11::type_error(std::string(where) + "() got an unexpected keyword argument '" +
                                 key + "'");
    }
  }
}

}  // namespace mxrc::bindings
