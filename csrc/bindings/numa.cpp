// mxrc._core.numa: memory policy system calls.
#include "mxrc/numa.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <tuple>

#include "buffer.hpp"
#include "mxrc/memory.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {
std::tuple<int, unsigned, std::vector<int>> to_py(const MemPolicyInfo& info) {
  return {static_cast<int>(info.policy), info.flags, info.nodes};
}
}  // namespace

void register_numa(py::module_& m) {
  m.attr("MPOL_DEFAULT") = static_cast<int>(MemPolicy::Default);
  m.attr("MPOL_PREFERRED") = static_cast<int>(MemPolicy::Preferred);
  m.attr("MPOL_BIND") = static_cast<int>(MemPolicy::Bind);
  m.attr("MPOL_INTERLEAVE") = static_cast<int>(MemPolicy::Interleave);
  m.attr("MPOL_LOCAL") = static_cast<int>(MemPolicy::Local);
  m.attr("MPOL_PREFERRED_MANY") = static_cast<int>(MemPolicy::PreferredMany);
  m.attr("MPOL_WEIGHTED_INTERLEAVE") = static_cast<int>(MemPolicy::WeightedInterleave);
  m.attr("MPOL_F_STATIC_NODES") = 1 << 15;
  m.attr("MPOL_F_RELATIVE_NODES") = 1 << 14;
  m.attr("MPOL_MF_STRICT") = 1 << 0;
  m.attr("MPOL_MF_MOVE") = 1 << 1;
  m.attr("MPOL_MF_MOVE_ALL") = 1 << 2;

  m.def("allowed_nodes", &allowed_memory_nodes);
  m.def(
      "set_mempolicy",
      [](int mode, const std::vector<int>& nodes, unsigned flags) {
        set_memory_policy(static_cast<MemPolicy>(mode), nodes, flags);
      },
      py::arg("mode"), py::arg("nodes"), py::arg("flags") = 0U);
  m.def(
      "get_mempolicy", [] { return to_py(get_memory_policy()); },
      "(mode, mode_flags, nodes) of the calling thread");
  m.def(
      "get_mempolicy_at",
      [](const py::object& buffer) {
        WritableBuffer view(buffer);
        return to_py(get_memory_policy_at(view.data()));
      },
      py::arg("buffer"), "(mode, mode_flags, nodes) governing the buffer's first page");
  m.def(
      "node_of",
      [](const py::object& buffer) {
        WritableBuffer view(buffer);
        return node_of_address(view.data());
      },
      py::arg("buffer"), "NUMA node of the buffer's first page (touched)");
  m.def(
      "mbind",
      [](const py::object& buffer, int mode, const std::vector<int>& nodes, unsigned flags,
         bool whole_pages) {
        WritableBuffer view(buffer);
        const auto page = static_cast<std::uintptr_t>(page_size());
        auto begin = reinterpret_cast<std::uintptr_t>(view.data());
        std::uintptr_t end = begin + view.size();
        if (begin % page != 0 && !whole_pages) {
          throw std::invalid_argument(
              "the buffer does not start on a page boundary (page size " + std::to_string(page) +
              " bytes): use an mmap-allocated buffer, or pass whole_pages=True to apply the "
              "policy to every page the buffer overlaps");
        }
        begin &= ~(page - 1);
        end = (end + page - 1) & ~(page - 1);
        const bool moves = (flags & 6U) != 0U;
        if (moves) {
          // Safe: the view pins the memory; moving pages can take long and
          // touches no Python object.
          py::gil_scoped_release release;
          bind_memory(reinterpret_cast<void*>(begin), static_cast<std::size_t>(end - begin),
                      static_cast<MemPolicy>(mode), nodes, flags);
        } else {
          bind_memory(reinterpret_cast<void*>(begin), static_cast<std::size_t>(end - begin),
                      static_cast<MemPolicy>(mode), nodes, flags);
        }
      },
      py::arg("buffer"), py::arg("mode"), py::arg("nodes"), py::arg("flags") = 0U,
      py::arg("whole_pages") = false);
  m.def(
      "migrate_pages",
      [](int pid, const std::vector<int>& from, const std::vector<int>& to) {
        // Safe: plain ints only; moving a process's pages can take long.
        py::gil_scoped_release release;
        return migrate_pages(pid, from, to);
      },
      py::arg("pid"), py::arg("from_nodes"), py::arg("to_nodes"),
      "Returns the number of pages that could not be moved.");
}

}  // namespace mxrc::bindings
