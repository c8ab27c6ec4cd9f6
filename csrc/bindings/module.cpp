// mxrc._core: the private extension. One submodule per area, each registered
// by register_<area>() in its own file.
#include <pybind11/pybind11.h>

#include "mxrc/error.hpp"
#include "mxrc/segment.hpp"
#include "register.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "mxrc compiled core (private; use the mxrc package)";
  m.attr("__version__") = MXRC_VERSION_STRING;

  // Map C++ errors onto the Python hierarchy. mxrc.errors is imported lazily
  // (at throw time) so that importing _core alone never imports mxrc.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mxrc::SystemError& e) {
      // OSError(errno, "<what> (from <syscall>): <strerror>"); calling OSError
      // with an errno picks the subclass (PermissionError, ProcessLookupError...),
      // which is then raised as that type.
      py::object err = py::reinterpret_steal<py::object>(
          PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.what()));
      if (!err) return;  // building the OSError failed: that error (e.g. MemoryError) is set
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    } catch (const mxrc::SegmentInUse& e) {
      py::object cls = py::module_::import("mxrc.errors").attr("SegmentInUseError");
      py::object err = cls(e.what());
      err.attr("owner_pid") = static_cast<int>(e.owner_pid());
      PyErr_SetObject(cls.ptr(), err.ptr());
    } catch (const mxrc::SegmentError& e) {
      py::object cls = py::module_::import("mxrc.errors").attr("SegmentError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const mxrc::UnsupportedError& e) {
      py::object cls = py::module_::import("mxrc.errors").attr("UnsupportedError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  auto sched = m.def_submodule("sched", "affinity, scheduling, memory locking");
  mxrc::bindings::register_sched(sched);
  auto numa = m.def_submodule("numa", "NUMA memory policy system calls");
  mxrc::bindings::register_numa(numa);
  auto clock = m.def_submodule("clock", "clock synchronisation state");
  mxrc::bindings::register_clock(clock);
  auto bus = m.def_submodule("bus", "shared-memory segment and stats blocks");
  mxrc::bindings::register_bus(bus);
  auto cycle = m.def_submodule("cycle", "the cycle loop (executive) and its body tiers");
  mxrc::bindings::register_cycle(cycle);
  auto demo = m.def_submodule("demo", "the demo control task of `mxrc run` (native body)");
  mxrc::bindings::register_demo(demo);
  auto datastore = m.def_submodule("datastore", "the data store: typed slots with versions");
  mxrc::bindings::register_datastore(datastore);
  auto bench = m.def_submodule("_bench", "C++ loops for bench/ (not an API)");
  mxrc::bindings::register_bench(bench);
}
